"""AI segmentation of CT/MR volumes: run a catalogue model, write the results."""

from MedAIExtension.segmentation.outputs import OUTPUT_FORMATS, write_outputs
from MedAIExtension.segmentation.pipeline import (
    SegmentationOutcome,
    SegmentationResult,
    SegmentRequest,
    resolve_model,
    segment_image,
    segment_to_folder,
)

__all__ = [
    "OUTPUT_FORMATS",
    "SegmentRequest",
    "SegmentationOutcome",
    "SegmentationResult",
    "resolve_model",
    "segment_image",
    "segment_to_folder",
    "write_outputs",
]

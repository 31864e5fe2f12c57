"""AI segmentation of CT/MR volumes: run a catalogue model, write the results."""

from MedAIExtension.segmentation.outputs import OUTPUT_FORMATS, write_outputs
from MedAIExtension.segmentation.pipeline import SegmentationResult, resolve_model, segment_image

__all__ = ["OUTPUT_FORMATS", "SegmentationResult", "resolve_model", "segment_image", "write_outputs"]

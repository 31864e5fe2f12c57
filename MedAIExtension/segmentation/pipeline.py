"""Segmentation of one image with a catalogue model: the logic behind ``medai segment`` and the Slicer module."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from MedAIExtension.atomic import check_output_directory
from MedAIExtension.dicom.source import frame_of_reference_allows, require_frame_of_reference
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models.backends import Backend, load_backend
from MedAIExtension.models.catalog import Catalog, ModelEntry, load_catalog
from MedAIExtension.models.devices import Device
from MedAIExtension.models.inference import InferenceOptions, run_inference
from MedAIExtension.models.variants import runtime_entry
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.segmentation.outputs import OUTPUT_FORMATS, parse_formats, write_outputs
from MedAIExtension.segmentation.plausibility import check_field_of_view, plausibility_warnings

__all__ = [
    "SegmentRequest",
    "SegmentationOutcome",
    "SegmentationResult",
    "dicom_seg_formats",
    "resolve_model",
    "segment_image",
    "segment_to_folder",
]


@dataclass(frozen=True)
class SegmentationResult:
    """A label map on the input image's grid with the model and labels that produced it."""

    labelmap: Image
    model: ModelEntry
    provider: str
    seconds: float
    windows: int

    @property
    def labels(self) -> tuple[SegmentLabel, ...]:
        """The model's output labels."""
        return self.model.labels


def resolve_model(model: str | ModelEntry, catalog: Catalog | None = None) -> ModelEntry:
    """Accept a model name (looked up in ``catalog`` or the default catalogue) or an entry."""
    if isinstance(model, ModelEntry):
        return model
    return (catalog or load_catalog()).get(model)


def _check_modality(image: Image, entry: ModelEntry) -> None:
    wanted = entry.input.modality
    if wanted in ("any", "") or not image.modality or image.modality == wanted:
        return
    raise InputError(
        f"Model {entry.name} expects {wanted} images but the input is {image.modality}. "
        f"Pick a model made for {image.modality} ('medai models' lists them)."
    )


def segment_image(
    image: Image,
    model: str | ModelEntry,
    device: Device | str = Device.AUTO,
    catalog: Catalog | None = None,
    options: InferenceOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    token: CancelToken | None = None,
    backend: Backend | None = None,
) -> SegmentationResult:
    """Segment ``image`` with ``model`` on ``device``.

    Args:
        image: the input volume (any orientation).
        model: a catalogue name or an entry.
        device: ``auto`` (CUDA when it really works, else CPU), ``cpu`` or ``cuda``.
        catalog: where to look ``model`` up (default: shipped catalogue + user models).
        options: sliding-window overrides (ROI, overlap, batch size).
        progress: receives (fraction, message).
        token: cancel it from another thread to stop at the next window.
        backend: ``model`` already loaded on ``device`` (:func:`~MedAIExtension.models.backends.load_backend` of
            its :func:`~MedAIExtension.models.variants.runtime_entry`): a worker that segments many studies loads
            it once; by default it is loaded (and its files verified) here.

    Raises:
        CatalogError, ChecksumError, ModelError, InputError, CancelledError.
    """
    entry = resolve_model(model, catalog)
    if entry.task != "segmentation":
        raise InputError(
            f"Model {entry.name} is a {entry.task} model, not a segmentation model. Pick a segmentation model "
            "('medai models' lists each model's task); explain a classifier with 'medai explain'."
        )
    _check_modality(image, entry)
    patch = entry.input.patch_size if entry.input.axis_order == "ijk" else entry.input.patch_size[::-1]
    check_field_of_view(image, patch, entry.input.spacing, entry.name)
    reporter = Progress(progress, token)
    if backend is None:
        reporter(0.0, f"loading model {entry.name}")
        runs_as = runtime_entry(entry, device, catalog)
        if runs_as is not entry:
            entry.verify_files()  # the requested model's files must be intact even when its CPU variant runs
        backend = load_backend(runs_as, device)
    reporter(0.02, f"model loaded ({backend.provider})")
    result = run_inference(image, entry, backend, options, reporter.stage(0.02, 1.0))
    return SegmentationResult(result.labelmap, entry, result.provider, result.seconds, result.windows)


@dataclass(frozen=True)
class SegmentRequest:
    """What :func:`segment_to_folder` segments, with which model and where its results go.

    Args:
        input: a DICOM folder, a NIfTI/NRRD file, or an image already read.
        model: a catalogue name or an entry.
        output: the output folder.
        formats: output formats (:data:`~MedAIExtension.segmentation.outputs.OUTPUT_FORMATS`).
        strict_formats: a DICOM SEG the input cannot have is an error (``True``), or is left out with a warning.
        device: ``auto``, ``cpu`` or ``cuda``.
        series: the SeriesInstanceUID when the input folder holds several series.
        catalog: where to look ``model`` up (default: shipped catalogue + user models).
        options: sliding-window overrides.
        describe_input: also record the input, its lossy compression and the plausibility warnings in
            summary.json (as ``medai segment`` does).
        backend: ``model`` already loaded (see :func:`segment_image`); loaded per call by default.
    """

    input: str | os.PathLike[str] | Image
    model: str | ModelEntry
    output: Path
    formats: tuple[str, ...] = OUTPUT_FORMATS
    strict_formats: bool = True
    device: Device | str = Device.AUTO
    series: str | None = None
    catalog: Catalog | None = None
    options: InferenceOptions | None = None
    describe_input: bool = False
    backend: Backend | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "formats", tuple(parse_formats(self.formats)))


@dataclass(frozen=True)
class SegmentationOutcome:
    """What :func:`segment_to_folder` did: the result, the image it was computed on, the files written."""

    result: SegmentationResult
    image: Image
    files: dict[str, Path]
    warnings: tuple[str, ...]  # the plausibility warnings of the result


def dicom_seg_formats(
    image: Image, formats: Sequence[str], strict: bool, warn: Callable[[str], None] | None
) -> list[str]:
    """Before inference: can a DICOM SEG reference ``image``? ``formats`` without it (with a warning), or refuse.

    Raises:
        InputError: ``strict`` and the DICOM SEG cannot be written (non-DICOM input, no FrameOfReferenceUID).
    """
    formats = list(formats)
    if "dicom-seg" not in formats:
        return formats
    if not image.source_files:
        if strict:
            raise InputError(
                "DICOM SEG output needs a DICOM series as input. Use --format seg.nrrd,nii.gz for NIfTI/NRRD input."
            )
        formats.remove("dicom-seg")
    elif strict:
        require_frame_of_reference(image, "DICOM SEG")
    elif not frame_of_reference_allows([("input", image)], "DICOM SEG objects", warn):
        formats.remove("dicom-seg")
    return formats


def segment_to_folder(
    request: SegmentRequest,
    progress: Callable[[float, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    token: CancelToken | None = None,
) -> SegmentationOutcome:
    """Load the input, segment it and write every requested format into ``request.output``.

    Every check that can fail is made before inference (the model, the output folder, whether a DICOM SEG can
    reference the input); nothing is written when any step fails (files are staged). ``progress`` is first
    called when inference starts.
    """
    entry = resolve_model(request.model, request.catalog)
    check_output_directory(request.output)
    image = request.input
    if not isinstance(image, Image):
        image = load_image(image, series_uid=request.series, warn=warn)
    formats = dicom_seg_formats(image, request.formats, request.strict_formats, warn)
    reporter = Progress(progress, token)
    result = segment_image(
        image,
        entry,
        device=request.device,
        catalog=request.catalog,
        options=request.options,
        progress=reporter.stage(0.0, 0.9),
        token=token,
        backend=request.backend,
    )
    warnings = plausibility_warnings(result.labelmap, result.labels)
    summary: dict[str, object] = {"provider": result.provider, "seconds": round(result.seconds, 3)}
    if request.describe_input:
        summary.update(
            input=str(request.input),
            input_lossy_compressed=image.metadata.get("LossyCompression") or False,
            plausibility_warnings=warnings,
        )
    files = write_outputs(
        result.labelmap,
        result.labels,
        request.output,
        formats,
        source=image,
        algorithm_name=entry.name,
        algorithm_version=entry.version,
        extra_summary=summary,
        progress=reporter.stage(0.9, 1.0),
    )
    return SegmentationOutcome(result, image, files, tuple(warnings))

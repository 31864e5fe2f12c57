"""Segmentation of one image with a catalogue model: the logic behind ``medai segment`` and the Slicer module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import Catalog, ModelEntry, load_catalog
from MedAIExtension.models.devices import Device, cuda_available, parse_device
from MedAIExtension.models.inference import InferenceOptions, run_inference
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.segmentation.plausibility import check_field_of_view

__all__ = ["SegmentationResult", "resolve_model", "runtime_entry", "segment_image"]


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


def runtime_entry(entry: ModelEntry, device: Device | str, catalog: Catalog | None = None) -> ModelEntry:
    """The entry whose files run ``entry`` on ``device``.

    That is the entry's ``cpu_variant`` (the same weights in a form that is faster on the CPU, e.g. the torch
    build of an ONNX model) when the run is on the CPU and the variant is in ``catalog`` (default: the shipped
    catalogue plus user models) with its files present; otherwise ``entry`` itself. (A variant whose files are
    present but altered is not skipped: loading it fails on its sha256.)
    """
    if not entry.cpu_variant:
        return entry
    chosen = parse_device(device)
    if chosen == Device.CUDA:
        return entry
    if chosen == Device.AUTO and cuda_available("onnx" if entry.backend == "onnx" else "torch"):
        return entry
    catalog = catalog or load_catalog()
    if entry.cpu_variant not in catalog:
        return entry
    variant = catalog.get(entry.cpu_variant)
    return variant if all(item.path.is_file() for item in variant.files) else entry


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
    reporter(0.0, f"loading model {entry.name}")
    runs_as = runtime_entry(entry, device, catalog)
    if runs_as is not entry:
        entry.verify_files()  # the requested model's files must be intact even when its CPU variant runs
    backend = load_backend(runs_as, device)
    reporter(0.02, f"model loaded ({backend.provider})")
    result = run_inference(image, entry, backend, options, reporter.stage(0.02, 1.0))
    return SegmentationResult(result.labelmap, entry, result.provider, result.seconds, result.windows)

"""Which catalogue entry actually runs a model on a device (its CPU variant, when that is faster there)."""

from __future__ import annotations

from MedAIExtension.models.catalog import Catalog, ModelEntry, load_catalog
from MedAIExtension.models.devices import Device, cuda_available, parse_device

__all__ = ["runtime_entry"]


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

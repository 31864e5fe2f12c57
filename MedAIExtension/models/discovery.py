"""Finding user-supplied models (ONNX files and MONAI bundle folders) and describing them as catalogue entries."""

from __future__ import annotations

import colorsys
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from MedAIExtension.errors import CatalogError
from MedAIExtension.models.entry import ModelEntry, sha256_of, validate_catalog_data

__all__ = ["bundle_parser", "describe_monai_bundle", "describe_onnx_model", "discover_user_models", "is_monai_bundle"]

ONNX_METADATA_KEY = "medai.entry"


def _generic_labels(names: Mapping[int, str]) -> list[dict[str, Any]]:
    labels = []
    for index, (value, name) in enumerate(sorted(names.items())):
        r, g, b = colorsys.hsv_to_rgb((index * 0.61803) % 1.0, 0.65, 0.95)
        labels.append({"value": int(value), "name": name, "color": [round(r, 3), round(g, 3), round(b, 3)]})
    return labels


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug or "model"


def is_monai_bundle(path: Path) -> bool:
    """Whether ``path`` is a MONAI bundle folder (configs/metadata.json + an inference config)."""
    configs = path / "configs"
    return (configs / "metadata.json").is_file() and any(
        (configs / f"inference.{ext}").is_file() for ext in ("json", "yaml", "yml")
    )


def describe_onnx_model(path: Path) -> dict[str, Any]:
    """A catalogue entry (JSON form) for a user ONNX file.

    Uses, in order: a sidecar ``<stem>.json``; the ONNX metadata property ``medai.entry``; generic defaults
    derived from the graph (output channels → labels "Label 1..N", native spacing, z-score normalisation).
    """
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            entry = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{sidecar} is not valid JSON (line {exc.lineno}: {exc.msg}); fix it.") from None
        validate_catalog_data(entry, f"The model description {sidecar}", entry_only=True)
        return entry
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY in props:
        entry = json.loads(props[ONNX_METADATA_KEY])
        entry["files"] = [{"path": path.name, "sha256": sha256_of(path), "role": "model"}]
        validate_catalog_data(entry, f"The metadata of {path.name}", entry_only=True)
        return entry
    outputs = model.graph.output
    if len(outputs) != 1 or len(model.graph.input) != 1:
        raise CatalogError(f"{path.name}: MedAI runs ONNX models with one input and one output.")
    dims = outputs[0].type.tensor_type.shape.dim
    if len(dims) != 5 or not dims[1].dim_value:
        raise CatalogError(
            f"{path.name}: expected a 3D segmentation model with output (N, C, D, H, W) and a fixed C; "
            f"add a sidecar {path.stem}.json describing it."
        )
    channels = dims[1].dim_value
    in_dims = model.graph.input[0].type.tensor_type.shape.dim
    patch = [d.dim_value if d.dim_value >= 8 else 96 for d in list(in_dims)[2:5]] or [96, 96, 96]
    return {
        "name": _slug(path.stem),
        "title": f"{path.stem} (user ONNX model, no description: generic defaults)",
        "version": "unknown",
        "task": "segmentation",
        "backend": "onnx",
        "description": f"Found in {path.parent}. Add {path.stem}.json beside it to set spacing, labels and codes.",
        "files": [{"path": path.name, "sha256": sha256_of(path), "role": "model"}],
        "input": {
            "modality": "any",
            "spacing": None,
            "orientation": "native",
            "normalization": {"type": "zscore"},
            "patch_size": patch,
        },
        "labels": _generic_labels({c: f"Label {c}" for c in range(1, channels)}),
    }


def _find_transform(transforms: Iterable[Any], name: str) -> Mapping[str, Any] | None:
    for item in transforms:
        if isinstance(item, Mapping) and str(item.get("_target_", "")).split(".")[-1] == name:
            return item
    return None


def bundle_parser(path: Path) -> Any:
    """A ``monai.bundle.ConfigParser`` holding the bundle's metadata and inference config (not yet parsed)."""
    from monai.bundle import ConfigParser

    configs = path / "configs"
    parser = ConfigParser()
    parser.read_meta(str(configs / "metadata.json"))
    config_file = next(
        configs / f"inference.{ext}" for ext in ("json", "yaml", "yml") if (configs / f"inference.{ext}").is_file()
    )
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(path)
    return parser


def describe_monai_bundle(path: Path) -> dict[str, Any]:
    """A catalogue entry (JSON form) for a MONAI bundle folder, read with ``monai.bundle.ConfigParser``.

    Spacing, orientation and intensity scaling come from the preprocessing transforms (Spacingd, Orientationd,
    ScaleIntensityRanged / NormalizeIntensityd), ROI/overlap/batch from the inferer, labels from the metadata's
    ``channel_def``. Weights: ``models/model.ts`` (TorchScript) or ``models/model.pt`` (state dict).
    """
    parser = bundle_parser(path)
    meta = parser.get("_meta_", {})
    config = parser.get()

    preprocessing = config.get("preprocessing", {})
    transforms = preprocessing.get("transforms", []) if isinstance(preprocessing, Mapping) else []
    spacing_t = _find_transform(transforms, "Spacingd")
    orient_t = _find_transform(transforms, "Orientationd")
    scale_t = _find_transform(transforms, "ScaleIntensityRanged")
    zscore_t = _find_transform(transforms, "NormalizeIntensityd")
    if scale_t:
        normalization = {
            "type": "clip_scale",
            **{k: float(scale_t[k]) for k in ("a_min", "a_max", "b_min", "b_max") if k in scale_t},
            "clip": bool(scale_t.get("clip", False)),
        }
    elif zscore_t:
        normalization = {"type": "zscore", "nonzero": bool(zscore_t.get("nonzero", False))}
    else:
        normalization = {"type": "none"}
    inferer = config.get("inferer", {}) if isinstance(config.get("inferer"), Mapping) else {}
    data_format = meta.get("network_data_format", {})
    image_in = data_format.get("inputs", {}).get("image", {})
    roi = inferer.get("roi_size") or image_in.get("spatial_shape") or [96, 96, 96]
    outputs = data_format.get("outputs", {})
    pred = outputs.get("pred") or (next(iter(outputs.values())) if outputs else {})
    channel_def = {int(k): str(v) for k, v in pred.get("channel_def", {}).items() if int(k) != 0}
    if not channel_def:
        channel_def = {c: f"Label {c}" for c in range(1, int(pred.get("num_channels", 2)))}

    models_dir = path / "models"
    if (models_dir / "model.ts").is_file():
        weights = models_dir / "model.ts"
    elif (models_dir / "model.pt").is_file():
        weights = models_dir / "model.pt"
    else:
        raise CatalogError(f"MONAI bundle {path.name} has neither models/model.ts nor models/model.pt.")
    name = _slug(str(meta.get("name") or path.name))
    modality = str(image_in.get("modality", "any")).upper()
    entry: dict[str, Any] = {
        "name": name,
        "title": f"{meta.get('name') or path.name} (MONAI bundle)",
        "version": str(meta.get("version", "unknown")),
        "task": "segmentation",
        "backend": "monai_bundle",
        "description": str(meta.get("description", "")),
        "bundle_dir": ".",
        "files": [{"path": str(weights.relative_to(path)), "sha256": sha256_of(weights), "role": "weights"}],
        "input": {
            "modality": modality if modality in ("CT", "MR") else "any",
            "spacing": [float(v) for v in spacing_t["pixdim"]] if spacing_t and "pixdim" in spacing_t else None,
            "orientation": str(orient_t.get("axcodes", "native")) if orient_t else "native",
            "axis_order": "ijk",
            "normalization": normalization,
            "patch_size": [int(v) for v in roi],
            "channels": int(image_in.get("num_channels", 1)),
        },
        "inference": {
            "overlap": float(inferer.get("overlap", 0.25)),
            "batch_size": int(inferer.get("sw_batch_size", 1)),
        },
        "labels": _generic_labels(channel_def),
    }
    return entry


def discover_user_models(dirs: Iterable[Path]) -> Iterator[Any]:
    """Yield a :class:`ModelEntry` per usable user model, or a message (str) per unusable one."""
    for folder in dirs:
        candidates = sorted(folder.iterdir())
        if is_monai_bundle(folder):
            candidates = [folder]
        for path in candidates:
            try:
                if path.is_dir() and is_monai_bundle(path):
                    data = describe_monai_bundle(path)
                    validate_catalog_data(data, f"The MONAI bundle {path}", entry_only=True)
                    yield ModelEntry.from_dict(data, path, source=f"MONAI bundle {path}")
                elif path.suffix.lower() == ".onnx" and path.is_file():
                    data = describe_onnx_model(path)
                    yield ModelEntry.from_dict(data, path.parent, source=f"user ONNX {path}")
            except CatalogError as exc:
                yield str(exc)
            except Exception as exc:  # noqa: BLE001 - a broken user file must not hide the other models
                yield f"Could not read user model {path}: {exc}"

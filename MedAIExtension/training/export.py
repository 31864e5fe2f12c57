"""Exporting a trained network: ONNX (default exporter, onnxscript), a MONAI bundle, and the catalogue entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from MedAIExtension.atomic import atomic_path
from MedAIExtension.models.catalog import sha256_of

if TYPE_CHECKING:
    import torch

__all__ = ["export_onnx", "update_catalog", "write_monai_bundle"]


def export_onnx(
    network: torch.nn.Module,
    path: Path,
    patch_size: tuple[int, int, int],
    entry: dict[str, Any],
    size_multiple: int = 8,
    max_batch: int = 64,
    max_size: int = 1024,
) -> Path:
    """Export ``network`` (eval mode) to ONNX and embed the catalogue entry.

    Batch and spatial sizes stay dynamic: any batch up to ``max_batch``, spatial sizes that are multiples of
    ``size_multiple`` (how often the network halves the grid) up to ``max_size``. Whatever the network calls its
    input, the ONNX input is ``image`` and the output ``logits``.
    """
    import onnx
    import torch

    network = network.eval().cpu()
    example = torch.zeros((1, 1, *patch_size), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    dims = [torch.export.Dim(f"s{i}", min=1, max=max_size // size_multiple) for i in range(3)]
    spatial = {0: batch, 2: size_multiple * dims[0], 3: size_multiple * dims[1], 4: size_multiple * dims[2]}
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=(spatial,),
            dynamo=True,
            external_data=False,
        )
        if program is None:  # torch returns None only for the legacy (dynamo=False) exporter
            raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
        program.optimize()
        program.save(str(tmp), external_data=False)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        meta = {k: v for k, v in entry.items() if k != "files"}
        prop = model.metadata_props.add()
        prop.key = "medai.entry"
        prop.value = json.dumps(meta)
        onnx.save(model, str(tmp))
    return path


def write_monai_bundle(
    network: torch.nn.Module, bundle_dir: Path, network_args: dict[str, Any], entry: dict[str, Any]
) -> Path:
    """Write a MONAI bundle (configs/metadata.json, configs/inference.json, models/model.pt weights-only)."""
    import torch

    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "models").mkdir(parents=True, exist_ok=True)
    spec = entry["input"]
    norm = spec["normalization"]
    labels = {"0": "background", **{str(label["value"]): label["name"] for label in entry["labels"]}}
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "name": f"{entry['name']}-monai-bundle",
        "version": entry["version"],
        "monai_version": __import__("monai").__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": __import__("numpy").__version__,
        "description": entry.get("description", ""),
        "task": "Lung and lung-nodule segmentation on chest CT (trained on MedAI phantoms only)",
        "authors": "MedAI",
        "copyright": "MedAI",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": spec["modality"],
                    "num_channels": 1,
                    "spatial_shape": spec["patch_size"],
                    "dtype": "float32",
                    "value_range": [norm["b_min"], norm["b_max"]],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(labels),
                    "spatial_shape": spec["patch_size"],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": labels,
                }
            },
        },
    }
    # Our arrays are [k, j, i] in LPS; MONAI (nibabel order) sees the same tensor as axes S, P, L.
    inference = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "monai.networks.nets.UNet", **network_args},
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "SPL"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": spec["spacing"], "mode": "bilinear"},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": norm["a_min"],
                    "a_max": norm["a_max"],
                    "b_min": norm["b_min"],
                    "b_max": norm["b_max"],
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": spec["patch_size"],
            "sw_batch_size": entry["inference"]["batch_size"],
            "overlap": entry["inference"]["overlap"],
        },
    }
    (bundle_dir / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    (bundle_dir / "configs" / "inference.json").write_text(json.dumps(inference, indent=2), encoding="utf-8")
    with atomic_path(bundle_dir / "models" / "model.pt") as tmp:
        torch.save(network.state_dict(), tmp)
    return bundle_dir


def update_catalog(catalog_path: Path, entry: dict[str, Any], model_dir: Path) -> None:
    """Insert or replace ``entry`` in the catalogue, with fresh sha256 for its files."""
    data: dict[str, Any] = (
        json.loads(catalog_path.read_text(encoding="utf-8")) if catalog_path.is_file() else {"version": 1, "models": []}
    )
    data.setdefault("$schema", "./catalog.schema.json")
    entry = dict(entry)
    entry["files"] = [{**f, "sha256": sha256_of(model_dir / f["path"])} for f in entry["files"]]
    names = [m["name"] for m in data["models"]]
    if entry["name"] in names:  # replaced where it was, so the catalogue's order stays the same
        data["models"][names.index(entry["name"])] = entry
    else:
        data["models"].append(entry)
    with atomic_path(catalog_path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

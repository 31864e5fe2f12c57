"""Model catalogue: schema validation, sha256 checks, user ONNX models and MONAI bundles found without code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.errors import CatalogError, ChecksumError
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import DEFAULT_CATALOG, load_catalog, sha256_of
from Testing.model_helpers import tiny_onnx as _tiny_onnx


def test_shipped_catalogue_is_valid_and_its_files_match_their_sha256() -> None:
    catalog = load_catalog(include_user_models=False)
    assert len(catalog) >= 1
    for entry in catalog.entries():
        entry.verify_files()
        assert entry.labels and all(label.type is not None for label in entry.labels)
        assert all(label.type.scheme == "SCT" for label in entry.labels)


def test_unknown_model_name_lists_the_known_ones() -> None:
    catalog = load_catalog(include_user_models=False)
    with pytest.raises(CatalogError, match=r"Unknown model 'nope'.*Known models: .*chest-ct-lung-nodule"):
        catalog.get("nope")


def _copy_catalog(tmp_path: Path) -> Path:
    target = tmp_path / "Models"
    shutil.copytree(DEFAULT_CATALOG.parent, target, ignore=shutil.ignore_patterns("*-bundle"))
    return target / "catalog.json"


def test_catalogue_that_fails_its_schema_names_the_spot(tmp_path: Path) -> None:
    path = _copy_catalog(tmp_path)
    data = json.loads(path.read_text())
    del data["models"][0]["labels"][0]["color"]
    path.write_text(json.dumps(data))
    with pytest.raises(CatalogError, match=r"models/0/labels/0: 'color' is a required property"):
        load_catalog(path, include_user_models=False)


def test_catalogue_that_is_not_json(tmp_path: Path) -> None:
    path = _copy_catalog(tmp_path)
    path.write_text("{ not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(path, include_user_models=False)


def test_model_file_whose_sha256_differs_is_refused_before_loading(tmp_path: Path) -> None:
    path = _copy_catalog(tmp_path)
    catalog = load_catalog(path, include_user_models=False)
    entry = catalog.entries()[0]
    with open(entry.model_file, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ChecksumError, match="corrupt or was replaced"):
        load_backend(entry, "cpu")


def test_user_onnx_without_description_is_listed_with_generic_labels(tmp_path: Path) -> None:
    _tiny_onnx(tmp_path / "my-liver.onnx", out_channels=4)
    catalog = load_catalog(models_dirs=[tmp_path])
    entry = catalog.get("my-liver")
    assert [label.name for label in entry.labels] == ["Label 1", "Label 2", "Label 3"]
    assert entry.files[0].sha256 == sha256_of(tmp_path / "my-liver.onnx")
    backend = load_backend(entry, "cpu")
    out = backend.predict(np.ones((1, 1, 8, 8, 8), dtype=np.float32))
    assert out.shape == (1, 4, 8, 8, 8)
    assert backend.provider == "onnxruntime:CPUExecutionProvider"


def test_user_onnx_with_sidecar_description(tmp_path: Path) -> None:
    _tiny_onnx(tmp_path / "spleen.onnx", out_channels=2)
    sidecar = {
        "name": "spleen-demo",
        "title": "Spleen",
        "version": "2.0",
        "task": "segmentation",
        "backend": "onnx",
        "files": [{"path": "spleen.onnx", "sha256": sha256_of(tmp_path / "spleen.onnx")}],
        "input": {
            "modality": "CT",
            "spacing": [2.0, 2.0, 2.0],
            "orientation": "LPS",
            "normalization": {"type": "clip_scale", "a_min": -100, "a_max": 300, "b_min": 0, "b_max": 1},
            "patch_size": [32, 32, 32],
        },
        "labels": [
            {
                "value": 1,
                "name": "Spleen",
                "color": [0.6, 0.2, 0.2],
                "type": {"value": "78961009", "scheme": "SCT", "meaning": "Spleen"},
            }
        ],
    }
    (tmp_path / "spleen.json").write_text(json.dumps(sidecar))
    entry = load_catalog(models_dirs=[tmp_path]).get("spleen-demo")
    assert entry.input.spacing == (2.0, 2.0, 2.0)
    assert entry.labels[0].type.meaning == "Spleen"


def test_broken_user_model_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"garbage")
    (tmp_path / "bad.json").write_text("{}")
    _tiny_onnx(tmp_path / "bad.onnx")
    catalog = load_catalog(models_dirs=[tmp_path])
    assert "chest-ct-lung-nodule" in catalog
    assert len(catalog.problems) == 2
    assert any("does not match the catalogue schema" in p for p in catalog.problems)


def _write_bundle(bundle: Path) -> None:
    import torch
    from monai.networks.nets import UNet

    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    args = {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
    }
    torch.manual_seed(0)
    torch.save(UNet(**args).state_dict(), bundle / "models" / "model.pt")
    (bundle / "configs" / "metadata.json").write_text(
        json.dumps(
            {
                "name": "Toy Bundle",
                "version": "0.3.1",
                "network_data_format": {
                    "inputs": {"image": {"modality": "CT", "num_channels": 1, "spatial_shape": [32, 32, 32]}},
                    "outputs": {
                        "pred": {"num_channels": 3, "channel_def": {"0": "background", "1": "liver", "2": "tumour"}}
                    },
                },
            }
        )
    )
    (bundle / "configs" / "inference.json").write_text(
        json.dumps(
            {
                "network_def": {"_target_": "monai.networks.nets.UNet", **args},
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": [
                        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0]},
                        {
                            "_target_": "ScaleIntensityRanged",
                            "keys": "image",
                            "a_min": -57,
                            "a_max": 164,
                            "b_min": 0,
                            "b_max": 1,
                            "clip": True,
                        },
                    ],
                },
                "inferer": {
                    "_target_": "SlidingWindowInferer",
                    "roi_size": [32, 32, 32],
                    "sw_batch_size": 3,
                    "overlap": 0.5,
                },
            }
        )
    )


def test_monai_bundle_folder_is_parsed_and_runs(tmp_path: Path) -> None:
    _write_bundle(tmp_path / "toy_bundle")
    entry = load_catalog(models_dirs=[tmp_path]).get("toy-bundle")
    assert entry.backend == "monai_bundle"
    assert entry.version == "0.3.1"
    assert entry.input.spacing == (1.5, 1.5, 2.0)
    assert entry.input.orientation == "RAS" and entry.input.axis_order == "ijk"
    assert entry.input.normalization["a_min"] == -57
    assert entry.inference.overlap == 0.5 and entry.inference.batch_size == 3
    assert [label.name for label in entry.labels] == ["liver", "tumour"]
    backend = load_backend(entry, "cpu")
    assert backend.provider == "torch:cpu"
    assert backend.predict(np.zeros((1, 1, 16, 16, 16), dtype=np.float32)).shape == (1, 3, 16, 16, 16)


def test_bundle_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    import torch

    from MedAIExtension.errors import ModelError

    _write_bundle(tmp_path / "evil")
    torch.save({"model": object()}, tmp_path / "evil" / "models" / "model.pt")
    entry = load_catalog(models_dirs=[tmp_path]).get("toy-bundle")
    with pytest.raises(ModelError, match="not a weights-only checkpoint"):
        load_backend(entry, "cpu")


def test_cpu_variant_runs_the_same_weights_in_torch_on_the_cpu(tmp_path: Path) -> None:
    from MedAIExtension.models.devices import cuda_available
    from MedAIExtension.models.variants import runtime_entry

    catalog = load_catalog(include_user_models=False)
    onnx = catalog.get("chest-ct-lung-nodule")
    torch_build = catalog.get("chest-ct-lung-nodule-torch")
    assert onnx.cpu_variant == torch_build.name and torch_build.cpu_variant is None
    assert runtime_entry(onnx, "cpu", catalog) is torch_build
    assert runtime_entry(onnx, "cuda", catalog) is onnx  # on a GPU the ONNX model runs as itself
    assert runtime_entry(onnx, "auto", catalog) is (onnx if cuda_available("onnx") else torch_build)
    assert runtime_entry(torch_build, "cpu", catalog) is torch_build
    # a copy whose variant's files are absent (the bundle folder was not copied) runs the entry itself
    copied = load_catalog(_copy_catalog(tmp_path / "without-bundle"), include_user_models=False)
    assert runtime_entry(copied.get(onnx.name), "cpu", copied).name == onnx.name
    # and so does a catalogue without the variant
    path = _copy_catalog(tmp_path)
    data = json.loads(path.read_text())
    data["models"] = [m for m in data["models"] if m["name"] != torch_build.name]
    path.write_text(json.dumps(data))
    alone = load_catalog(path, include_user_models=False)
    assert runtime_entry(alone.get(onnx.name), "cpu", alone).name == onnx.name


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["labels"][1].update(name="Vessel"),
        lambda m: m["input"].update(spacing=[1.0, 1.0, 1.0]),
        lambda m: m.update(version="9.9.9"),
    ],
    ids=["labels", "input", "version"],
)
def test_cpu_variant_that_is_not_the_same_model_is_refused(tmp_path: Path, change) -> None:
    path = _copy_catalog(tmp_path)
    data = json.loads(path.read_text())
    change(next(m for m in data["models"] if m["name"] == "chest-ct-lung-nodule-torch"))
    path.write_text(json.dumps(data))
    with pytest.raises(CatalogError, match="cpu_variant 'chest-ct-lung-nodule-torch' is not the same model"):
        load_catalog(path, include_user_models=False)

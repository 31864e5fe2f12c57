"""The training script end to end, in miniature: fine-tune the shipped weights, export, catalogue, evaluate.

Two optimiser steps on one phantom (the real runs take ~20 minutes each, see `make train`); what is checked is the
plumbing a retraining relies on: the ONNX file and the MONAI bundle are written next to the catalogue, the entry
gets the files' sha256 and loads through the real catalogue code, the training record names every setting and the
weights it started from, and the held-out evaluation runs the new model through the inference engine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from MedAIExtension.models.catalog import DEFAULT_CATALOG, load_catalog
from MedAIExtension.training.train import MODEL_NAME, main

SHIPPED_WEIGHTS = DEFAULT_CATALOG.parent / f"{MODEL_NAME}-bundle" / "models" / "model.pt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fine_tuning_writes_a_loadable_catalogued_model(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    shutil.copy(DEFAULT_CATALOG, catalog)
    shipped = json.loads(DEFAULT_CATALOG.read_text())["models"]
    argv = ["--init", str(SHIPPED_WEIGHTS), "--iterations", "2", "--train-cases", "1", "--batch-size", "1"]
    argv += ["--heldout", "1", "--lr", "1e-5", "--case-seed", "3000", "--version", "9.9.9", "--catalog", str(catalog)]
    assert main(argv) == 0

    models = json.loads(catalog.read_text())["models"]
    assert [m["name"] for m in models] == [m["name"] for m in shipped]  # replaced in place, order kept
    entry = next(m for m in models if m["name"] == MODEL_NAME)
    assert entry["version"] == "9.9.9"
    onnx = tmp_path / entry["files"][0]["path"]
    assert onnx.is_file() and entry["files"][0]["sha256"] == _sha256(onnx)
    record = entry["training"]
    assert record["iterations"] == 2 and record["train_cases"] == 1 and record["case_seed"] == 3000
    previous = next(m for m in shipped if m["name"] == MODEL_NAME)
    assert record["fine_tuned_from"]["version"] == previous["version"]
    heldout = record["heldout"]
    assert heldout["heldout_seeds"] == [9000] and 0.0 <= heldout["dice_lung"] <= 1.0

    bundle = next(m for m in models if m["name"] == f"{MODEL_NAME}-torch")
    for file in bundle["files"]:
        assert file["sha256"] == _sha256(tmp_path / file["path"]), file["path"]

    # both entries load through the real catalogue code, sha256 checked
    loaded = load_catalog(catalog, include_user_models=False)
    for name in (MODEL_NAME, f"{MODEL_NAME}-torch"):
        loaded.get(name).verify_files()


def test_fine_tuning_needs_existing_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--init", str(tmp_path / "missing.pt"), "--catalog", str(tmp_path / "catalog.json")])
    assert exit_info.value.code == 2
    assert "no such file" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

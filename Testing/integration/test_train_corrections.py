"""``medai train --init MODEL --corrections DIR``: the annotator loop closed, end to end, in miniature.

Two small phantom studies are segmented by the shipped torch model (``medai segment``); an annotator per study
saves the phantom's exact labels over the result as a correction (:func:`~MedAIExtension.view.corrections.
write_correction`, as ``medai view``'s editor does). A three-step fine-tune on 32³ patches then writes a new user
model, which must load through the real catalogue code (sha256 checked), segment a study, differ from the base
weights and name its corrections, annotators and base model. Bad input is one error line, exit 2, nothing written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from MedAIExtension.cli import main
from MedAIExtension.io.volume_files import read_volume_file, write_volume_file
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.mrml import close_scene, create_scene, labelmap_to_segmentation_node
from MedAIExtension.phantom import generate_chest_phantom
from MedAIExtension.phantom.spec import NoduleSpec, PhantomSpec
from MedAIExtension.view.corrections import Correction, write_correction

BASE = "chest-ct-lung-nodule-torch"
ANNOTATORS = ("alice", "bob")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corrections(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Correction]]:
    """Two results of the base model on two phantoms, each corrected to the phantom's exact labels."""
    root = tmp_path_factory.mktemp("corrections")
    labels = load_catalog(include_user_models=False).get(BASE).labels
    saved = []
    for seed, annotator in zip((1, 2), ANNOTATORS, strict=True):
        nodule = NoduleSpec(12.0, lung="right", position=(-0.4, 0.1 * seed, 0.0))
        phantom = generate_chest_phantom(
            PhantomSpec(size_ijk=(64, 64, 40), spacing=(2.5, 2.5, 2.5), seed=seed, nodules=(nodule,))
        )
        study = write_volume_file(phantom.ct, root / f"study{seed}.nii.gz")
        result = root / f"result{seed}"
        assert main(["segment", "--input", str(study), "--model", BASE, "--output", str(result), "--quiet"]) == 0
        original = read_volume_file(result / "segmentation.nii.gz")
        scene = create_scene()
        try:
            node = labelmap_to_segmentation_node(scene, phantom.labels, labels, "corrected")
            saved.append(write_correction(node, result, original, phantom.ct, labels, annotator, study_path=study))
        finally:
            close_scene(scene)
    return root, saved


def _train(corrections_dir: Path, output: Path, *extra: str) -> int:
    argv = ["train", "--corrections", str(corrections_dir), "--output", str(output), "--device", "cpu", "--quiet"]
    return main([*argv, "--iterations", "3", "--batch-size", "2", "--patch", "32", *extra])


def test_fine_tune_on_corrections_writes_a_new_loadable_model(
    corrections: tuple[Path, list[Correction]], tmp_path: Path
) -> None:
    root, saved = corrections
    output = tmp_path / "models"
    shipped = load_catalog(include_user_models=False).get(BASE)
    assert _train(root, output, "--init", BASE, "--name", "chest-ct-corrected-test", "--lr", "1e-3") == 0

    # loadable through the real catalogue code (user model folder), every file's sha256 as the entry says
    entry = load_catalog(models_dirs=[output]).get("chest-ct-corrected-test")
    entry.verify_files()
    sidecar = json.loads((output / "chest-ct-corrected-test.json").read_text())
    for item in sidecar["files"]:
        assert item["sha256"] == _sha256(output / item["path"]), item["path"]
    assert entry.version.startswith(f"{shipped.version}+corrected.")
    assert [label.name for label in entry.labels] == [label.name for label in shipped.labels]

    # provenance: both corrections, both annotators, the base model and version
    training = entry.training
    assert training["base_model"] == BASE and training["base_version"] == shipped.version
    assert training["annotators"] == sorted(ANNOTATORS)
    assert sorted(c["folder"] for c in training["corrections"]) == sorted(str(c.folder) for c in saved)
    assert sorted(c["annotator"] for c in training["corrections"]) == sorted(ANNOTATORS)
    assert training["iterations"] == 3

    # new weights, the shipped ones untouched
    new = torch.load(output / "chest-ct-corrected-test.pt", weights_only=True)
    base = torch.load(shipped.model_file, weights_only=True)
    assert new.keys() == base.keys()
    assert any(not torch.equal(new[key], base[key]) for key in base if base[key].is_floating_point())
    shipped.verify_files()

    # the new model segments a study with medai segment
    study = root / "study1.nii.gz"
    result = tmp_path / "segmented"
    argv = ["segment", "--input", str(study), "--model", entry.name, "--models-dir", str(output)]
    assert main([*argv, "--output", str(result), "--device", "cpu", "--quiet"]) == 0
    labelmap = read_volume_file(result / "segmentation.nii.gz").array
    assert np.count_nonzero(labelmap == 1) > 10_000  # lungs found on the 64×64×40 phantom


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_no_corrections_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tmp_path / "models", "--init", BASE) == 2
    assert "No corrections under" in _one_error_line(capsys)
    assert not (tmp_path / "models").exists()


def test_missing_study_and_onnx_only_model(
    corrections: tuple[Path, list[Correction]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, saved = corrections
    moved = tmp_path / "moved" / "20260101T000000Z"
    shutil.copytree(saved[0].folder, moved)
    provenance = json.loads((moved / "provenance.json").read_text())
    study = Path(provenance["study"])
    provenance["study"] = str(tmp_path / "gone.nii.gz")
    (moved / "provenance.json").write_text(json.dumps(provenance))
    output = tmp_path / "models"

    assert _train(moved.parent, output, "--init", BASE) == 2
    line = _one_error_line(capsys)
    assert str(moved) in line and "gone.nii.gz" in line and f"--image {moved}=PATH" in line
    assert not output.exists()

    # --image gives the study; then an ONNX-only model is refused, naming the models that can be fine-tuned
    assert _train(moved.parent, output, "--init", "chest-ct-nodule-classifier-onnx", "--image", f"{moved}={study}") == 2
    line = _one_error_line(capsys)
    assert "chest-ct-nodule-classifier-onnx has no torch weights" in line and BASE in line
    assert not output.exists()

"""The MedAI Synthetic Review module's logic (``MedAISyntheticReviewLib.logic``) on a real headless MRML scene.

Real: SQLite review projects, small generated phantom CTs written as NRRD, the memorization check, the reader-study
statistics, the export and the MRML volume nodes. No stand-ins: the logic needs nothing of the Slicer application.
"""

from __future__ import annotations

import csv
import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.mrml import volume_node_to_image
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
from MedAIExtension.progress import CancelToken
from MedAIExtension.review.blinded_export import blind_image, common_grid

MODULES = Path(__file__).resolve().parents[2] / "Modules"


@pytest.fixture
def lib(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``MedAISyntheticReviewLib.logic`` imported as Slicer does (its module folder and that of the MedAI Common
    module it depends on, on ``sys.path``)."""
    for module in ("MedAICommon", "MedAISyntheticReview"):
        monkeypatch.syspath_prepend(str(MODULES / module))
    for name in [name for name in sys.modules if name.startswith(("MedAISyntheticReviewLib", "MedAICommonLib"))]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("MedAISyntheticReviewLib.logic")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real phantom CTs and three synthetic images: a blurred copy of real A with a float-valued blob (its
    parent is A), a near-copy of real B with float noise (no parent: only the memorization check finds B), and a
    noisy copy of real B (parent B)."""
    folder = tmp_path_factory.mktemp("review-images")
    rng = np.random.default_rng(5)
    spec = {"size_ijk": (32, 32, 16), "spacing": (9.0, 9.0, 14.0)}
    real_a = generate_chest_phantom(PhantomSpec(seed=1, **spec)).ct
    real_b = generate_chest_phantom(PhantomSpec(seed=2, center_ras=(3.0, -2.0, 5.0), **spec)).ct
    blurred = real_a.array.astype(np.float32)
    blurred[1:-1] = (blurred[:-2] + blurred[1:-1] + blurred[2:]) / 3.0
    blurred[6:10, 12:18, 12:18] += 80.25
    paths = {
        "real_a": write_volume_file(real_a, folder / "patient_a.nrrd"),
        "real_b": write_volume_file(real_b, folder / "patient_b.nrrd"),
        "syn_a": write_volume_file(real_a.with_array(blurred), folder / "gan_a.nrrd"),
        "syn_b_copy": write_volume_file(
            real_b.with_array(real_b.array + rng.normal(0, 2.0, real_b.shape).astype(np.float32)), folder / "gan_c.nrrd"
        ),
        "syn_b": write_volume_file(
            real_b.with_array(real_b.array + rng.normal(0, 60.0, real_b.shape).astype(np.float32)),
            folder / "gan_b.nrrd",
        ),
    }
    return paths


@pytest.fixture
def project(lib: types.ModuleType, scene: Any, images: dict[str, Path], tmp_path: Path) -> tuple[Any, dict[str, int]]:
    """An open logic on a new project holding ``images``; returns (logic, image ids by key)."""
    logic = lib.ReviewLogic(scene)
    info = logic.createProject(tmp_path / "study.medai-review", "Phantom study")
    assert info["name"] == "Phantom study" and info["images"] == {"synthetic": 0, "real": 0}
    ids = {key: logic.addImage(images[key], "real").id for key in ("real_a", "real_b")}
    ids["syn_a"] = logic.addImage(images["syn_a"], "synthetic", {"generator": "blur", "parent": ids["real_a"]}).id
    ids["syn_b_copy"] = logic.addImage(images["syn_b_copy"], "synthetic", {"generator": "copy"}).id
    ids["syn_b"] = logic.addImage(images["syn_b"], "synthetic", {"generator": "noise", "parent": ids["real_b"]}).id
    yield logic, ids
    logic.closeProject()


def _voxels(node: Any) -> np.ndarray:
    return volume_node_to_image(node).array


def test_pairs_load_with_their_parent_or_nearest_real_image(project: tuple[Any, dict[str, int]], images) -> None:
    logic, ids = project
    synthetic, reference = logic.loadPair(ids["syn_a"])
    assert synthetic.GetName() == f"Synthetic {ids['syn_a']}" and reference.GetName() == f"Reference {ids['real_a']}"
    np.testing.assert_allclose(_voxels(synthetic), load_image(images["syn_a"]).array)
    np.testing.assert_array_equal(_voxels(reference), load_image(images["real_a"]).array)

    synthetic, reference = logic.loadPair(ids["syn_b"])
    np.testing.assert_array_equal(_voxels(reference), load_image(images["real_b"]).array)
    assert scene_volumes(logic.scene) == 2, "the previous pair must be replaced, not kept"

    assert logic.loadPair(ids["syn_b_copy"])[1] is None, "no parent and no memorization result: no reference"
    logic.runMemorization()
    assert logic.referenceId(ids["syn_b_copy"]) == ids["real_b"]
    _, reference = logic.loadPair(ids["syn_b_copy"])
    np.testing.assert_array_equal(_voxels(reference), load_image(images["real_b"]).array)
    assert "synthetic" in logic.memorizationText() and "FLAGGED" in logic.memorizationText()
    with pytest.raises(InputError, match="real image"):
        logic.loadPair(ids["real_a"])


def scene_volumes(scene: Any) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")


def test_grades_persist_across_reopen_and_next_skips_graded(
    project: tuple[Any, dict[str, int]], lib: types.ModuleType, scene: Any
) -> None:
    logic, ids = project
    assert logic.nextToGrade("ann").id == ids["syn_a"]
    flag = logic.artifacts()[0]
    logic.grade(ids["syn_a"], "ann", True, 4, [flag], "fine", 12.5)
    logic.grade(ids["syn_b_copy"], "ann", False, 2)
    with pytest.raises(InputError, match="Unknown artifact"):
        logic.grade(ids["syn_b"], "ann", False, 1, ["not a flag"])
    path = logic.projectInfo()["path"]
    logic.closeProject()
    with pytest.raises(InputError, match="No review project is open"):
        logic.nextToGrade("ann")

    reopened = lib.ReviewLogic(scene)
    reopened.openProject(path)
    grade = reopened.latestGrade(ids["syn_a"], "ann")
    assert (grade.accept, grade.realism, grade.artifacts, grade.comment, grade.seconds) == (
        True,
        4,
        (flag,),
        "fine",
        12.5,
    )
    assert reopened.nextToGrade("ann").id == ids["syn_b"], "the invalid grade must not have been stored"
    assert reopened.nextToGrade("bob").id == ids["syn_a"], "reviewers do not share progress"
    reopened.closeProject()


def test_blinded_cases_carry_no_identifying_metadata(project: tuple[Any, dict[str, int]], images) -> None:
    logic, ids = project
    logic.loadPair(ids["syn_a"])  # a graded pair on screen must not stay beside the blinded cases
    session = logic.startBlindSession("reader", perClass=2, seed=11)
    assert logic.sessionProgress(session) == (0, 4)
    paths = {logic.project.image(i).path for i in ids.values()}
    grid = common_grid([logic.project.image(t.image_id) for t in logic.project.reader_trials(session)])
    seen, shapes, spacings = [], set(), set()
    while True:
        trial, node = logic.loadTrial(session)
        if trial is None:
            break
        assert node.GetName() == f"Case {trial.index + 1}"
        assert not node.GetAttributeNames(), f"attributes leak: {node.GetAttributeNames()}"
        assert node.GetStorageNode() is None and not node.GetDescription()
        assert node.GetImageData().GetScalarTypeAsString() == "float", "the voxel type would tell the class apart"
        voxels = _voxels(node)
        assert np.array_equal(voxels, np.rint(voxels)), "fractional values would reveal blended images"
        exported = blind_image(logic.project.image(trial.image_id).path, grid)  # what `--export` writes for it
        np.testing.assert_array_equal(voxels, sitk.GetArrayFromImage(exported))
        shapes.add(voxels.shape)
        spacings.add(tuple(np.round(node.GetSpacing(), 6)))
        centre = volume_node_to_image(node).ijk_to_ras @ np.r_[(np.array(voxels.shape[::-1]) - 1) / 2.0, 1.0]
        np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)
        for other in scene_nodes(logic.scene):
            text = " ".join([other.GetName() or "", *(other.GetAttribute(a) or "" for a in other.GetAttributeNames())])
            assert not any(Path(p).stem in text for p in paths) and "ynthetic" not in text and "Reference" not in text
        assert scene_volumes(logic.scene) == 1, "one case at a time"
        seen.append(trial)
        logic.answerTrial(session, trial.index, True, 3, 4.0)
    assert [t.index for t in seen] == [0, 1, 2, 3]
    assert len(shapes) == 1 and len(spacings) == 1, "matrix or spacing would tell generator output from scans"
    assert sorted(t.is_synthetic for t in seen) == [False, False, True, True]
    assert scene_volumes(logic.scene) == 0


def scene_nodes(scene: Any) -> list[Any]:
    return [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]


def test_blinded_session_resumes_where_the_reader_stopped(
    project: tuple[Any, dict[str, int]], lib: types.ModuleType, scene: Any
) -> None:
    logic, _ = project
    session = logic.startBlindSession("reader", perClass=2, seed=3)
    answers = {}
    for _ in range(2):
        trial, _node = logic.loadTrial(session)
        answers[trial.index] = (trial.is_synthetic, trial.index % 2 == 0)
        logic.answerTrial(session, trial.index, trial.index % 2 == 0, 1 + trial.index, 5.0)
    path = logic.projectInfo()["path"]
    logic.closeProject()

    resumed = lib.ReviewLogic(scene)
    resumed.openProject(path)
    assert resumed.unfinishedSession("reader") == session and resumed.unfinishedSession("other") is None
    trial, _node = resumed.loadTrial(session)
    assert trial.index == 2 and resumed.sessionProgress(session) == (2, 4)
    with pytest.raises(InputError, match="already answered"):
        resumed.answerTrial(session, 0, True, 5)
    while trial is not None:
        answers[trial.index] = (trial.is_synthetic, True)
        resumed.answerTrial(session, trial.index, True, 5, 3.0)
        trial, _node = resumed.loadTrial(session)
    assert resumed.unfinishedSession("reader") is None
    text = resumed.readerStudyText()
    correct = sum(truth == said for truth, said in answers.values())
    assert f"all readers: 4 answers, accuracy {correct / 4:.3f}" in text
    assert resumed.project.latest_result("reader_study")["pooled"]["n_correct"] == correct
    resumed.closeProject()


def test_export_writes_manifest_and_report(project: tuple[Any, dict[str, int]], tmp_path: Path) -> None:
    logic, ids = project
    assert logic.metricsText() == "Metrics not computed yet."
    logic.grade(ids["syn_a"], "ann", True, 5)
    logic.grade(ids["syn_b"], "ann", False, 2, [logic.artifacts()[1]])
    warnings: list[str] = []
    files = logic.export(tmp_path / "out", warn=warnings.append)
    assert any("memorization" in message.lower() for message in warnings), "no check run: the export says so"
    with open(files["manifest_csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["id"]) for row in rows] == [ids["syn_a"]]
    assert files["manifest_json"].is_file()
    assert "Phantom study" in files["report"].read_text(encoding="utf-8")


def test_no_scene_or_no_project_is_a_clear_error(lib: types.ModuleType, scene: Any, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="MRML scene"):
        lib.ReviewLogic(None)
    logic = lib.ReviewLogic(scene)
    with pytest.raises(InputError, match="does not exist"):
        logic.openProject(tmp_path / "missing.medai-review")
    with pytest.raises(InputError, match="No review project is open"):
        logic.startBlindSession("reader", 1, 0)


def test_demo_project_gives_every_lesion_image_its_parent(lib: types.ModuleType, scene: Any, tmp_path: Path) -> None:
    logic = lib.ReviewLogic(scene)
    info = logic.createDemoProject(tmp_path, realCount=2, lesionsPerImage=1, sizeIjk=(24, 24, 12))
    assert info["images"] == {"synthetic": 2, "real": 2}
    real = {record.id: record for record in logic.project.images("real")}
    for record in logic.syntheticImages():
        assert record.parent_id in real and record.provenance["generator"] == "medai-lesion-insertion"
        synthetic, reference = logic.loadPair(record.id)
        np.testing.assert_array_equal(_voxels(reference), load_image(real[record.parent_id].path).array)
        assert not np.array_equal(_voxels(synthetic), _voxels(reference)), "the lesion must change the image"
    logic.closeProject()


def test_show_in_views_sets_and_links_the_named_views(project: tuple[Any, dict[str, int]]) -> None:
    logic, ids = project
    scene = logic.scene
    layout = scene.AddNode(slicer.vtkMRMLLayoutNode())  # as the application's view logics set the scene up
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    views = {}
    for name in ("Red", "Yellow", "Green"):
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        slice_node = scene.CreateNodeByClass("vtkMRMLSliceNode")  # with the default orientation presets
        slice_node.SetLayoutName(name)
        slice_node.SetOrientationToSagittal()
        views[name] = (scene.AddNode(composite), scene.AddNode(slice_node))
    synthetic, reference = logic.loadPair(ids["syn_a"])
    side_by_side = slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert logic.showInViews({"Red": synthetic, "Yellow": reference}, side_by_side) == 2
    assert layout.GetViewArrangement() == side_by_side
    assert views["Red"][0].GetBackgroundVolumeID() == synthetic.GetID()
    assert views["Yellow"][0].GetBackgroundVolumeID() == reference.GetID()
    assert views["Red"][0].GetLinkedControl() and views["Yellow"][0].GetLinkedControl()
    assert views["Red"][1].GetOrientation() == "Axial" and views["Green"][1].GetOrientation() == "Sagittal"
    assert views["Green"][0].GetBackgroundVolumeID() is None, "views not named are left alone"
    _, case = logic.loadTrial(logic.startBlindSession("reader", 1, 2))
    assert logic.showInViews({"Red": case}) == 1 and not views["Red"][0].GetLinkedControl()


def test_metrics_text_shows_the_stored_metrics(project: tuple[Any, dict[str, int]]) -> None:
    logic, _ = project
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        logic.runMetrics(token=token)
    assert logic.metricsText() == "Metrics not computed yet.", "a cancelled run must save nothing"
    reports = []
    data = logic.runMetrics(progress=lambda fraction, _message: reports.append(fraction))
    text = logic.metricsText()
    assert text.startswith(f"Metrics ({data['n_synthetic']} synthetic vs {data['n_real']} real")
    for part, value in data["fid"].items():
        name = f"2.5D FID ({part} slices)" if part != "mean" else "2.5D FID (mean of the axial"
        line = next(line for line in text.splitlines() if line.strip().startswith(name))
        assert f": {value:.4g} (real vs real: " in line and "lower is more realistic" in line
    assert reports and reports[-1] == pytest.approx(1.0)

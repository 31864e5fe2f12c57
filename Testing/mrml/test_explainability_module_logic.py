"""The MedAI Explainability module's Slicer glue (``MedAIExplainabilityLib.logic``) on a real headless MRML scene.

Real: the catalogue, the ROI markups node, the request and its worker command line, the child processes (a tiny
Python program stands in for the explanation worker's output, so these tests do not wait for the explanation
pipeline), the result folder (an explanation.json and an NRRD map written here) and the MRML nodes. A stand-in only
for what exists in the Slicer application alone: the ScriptedLoadableModuleLogic base class.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer

from MedAIExtension.errors import InputError
from MedAIExtension.explain.request import ExplainRequest, Roi, add_explain_arguments
from MedAIExtension.explain.types import ExplainMethod
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import read_volume_file, write_volume_file
from MedAIExtension.mrml import image_to_volume_node, volume_node_to_image
from MedAIExtension.mrml._vtk import matrix_from_numpy
from MedAIExtension.runner import WorkerEvent, WorkerProcess, format_event
from Testing.mrml.module_import import import_module_code

SEGMENTATION_MODEL = "chest-ct-lung-nodule"  # ONNX: no gradients; a segmentation model: uncertainty applies


@pytest.fixture
def lib(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``MedAIExplainabilityLib.logic`` with a stand-in for Slicer's ScriptedLoadableModule (GUI app only)."""
    modules = ["MedAIExplainability"]  # with MedAICommon, as on Slicer's sys.path
    return import_module_code(monkeypatch, "MedAIExplainabilityLib.logic", modules)


@pytest.fixture
def volume(scene: Any, rng: np.random.Generator) -> Any:
    """A small CT volume node on an oblique-free axial grid."""
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])
    affine[:3, 3] = (40.0, 30.0, -20.0)
    ct = Image(rng.integers(-1000, 400, size=(12, 20, 24), dtype=np.int16), affine, modality="CT")
    return image_to_volume_node(scene, ct, "CT")


def _roi(scene: Any, center: tuple[float, float, float], size: tuple[float, float, float]) -> Any:
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    roi.SetCenter(*center)
    roi.SetSize(*size)
    return roi


def _result_folder(folder: Path, volume: Any) -> Path:
    """An explanation output folder (as explain_to_folder writes it) with a map on the volume's grid."""
    folder.mkdir(parents=True)
    image = volume_node_to_image(volume)
    heat = np.zeros(image.shape, dtype=np.float32)
    heat[4:8, 8:12, 10:14] = 1.0
    write_volume_file(image.with_array(heat), folder / "ct_occlusion.nrrd")
    document = {
        "method": "occlusion",
        "method_title": "Occlusion sensitivity",
        "model": {"name": SEGMENTATION_MODEL, "version": "1.0.0", "backend": "onnx", "provider": "cpu"},
        "target": {"value": 2, "name": "Lung lesion", "channel": 2},
        "files": {"map_nrrd": "ct_occlusion.nrrd"},
        "display": {"window": [0.0, 1.0], "threshold": 0.2, "colormap": "heat", "opacity": 0.4},
        "sanity": {"faithfulness": {"summary": "Hiding the hottest voxels first lowers the score fastest."}},
        "notes": ["The map is coarse: occlusion windows of 8 voxels."],
    }
    (folder / "explanation.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


def _printing(events: list[WorkerEvent], code: int = 0) -> WorkerProcess:
    """A real child process that prints ``events`` the way the worker does and exits with ``code``."""
    lines = "\n".join(format_event(event) for event in events)
    return WorkerProcess([sys.executable, "-c", f"import sys; print({lines!r}, flush=True); sys.exit({code})"])


def _wait(logic: Any, job: Any, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not job.finished and time.time() < deadline:
        logic.poll(job)
        time.sleep(0.05)
    assert job.finished, "the worker did not stop"


# ---- the GUI's choices -----------------------------------------------------------------------------------------
def test_methods_and_targets_follow_the_model(lib) -> None:
    logic = lib.ExplainabilityLogic
    assert logic.methodsFor(SEGMENTATION_MODEL) == [ExplainMethod.OCCLUSION, ExplainMethod.UNCERTAINTY]
    values, titles = logic.targetChoices(SEGMENTATION_MODEL)
    assert values == ["", "1", "2"] and titles == ["Catalogue default", "Lung (1)", "Lung lesion (2)"]
    assert logic.targetChoices("no-such-model") == ([""], ["Catalogue default"])
    assert SEGMENTATION_MODEL in [name for name, _ in logic.catalogueModels()]


def test_a_roi_markup_becomes_its_box_in_world_ras(lib, scene) -> None:
    roi = lib.ExplainabilityLogic.roiFromNode(_roi(scene, (10.0, -20.0, 30.0), (16.0, 24.0, 8.0)))
    assert roi == Roi((10.0, -20.0, 30.0), (16.0, 24.0, 8.0))
    rotated = _roi(scene, (0.0, 0.0, 0.0), (20.0, 10.0, 10.0))
    turn = np.eye(4)
    turn[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]  # 90° about S: the box's R and A sizes swap
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(matrix_from_numpy(turn))
    rotated.SetAndObserveTransformNodeID(transform.GetID())
    box = lib.ExplainabilityLogic.roiFromNode(rotated)
    np.testing.assert_allclose(box.size_mm, (10.0, 20.0, 10.0), atol=1e-6)
    assert lib.ExplainabilityLogic.roiFromNode(None) is None
    with pytest.raises(InputError, match="ROI markup"):
        lib.ExplainabilityLogic.roiFromNode(scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode"))


def test_gui_parameters_become_the_request_the_worker_parses_back(lib, scene, tmp_path) -> None:
    logic = lib.ExplainabilityLogic(scene)
    roi = _roi(scene, (1.5, -2.25, 3.0), (30.0, 32.0, 34.0))
    request = logic.buildRequest(tmp_path / "ct.nrrd", tmp_path / "out", SEGMENTATION_MODEL, "occlusion", "2", roi)
    assert request.target == "2" and request.roi == Roi((1.5, -2.25, 3.0), (30.0, 32.0, 34.0))
    assert request.layer is None and request.sanity and request.method is ExplainMethod.OCCLUSION
    args = logic.workerArgs(request)
    assert args[:4] == [sys.executable, "-m", "MedAIExtension.worker", "explain"]
    parser = argparse.ArgumentParser()
    add_explain_arguments(parser)
    assert ExplainRequest.from_arguments(parser.parse_args(args[4:])) == request
    default = logic.buildRequest(tmp_path / "ct.nrrd", tmp_path / "out", SEGMENTATION_MODEL, "uncertainty", "", None)
    assert default.target is None and default.roi is None
    with pytest.raises(InputError, match=r"Grad-CAM does not apply.*Occlusion sensitivity, Predictive entropy"):
        logic.buildRequest(tmp_path / "ct.nrrd", tmp_path / "out", SEGMENTATION_MODEL, "gradcam")


# ---- running -----------------------------------------------------------------------------------------------------
def test_start_stages_the_volume_as_nrrd_and_cancel_cleans_up(lib, scene, volume) -> None:
    logic = lib.ExplainabilityLogic(scene)
    with pytest.raises(InputError, match="input volume"):
        logic.start(None, SEGMENTATION_MODEL, "occlusion")
    job = logic.start(volume, SEGMENTATION_MODEL, "occlusion", target="2", device="cpu")
    try:
        staged = read_volume_file(job.workDir / "inputs" / "input.nrrd")
        assert np.array_equal(staged.array, volume_node_to_image(volume).array)
        np.testing.assert_allclose(staged.ijk_to_ras, volume_node_to_image(volume).ijk_to_ras, atol=1e-6)
        assert job.request.input == job.workDir / "inputs" / "input.nrrd" and job.request.output == job.outputDir
        assert job.process.args == logic.workerArgs(job.request)
    finally:
        logic.cancel(job)
    _wait(logic, job)
    assert job.cancelled and not job.error and job.nodes is None
    assert not job.workDir.exists(), "temporary files were left behind"


def test_a_result_event_loads_the_folder_and_keeps_only_the_results(lib, scene, volume, tmp_path) -> None:
    logic = lib.ExplainabilityLogic(scene)
    views = [scene.AddNode(slicer.vtkMRMLSliceCompositeNode()) for _ in range(2)]
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True)
    folder = _result_folder(work / "results", volume)
    request = ExplainRequest(work / "inputs" / "input.nrrd", SEGMENTATION_MODEL, "occlusion", folder)
    events = [WorkerEvent("progress", 0.5, "window 3/6"), WorkerEvent("result", 1.0, "done", {"output": str(folder)})]
    job = lib.ExplainJob(_printing(events), work, volume, request, startTime=time.time())
    job.process.start()
    _wait(logic, job)
    assert not job.error and job.nodes is not None
    assert job.nodes.map.GetName() == "CT Occlusion sensitivity (Lung lesion)"
    assert "hottest voxels" in job.nodes.sanity_summary
    assert all(v.GetForegroundVolumeID() == job.nodes.map.GetID() for v in views)
    assert all(v.GetBackgroundVolumeID() == volume.GetID() for v in views)
    assert views[0].GetForegroundOpacity() == pytest.approx(0.4)
    assert logic.setOverlayOpacity(0.9) == 2 and views[1].GetForegroundOpacity() == pytest.approx(0.9)
    assert not (work / "inputs").exists() and (folder / "explanation.json").is_file()


@pytest.mark.parametrize("case", ["error event", "silent exit", "damaged result"])
def test_failures_are_reported_and_leave_no_node_and_no_files(case: str, lib, scene, volume, tmp_path) -> None:
    logic = lib.ExplainabilityLogic(scene)
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True)
    folder = work / "results"
    if case == "error event":
        message = "Grad-CAM needs the model's gradients; choose occlusion for ONNX models."
        process, expected = _printing([WorkerEvent("error", message=message)], 2), message
    elif case == "silent exit":
        process, expected = _printing([WorkerEvent("log", message="Segmentation fault")], 139), "exit code 139"
    else:
        folder.mkdir()
        (folder / "explanation.json").write_text("{ not json", encoding="utf-8")
        process, expected = _printing([WorkerEvent("result", data={"output": str(folder)})]), "medai explain"
    before = scene.GetNumberOfNodes()
    job = lib.ExplainJob(process, work, volume, ExplainRequest(work, SEGMENTATION_MODEL, "occlusion", folder))
    process.start()
    _wait(logic, job)
    assert expected in job.error and job.nodes is None
    assert scene.GetNumberOfNodes() == before and not work.exists()

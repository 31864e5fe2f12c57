"""The MedAI Nodule Tracking module's Slicer glue (``MedAINoduleTrackingLib.logic``) on a real headless MRML scene.

Real: the worker process (``python -m MedAIExtension.worker track``), the tracking, the output files, the MRML nodes
made by ``MedAIExtension.tracking.scene`` and the transform nodes. Stand-ins only for what exists in the Slicer
application alone: the ScriptedLoadableModuleLogic base class, the DICOM database's file lookup and DICOMUtils.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer

from MedAIExtension.errors import InputError
from MedAIExtension.io import read_dicom_series, read_volume_file
from MedAIExtension.mrml import image_to_volume_node, volume_node_to_image
from MedAIExtension.runner import WorkerEvent
from Testing.mrml.module_import import import_module_code


def _import_logic(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``MedAINoduleTrackingLib.logic`` imported with a stand-in for Slicer's ScriptedLoadableModule (GUI app only)."""
    modules = ["MedAINoduleTracking"]  # with MedAICommon, as Slicer puts every module folder on sys.path
    return import_module_code(monkeypatch, "MedAINoduleTrackingLib.logic", modules)


@pytest.fixture
def lib(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The module logic."""
    return _import_logic(monkeypatch)


class FakeDicomDatabase:
    """Slicer's DICOM database, reduced to the lookup the logic uses."""

    def __init__(self, folders: list[Path]) -> None:
        import pydicom

        files = [f for folder in folders for f in sorted(folder.glob("*.dcm"))]
        self.files = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): str(f) for f in files}

    def fileForInstance(self, uid: str) -> str:  # Slicer's (camelCase) API
        return self.files.get(uid, "")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two DICOM studies of one phantom patient, 120 days apart, moved between the scans: nodule 1 doubles, nodule 2
    is stable, nodule 3 is new at follow-up."""
    from MedAIExtension.phantom import NoduleSpec, PhantomSpec
    from MedAIExtension.phantom.followup import write_phantom_pair

    right = NoduleSpec(12.0, lung="right", position=(0.3, 0.2, 0.3))
    left = NoduleSpec(10.0, lung="left", position=(0.35, -0.2, -0.3))
    return write_phantom_pair(
        tmp_path_factory.mktemp("pair"),
        baseline=PhantomSpec(size_ijk=(192, 192, 128), spacing=(1.8, 1.8, 2.5), seed=11, nodules=(right, left)),
        volume_factors=(2.0, 1.0),
        new_nodules=(NoduleSpec(9.0, lung="right", position=(0.3, -0.3, -0.45)),),
        rotation_deg=(0.0, 0.0, 3.0),
        translation_mm=(5.0, -3.0, 0.0),
        interval_days=120,
    )


def _dicom_volume(scene: Any, folder: Path, name: str, database: FakeDicomDatabase) -> Any:
    """A volume as Slicer's DICOM plugin loads it: voxels plus the attribute listing its SOP instance UIDs."""
    volume = image_to_volume_node(scene, read_dicom_series(folder), name)
    uids = [uid for uid, path in database.files.items() if Path(path).parent == folder]
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    return volume


@pytest.fixture
def dicom_volumes(scene: Any, pair: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Baseline and follow-up loaded "from the DICOM database"."""
    database = FakeDicomDatabase([pair["baseline_ct"], pair["followup_ct"]])
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    return (
        _dicom_volume(scene, pair["baseline_ct"], "Baseline", database),
        _dicom_volume(scene, pair["followup_ct"], "Follow-up", database),
    )


@pytest.fixture
def dicom_utils(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], bool]]:
    """A stand-in for DICOMLib.DICOMUtils; records each imported folder, the files in it and copyFiles."""
    imported: list[tuple[str, list[str], bool]] = []

    def import_dicom(folder: str, copyFiles: bool = False) -> None:
        imported.append((folder, sorted(p.name for p in Path(folder).iterdir()), copyFiles))

    dicomlib = types.ModuleType("DICOMLib")
    dicomlib.DICOMUtils = types.SimpleNamespace(importDicom=import_dicom)
    monkeypatch.setitem(sys.modules, "DICOMLib", dicomlib)
    return imported


def _wait(logic: Any, job: Any, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not job.finished and time.time() < deadline:
        logic.poll(job)
        time.sleep(0.05)
    assert job.finished, "the worker did not stop"


# ---- starting: what is checked and what the worker gets ----------------------------------------------------------
def test_start_refuses_missing_or_identical_volumes_and_an_unknown_interval(lib, scene, pair) -> None:
    logic = lib.TrackingLogic(scene)
    ct = image_to_volume_node(scene, read_volume_file(pair["baseline_nifti"]), "CT")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(InputError, match="baseline volume"):
        logic.start(None, ct, intervalDays=90)
    with pytest.raises(InputError, match="follow-up volume"):
        logic.start(ct, empty, intervalDays=90)
    with pytest.raises(InputError, match="same volume"):
        logic.start(ct, ct, intervalDays=90)
    other = image_to_volume_node(scene, read_volume_file(pair["followup_nifti"]), "CT 2")
    with pytest.raises(InputError, match="Enter the interval in days"):
        logic.start(ct, other)  # not from DICOM: no study dates


def test_volumes_without_dicom_go_to_the_worker_as_nrrd_and_cancel_cleans_up(lib, scene, pair) -> None:
    logic = lib.TrackingLogic(scene)
    volumes = [image_to_volume_node(scene, read_volume_file(pair[f"{n}_nifti"]), n) for n in ("baseline", "followup")]
    job = logic.start(*volumes, None, "cpu", intervalDays=120)
    try:
        for volume, name in zip(volumes, ("baseline", "followup"), strict=True):
            staged = read_volume_file(job.workDir / "inputs" / f"{name}.nrrd")
            original = volume_node_to_image(volume)
            assert np.array_equal(staged.array, original.array)
            np.testing.assert_allclose(staged.ijk_to_ras, original.ijk_to_ras, atol=1e-6)
        assert "--interval-days" in job.process.args and "--no-model" in job.process.args
    finally:
        logic.cancel(job)
    _wait(logic, job)
    assert job.cancelled and not job.error and job.nodes is None
    assert not job.workDir.exists(), "temporary files were left behind"


def test_volumes_from_the_dicom_database_go_to_the_worker_as_their_dicom_series(lib, scene, dicom_volumes) -> None:
    logic = lib.TrackingLogic(scene)
    job = logic.start(*dicom_volumes, None, "cpu")  # no interval: the study dates give it
    try:
        for volume, name in zip(dicom_volumes, ("baseline", "followup"), strict=True):
            staged = read_dicom_series(job.workDir / "inputs" / name)
            assert np.array_equal(staged.array, volume_node_to_image(volume).array)
            assert len(staged.source_files) == len(volume.GetAttribute("DICOM.instanceUIDs").split())
            assert staged.metadata.get("StudyDate"), "the staged series lost its study date"
        assert "--interval-days" not in job.process.args
    finally:
        logic.cancel(job)
    _wait(logic, job)
    assert not job.workDir.exists()


class ScriptedProcess:
    """A worker that has already printed ``events`` and exits with ``returncode`` at the first poll."""

    def __init__(self, events: list[WorkerEvent], returncode: int) -> None:
        self.events, self.returncode, self.running, self._code = list(events), None, True, returncode

    def poll(self) -> list[WorkerEvent]:
        events, self.events = self.events, []
        self.running, self.returncode = False, self._code
        return events

    def cancel(self) -> None:
        self.running = False


def test_worker_errors_and_silent_exits_are_reported_and_clean_up(lib, scene, tmp_path) -> None:
    logic = lib.TrackingLogic(scene)
    for events, code, expected in (
        ([WorkerEvent("error", message="Baseline and follow-up belong to different patients.")], 2, "different"),
        ([WorkerEvent("log", message="Segmentation fault")], 139, "exit code 139"),
    ):
        work = Path(tmp_path / f"work-{code}")
        (work / "inputs").mkdir(parents=True)
        job = lib.TrackingJob(ScriptedProcess(events, code), work, None, None)
        logic.poll(job)
        assert job.finished and expected in job.error and job.nodes is None
        assert not work.exists()


# ---- a real run: result in the scene, jump to nodules, registered view, DICOM export -----------------------------
@pytest.fixture(scope="module")
def truth(pair: dict[str, Path]) -> dict[str, Any]:
    return json.loads(pair["truth"].read_text(encoding="utf-8"))


def test_a_real_run_loads_the_nodules_and_exports_seg_and_sr(
    lib, scene, dicom_volumes, dicom_utils, truth, capsys
) -> None:
    baseline, followup = dicom_volumes
    logic = lib.TrackingLogic(scene)
    started = time.monotonic()
    job = logic.run(baseline, followup, None, "cpu", timeoutSeconds=600)
    seconds = time.monotonic() - started
    nodes = job.nodes
    assert not job.error and job.finished and not (job.workDir / "inputs").exists()
    assert nodes.table.GetScene() is scene and nodes.table.GetNumberOfRows() == len(nodes.rows)
    assert job.result["interval_days"] == truth["interval_days"]

    # every nodule of the truth: clicking its row centres the views on it (baseline position; new: follow-up)
    header = 0 if nodes.table.GetUseColumnTitleAsColumnHeader() else 1
    assert logic.tableRowIndex(nodes.table, header - 1) is None  # the header row of the view
    located = [logic.clickedNoduleLocation(job, row + header) for row in range(len(nodes.rows))]
    errors = []
    for nodule in truth["nodules"]:
        where = "baseline" if nodule["baseline"] else "followup"
        errors.append(min(float(np.linalg.norm(np.subtract(p, nodule[where]["center_ras"]))) for p in located))
    with capsys.disabled():
        print(f"\nmodule logic: {len(nodes.rows)} rows in {seconds:.1f} s; jump errors {np.round(errors, 2)} mm")
    assert max(errors) < 4.0
    assert sorted(row["status"] for row in nodes.rows) == sorted(n["status"] for n in truth["nodules"])

    # a new nodule seen with the follow-up registered: its location moves with the follow-up volume
    new = next(i for i, row in enumerate(nodes.rows) if row["status"] == "new")
    before = np.array(logic.noduleLocation(nodes, new, followup))
    logic.showFollowupRegistered(nodes, followup, True)
    for node in (followup, nodes.followup_segmentation, nodes.followup_fiducials):
        assert node.GetParentTransformNode() is nodes.transform
    after = np.array(logic.noduleLocation(nodes, new, followup))
    motion = np.array(truth["motion"]["followup_to_baseline_ras"])
    assert np.linalg.norm(after - (motion[:3, :3] @ before + motion[:3, 3])) < 3.0  # the registration found it
    logic.showFollowupRegistered(nodes, followup, False)
    assert followup.GetParentTransformNode() is None and nodes.followup_segmentation.GetParentTransformNode() is None

    # export: exactly the four DICOM objects go to the database, as copies
    import pydicom

    paths = logic.exportDicom(nodes.table)
    assert len(dicom_utils) == 1 and dicom_utils[0][2] is True
    assert dicom_utils[0][1] == sorted(f"{pydicom.dcmread(path).SOPInstanceUID}.dcm" for path in paths)
    assert len(paths) == 4
    assert sorted(pydicom.dcmread(path).Modality for path in paths) == ["SEG", "SEG", "SR", "SR"]
    assert not Path(dicom_utils[0][0]).exists()  # the staging folder is gone once the database has its copies
    shutil.rmtree(job.workDir)


def test_export_explains_what_is_missing(lib, scene, tmp_path, dicom_utils) -> None:
    logic = lib.TrackingLogic(scene)
    with pytest.raises(InputError, match="run the tracking first"):
        logic.exportDicom(None)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    table.SetAttribute(lib.OUTPUT_ATTRIBUTE, str(tmp_path))
    with pytest.raises(InputError, match="gone or damaged"):
        logic.exportDicom(table)
    (tmp_path / "tracking.json").write_text(
        json.dumps({"summary": {}, "nodules": [], "files": {"table_csv": "tracking.csv"}}), encoding="utf-8"
    )
    with pytest.raises(InputError, match="DICOM database"):  # NRRD inputs: no SEG/SR were written
        logic.exportDicom(table)
    assert dicom_utils == []

"""The MedAI Segmentation module's Slicer glue (``MedAISegmentationLib.logic``) on a real headless MRML scene.

The worker process is replaced by a scripted fake (so no model is needed) and the few Slicer application pieces
the logic touches — the ScriptedLoadableModuleLogic base class, the DICOM database and DICOMUtils — by small
stand-ins. Everything else is real: MRML nodes from slicer-core, MedAIExtension's MRML bridge and DICOM SEG writer.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer

from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.io import Image, read_dicom_files, write_dicom_series, write_volume_file
from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.mrml import image_to_volume_node, segmentation_node_to_labelmap
from MedAIExtension.runner import WorkerEvent
from Testing.mrml.module_import import import_module_code

LABELS = (
    SegmentLabel(1, "Right lung", (0.5, 0.7, 1.0), type=CodedTerm("3341006", "SCT", "Right lung")),
    SegmentLabel(2, "Left lung", (1.0, 0.6, 0.4), type=CodedTerm("44029006", "SCT", "Left lung")),
    SegmentLabel(3, "Nodule", (1.0, 1.0, 0.0), type=CodedTerm("27925004", "SCT", "Nodule")),
)
MODEL = types.SimpleNamespace(name="fake-lungs", title="Fake lungs", version="1.2.3", labels=LABELS)


class FakeCatalog:
    """The one model the tests use."""

    def names(self) -> list[str]:
        return [MODEL.name]

    def get(self, name: str) -> Any:
        assert name == MODEL.name
        return MODEL


class FakeProcess:
    """A worker that has already printed ``events`` and exits with ``returncode`` at the first poll."""

    def __init__(self, events: list[WorkerEvent], returncode: int = 0) -> None:
        self.events, self.returncode, self.running, self.cancelled = list(events), None, True, False
        self._exit_code = returncode

    def poll(self) -> list[WorkerEvent]:
        events, self.events = self.events, []
        self.running, self.returncode = False, (-15 if self.cancelled else self._exit_code)
        return events

    def cancel(self) -> None:
        self.cancelled = True


def _import_logic(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``MedAISegmentationLib.logic`` imported with a stand-in for Slicer's ScriptedLoadableModule (GUI app only)."""
    return import_module_code(monkeypatch, "MedAISegmentationLib.logic", ["MedAISegmentation"])


@pytest.fixture
def lib(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The module logic with a one-model fake catalogue (the tests below script the worker's events)."""
    monkeypatch.setattr("MedAIExtension.models.catalog.load_catalog", FakeCatalog)
    return _import_logic(monkeypatch)


@pytest.fixture
def ct() -> Image:
    """A small axial CT (K, J, I) = (5, 6, 7) with 0.8 x 0.9 x 2.5 mm voxels."""
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = (60.0, 40.0, -20.0)
    array = np.random.default_rng(7).integers(-1000, 400, size=(5, 6, 7)).astype(np.int16)
    return Image(array=array, ijk_to_ras=affine, modality="CT")


@pytest.fixture
def labelmap(ct: Image) -> Image:
    """Right lung, left lung and a nodule on the CT grid."""
    array = np.zeros(ct.shape, dtype=np.uint8)
    array[1:4, 1:5, 0:3] = 1
    array[1:4, 1:5, 4:7] = 2
    array[2, 2, 5] = 3
    return ct.with_array(array)


def _job(lib: types.ModuleType, tmp_path: Path, volume: Any, events: list[WorkerEvent], **kwargs: Any) -> Any:
    work = tmp_path / f"work-{len(list(tmp_path.glob('work-*')))}"
    work.mkdir()
    return lib.SegmentationJob(FakeProcess(events, kwargs.pop("returncode", 0)), work, volume, MODEL.name, **kwargs)


def _result(tmp_path: Path, labelmap: Image) -> WorkerEvent:
    path = write_volume_file(labelmap, tmp_path / "labels.nii.gz")
    return WorkerEvent("result", 1.0, "done", {"labelmap": str(path), "provider": "CPUExecutionProvider"})


def test_result_becomes_a_segmentation_with_statistics(lib, scene, tmp_path, ct, labelmap) -> None:
    volume = image_to_volume_node(scene, ct, "CT")
    job = _job(lib, tmp_path, volume, [WorkerEvent("progress", 0.5, "half way"), _result(tmp_path, labelmap)])
    events = lib.SegmentationLogic(scene).poll(job)

    assert [event.kind for event in events] == ["progress", "result"]
    assert job.finished and not job.error and not job.workDir.exists()
    node = job.segmentationNode
    assert node.GetScene() is scene and node.GetSegmentation().GetNumberOfSegments() == len(LABELS)
    assert np.array_equal(segmentation_node_to_labelmap(node, labelmap).array, labelmap.array)
    assert node.GetAttribute("MedAI.model") == MODEL.name and node.GetAttribute("MedAI.modelVersion") == "1.2.3"
    assert node.GetAttribute("MedAI.provider") == "CPUExecutionProvider"
    assert node.GetNodeReference(lib.INPUT_ROLE) is volume
    table = node.GetNodeReference(lib.STATISTICS_ROLE)
    assert table is job.tableNode and table.GetNumberOfRows() == len(LABELS)
    assert [int(table.GetCellText(row, 2)) for row in range(3)] == [int((labelmap.array == v).sum()) for v in (1, 2, 3)]


def test_a_chosen_output_segmentation_is_refilled_and_its_old_table_removed(lib, scene, tmp_path, ct, labelmap) -> None:
    volume = image_to_volume_node(scene, ct, "CT")
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "My segmentation")
    output.GetSegmentation().AddEmptySegment("old", "Drawn by hand")
    logic = lib.SegmentationLogic(scene)
    for _ in range(2):
        job = _job(lib, tmp_path, volume, [_result(tmp_path, labelmap)], outputSegmentation=output)
        logic.poll(job)
        assert not job.error and job.segmentationNode is output

    assert output.GetName() == "My segmentation"
    assert sorted(output.GetSegmentation().GetSegmentIDs()) == ["Segment_1", "Segment_2", "Segment_3"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1, "the temporary node was left behind"
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1, "the previous statistics table was left behind"
    assert np.array_equal(segmentation_node_to_labelmap(output, labelmap).array, labelmap.array)


def test_worker_errors_and_silent_exits_are_reported(lib, scene, tmp_path, ct) -> None:
    volume, logic = image_to_volume_node(scene, ct, "CT"), lib.SegmentationLogic(scene)
    failed = _job(lib, tmp_path, volume, [WorkerEvent("error", message="Model file x.onnx is missing.")], returncode=2)
    logic.poll(failed)
    assert failed.finished and failed.error == "Model file x.onnx is missing."
    silent = _job(lib, tmp_path, volume, [WorkerEvent("log", message="Segmentation fault")], returncode=139)
    logic.poll(silent)
    assert silent.finished and "exit code 139" in silent.error and silent.segmentationNode is None


def test_a_result_that_cannot_be_loaded_is_an_error_not_a_crash(lib, scene, tmp_path, ct) -> None:
    volume = image_to_volume_node(scene, ct, "CT")
    job = _job(lib, tmp_path, volume, [WorkerEvent("result", data={"labelmap": str(tmp_path / "missing.nii.gz")})])
    lib.SegmentationLogic(scene).poll(job)
    assert job.finished and job.error and job.segmentationNode is None
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_cancel_is_not_an_error(lib, scene, tmp_path, ct, labelmap) -> None:
    volume, logic = image_to_volume_node(scene, ct, "CT"), lib.SegmentationLogic(scene)
    job = _job(lib, tmp_path, volume, [WorkerEvent("error", message="Terminated"), _result(tmp_path, labelmap)])
    logic.cancel(job)
    assert job.process.cancelled
    logic.poll(job)
    assert job.finished and job.cancelled and not job.error and job.segmentationNode is None


def test_run_raises_the_worker_error(lib, scene, tmp_path, ct, monkeypatch) -> None:
    volume, logic = image_to_volume_node(scene, ct, "CT"), lib.SegmentationLogic(scene)
    job = _job(lib, tmp_path, volume, [WorkerEvent("error", message="CUDA is not available; use cpu.")])
    started = []

    def start(volume: Any, model: str, device: str) -> Any:
        started.append((volume, model, device))
        return job

    monkeypatch.setattr(logic, "start", start)
    with pytest.raises(MedAIError, match="CUDA is not available"):
        logic.run(volume, MODEL.name, "cuda")
    assert started == [(volume, MODEL.name, "cuda")]


def test_start_refuses_a_volume_without_image(lib, scene) -> None:
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(InputError, match="input volume"):
        lib.SegmentationLogic(scene).start(empty, MODEL.name, "cpu")


class FakeDicomDatabase:
    """Slicer's DICOM database, reduced to the lookup the export uses."""

    def __init__(self, files: list[Path]) -> None:
        import pydicom

        self.files = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): str(f) for f in files}

    def fileForInstance(self, uid: str) -> str:  # Slicer's (camelCase) API
        return self.files.get(uid, "")


@pytest.fixture
def dicom_utils(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], bool]]:
    """A stand-in for DICOMLib.DICOMUtils; records the files of each folder it was asked to import."""
    imported: list[tuple[list[str], bool]] = []

    def import_dicom(folder: str, copyFiles: bool = False) -> None:
        imported.append((sorted(p.name for p in Path(folder).iterdir()), copyFiles))

    utils = types.SimpleNamespace(importDicom=import_dicom)
    dicomlib = types.ModuleType("DICOMLib")
    dicomlib.DICOMUtils = utils
    monkeypatch.setitem(sys.modules, "DICOMLib", dicomlib)
    return imported


def test_export_needs_a_volume_loaded_from_dicom(lib, scene, tmp_path, ct, labelmap, dicom_utils) -> None:
    volume = image_to_volume_node(scene, ct, "CT")
    job = _job(lib, tmp_path, volume, [_result(tmp_path, labelmap)])
    logic = lib.SegmentationLogic(scene)
    logic.poll(job)
    with pytest.raises(InputError, match="DICOM database"):
        logic.exportDicomSeg(job.segmentationNode)
    with pytest.raises(InputError, match="Select a segmentation"):
        logic.exportDicomSeg(None)
    assert dicom_utils == []


def test_export_writes_a_dicom_seg_of_the_source_series(
    lib, scene, tmp_path, ct, labelmap, dicom_utils, monkeypatch
) -> None:
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    files = write_dicom_series(ct, tmp_path / "ct", uid_seed="medai-module-logic-test")
    source = read_dicom_files(files)
    volume = image_to_volume_node(scene, source, "CT from DICOM")
    database = FakeDicomDatabase(files)
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(database.files))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    logic = lib.SegmentationLogic(scene)
    job = _job(lib, tmp_path, volume, [_result(tmp_path, source.with_array(labelmap.array))])
    logic.poll(job)
    job.segmentationNode.GetSegmentation().AddEmptySegment("drawn", "Drawn by hand")  # no label: value 4

    path = logic.exportDicomSeg(job.segmentationNode)

    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(files[0]).SeriesInstanceUID
    described = {int(item.SegmentNumber): item.SegmentLabel for item in seg.SegmentSequence}
    assert set(described.values()) >= {"Right lung", "Left lung", "Nodule"}
    assert seg.ContentCreatorName or seg.SeriesDescription
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (MODEL.name, MODEL.version)  # as the CLI writes
    assert dicom_utils == [([f"{seg.SOPInstanceUID}.dcm"], True)]  # a copy goes into the database


@pytest.fixture
def real_lib(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The module logic with the real catalogue."""
    return _import_logic(monkeypatch)


def test_logic_runs_the_shipped_model_in_a_real_child_process(real_lib, scene, phantom_study) -> None:
    """No fakes but Slicer's base class: real worker process, real model, real MRML result."""
    from MedAIExtension.io import read_volume_file

    ct = read_volume_file(phantom_study["nifti"], modality="CT")
    volume = image_to_volume_node(scene, ct, "Phantom CT")
    job = real_lib.SegmentationLogic(scene).run(volume, "chest-ct-lung-nodule", "cpu", timeoutSeconds=600)
    node = job.segmentationNode
    names = [
        node.GetSegmentation().GetNthSegment(i).GetName() for i in range(node.GetSegmentation().GetNumberOfSegments())
    ]
    assert names == ["Lung", "Lung lesion"]
    assert node.GetAttribute("MedAI.provider") == "torch:cpu"  # the catalogue's CPU variant of the ONNX model
    truth = read_volume_file(phantom_study["labels"])
    result = segmentation_node_to_labelmap(node, ct)
    lung = (
        2
        * np.count_nonzero((result.array == 1) & (truth.array == 1))
        / (np.count_nonzero(result.array == 1) + np.count_nonzero(truth.array == 1))
    )
    assert lung > 0.9
    assert job.tableNode.GetNumberOfRows() == 2
    assert not job.workDir.exists()

"""The MedAI Segmentation module stepping through an annotation queue (``queue.csv``) on a real headless MRML scene.

Two small chest phantoms are written as CT files, their label maps through ``medai segment``'s own output writer
(``write_outputs``: ``segmentation.seg.nrrd``, ``segmentation.nii.gz``, ``summary.json``) and the queue through
``write_annotation_queue`` from batch records; the module logic then loads the studies into the scene.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.batch.annotation_queue import write_annotation_queue
from MedAIExtension.batch.records import RETRIEVED_INPUT_DIR, StudyRecord, study_key
from MedAIExtension.errors import InputError
from MedAIExtension.io import Image, write_volume_file
from MedAIExtension.io.dicom_series import write_dicom_series
from MedAIExtension.mrml import segmentation_node_to_labelmap, volume_node_to_image
from MedAIExtension.phantom import PHANTOM_LABELS, PhantomSpec, generate_chest_phantom
from MedAIExtension.segmentation.outputs import write_outputs
from Testing.mrml.module_import import import_module_code


@pytest.fixture
def lib(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``MedAISegmentationLib.logic`` imported as Slicer would."""
    return import_module_code(monkeypatch, "MedAISegmentationLib.logic", ["MedAISegmentation"])


def _study(tmp_path: Path, name: str, seed: int, formats: str) -> tuple[Path, Path, Image, Image]:
    """A phantom CT file and a ``medai segment``-like output folder for it."""
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=(24, 20, 8), spacing=(10.0, 10.0, 12.0), seed=seed))
    source = write_volume_file(phantom.ct, tmp_path / "cts" / f"{name}.nii.gz")
    output = tmp_path / "out" / name
    write_outputs(phantom.labels, PHANTOM_LABELS, output, formats)
    return source, output, phantom.ct, phantom.labels


@pytest.fixture
def queue(tmp_path: Path) -> tuple[Path, list[tuple[str, Image, Image]]]:
    """queue.csv of two studies (the second, more uncertain, first) and, in queue order, (name, CT, labels)."""
    (tmp_path / "cts").mkdir()
    studies = {"low": (0.1, "seg.nrrd,nii.gz", 1), "high": (0.7, "nii.gz", 2)}  # one without .seg.nrrd
    records, expected = [], {}
    for name, (uncertainty, formats, seed) in studies.items():
        source, output, ct, labels = _study(tmp_path, name, seed, formats)
        records.append(
            StudyRecord(study_key(str(source)), str(source), "done", None, str(output), uncertainty=uncertainty)
        )
        expected[name] = (name, ct, labels)
    records.append(StudyRecord(study_key("failed"), "failed.nii.gz", "failed", "boom"))
    path = write_annotation_queue(records, tmp_path / "queue.csv")
    return path, [expected["high"], expected["low"]]


def _check_case(scene, nodes, title: str, ct: Image, labels: Image) -> None:
    volume, segmentation = nodes
    assert volume.GetName() == title and segmentation.GetName() == f"{title} segmentation"
    assert volume.GetScene() is scene and segmentation.GetScene() is scene
    assert np.array_equal(volume_node_to_image(volume).array, ct.array)
    assert np.array_equal(segmentation_node_to_labelmap(segmentation, labels).array, labels.array)
    names = {segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)}
    assert names == {label.name for label in PHANTOM_LABELS}


def test_stepping_replaces_the_case_in_rank_order(lib, scene, queue) -> None:
    path, expected = queue
    logic = lib.SegmentationLogic(scene)
    assert logic.queuePosition() == (-1, 0)
    assert logic.openQueue(path) == 2 and logic.queuePosition() == (-1, 2)
    before = scene.GetNumberOfNodes()

    first = logic.nextInQueue()
    _check_case(scene, first, "Queue 1/2: high", *expected[0][1:])
    assert logic.queuePosition() == (0, 2)
    loaded = scene.GetNumberOfNodes()
    assert loaded > before

    second = logic.nextInQueue()
    _check_case(scene, second, "Queue 2/2: low", *expected[1][1:])
    assert all(node.GetScene() is None for node in first), "the previous case was not removed"
    assert scene.GetNumberOfNodes() == loaded, "stepping accumulated nodes"
    with pytest.raises(InputError, match="last study"):
        logic.nextInQueue()

    back = logic.previousInQueue()
    _check_case(scene, back, "Queue 1/2: high", *expected[0][1:])
    assert logic.queuePosition() == (0, 2) and scene.GetNumberOfNodes() == loaded
    with pytest.raises(InputError, match="first study"):
        logic.previousInQueue()
    with pytest.raises(InputError, match="no study 3"):
        logic.loadQueueItem(2)


def test_bad_queue_files_are_one_clear_error(lib, scene, queue, tmp_path) -> None:
    path, _ = queue
    logic = lib.SegmentationLogic(scene)
    with pytest.raises(InputError, match="No annotation queue is open"):
        logic.nextInQueue()
    with pytest.raises(InputError, match="No annotation queue at"):
        logic.openQueue(tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InputError, match="is not an annotation queue"):
        logic.openQueue(tmp_path / "other.csv")
    (tmp_path / "badrank.csv").write_text(path.read_text().replace("\n1,", "\nfirst,", 1), encoding="utf-8")
    with pytest.raises(InputError, match="not a readable annotation queue"):
        logic.openQueue(tmp_path / "badrank.csv")

    # a study whose output folder lost its segmentation: an error, and the loaded case stays as it was
    logic.openQueue(path)
    volume, _ = logic.nextInQueue()
    count = scene.GetNumberOfNodes()
    for file in (tmp_path / "out" / "low").glob("segmentation.*"):
        file.unlink()
    with pytest.raises(InputError, match="has no segmentation"):
        logic.nextInQueue()
    assert volume.GetScene() is scene and scene.GetNumberOfNodes() == count and logic.queuePosition() == (0, 2)


def test_a_dicomweb_study_opens_from_the_series_kept_in_its_folder(lib, scene, tmp_path) -> None:
    (tmp_path / "cts").mkdir()
    _, output, ct, labels = _study(tmp_path, "remote", 3, "seg.nrrd")
    source = "dicomweb:1.2.826.0.1.3680043.8.498.1/1.2.826.0.1.3680043.8.498.2"
    records = [StudyRecord(study_key(source), source, "done", None, str(output), uncertainty=0.5)]
    path = write_annotation_queue(records, tmp_path / "queue.csv")
    logic = lib.SegmentationLogic(scene)
    logic.openQueue(path)
    with pytest.raises(InputError, match="Run medai batch with --annotation-queue"):
        logic.nextInQueue()  # no copy kept (a batch without the queue option)
    assert logic.queuePosition() == (-1, 1)

    write_dicom_series(ct, output / RETRIEVED_INPUT_DIR, uid_seed="queue-remote")
    volume, segmentation = logic.nextInQueue()
    assert volume.GetName().startswith("Queue 1/1: ")
    assert np.array_equal(volume_node_to_image(volume).array, ct.array)
    assert np.array_equal(segmentation_node_to_labelmap(segmentation, labels).array, labels.array)

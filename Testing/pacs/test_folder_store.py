"""FolderStore: round trip, already-present instances, search filters and refused files, on real DICOM files."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.pacs import (
    DicomStore,
    FolderStore,
    PacsNotFoundError,
    PacsRejectedError,
    PacsUnavailableError,
    StoreOutcome,
    open_store,
)
from Testing.pacs.conftest import PhantomSeries


def _tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_round_trip_layout_and_pixels(tmp_path: Path, phantom_series: PhantomSeries) -> None:
    store = FolderStore(tmp_path / "pacs", create=True)
    assert isinstance(store, DicomStore)
    outcome = store.store(phantom_series.files)
    assert outcome == StoreOutcome(stored=phantom_series.sop_uids, already_present=())

    expected = sorted(
        Path(phantom_series.study_uid, phantom_series.series_uid, f"{s}.dcm") for s in phantom_series.sop_uids
    )
    assert _tree(store.root) == expected  # no temporary files left behind

    [study] = store.search_studies()
    assert study.study_uid == phantom_series.study_uid
    assert (study.patient_id, study.patient_name) == ("MEDAI-PACS-1", "Pacs^MEDAI-PACS-1")
    assert study.study_date == "20260105"
    assert study.modalities == ("CT",)
    [series] = store.search_series(phantom_series.study_uid)
    assert (series.series_uid, series.modality, series.body_part) == (phantom_series.series_uid, "CT", "CHEST")
    assert series.number_of_instances == len(phantom_series.files)
    assert store.series_exists(phantom_series.study_uid, phantom_series.series_uid)
    assert not store.series_exists(phantom_series.study_uid, "1.2.3.4")

    paths = store.retrieve_series(phantom_series.study_uid, phantom_series.series_uid, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{s}.dcm" for s in phantom_series.sop_uids)
    originals = {pydicom.dcmread(f).SOPInstanceUID: f.read_bytes() for f in phantom_series.files}
    for path in paths:
        assert path.read_bytes() == originals[path.stem]
    image = read_dicom_series(tmp_path / "out")
    np.testing.assert_array_equal(image.array, phantom_series.voxels)


def test_storing_again_reports_already_present_and_keeps_files(tmp_path: Path, phantom_series: PhantomSeries) -> None:
    store = FolderStore(tmp_path / "pacs", create=True)
    store.store(phantom_series.files[:10])
    kept = store.root / phantom_series.study_uid / phantom_series.series_uid / f"{phantom_series.sop_uids[0]}.dcm"
    before = kept.stat()
    os.chmod(kept, 0o444)  # a rewrite would have to replace it; the inode and mtime must stay

    outcome = store.store(phantom_series.files)
    assert outcome.already_present == phantom_series.sop_uids[:10]
    assert outcome.stored == phantom_series.sop_uids[10:]
    after = kept.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    again = store.store([phantom_series.files[0], phantom_series.files[0]])
    assert again == StoreOutcome(stored=(), already_present=(phantom_series.sop_uids[0],) * 2)


def test_search_filters(tmp_path: Path, series_factory: Callable[..., PhantomSeries]) -> None:
    ct = series_factory("filter-ct", patient_id="PAT-A", modality="CT", seed=11)
    mr = series_factory("filter-mr", patient_id="PAT-B", modality="MR", seed=12)
    ct2 = series_factory(
        "filter-ct2", patient_id="PAT-B", modality="CT", seed=13, study_uid=mr.study_uid, series_number=2
    )
    store = FolderStore(tmp_path / "pacs", create=True)
    store.store([*ct.files, *mr.files, *ct2.files])

    assert {s.study_uid for s in store.search_studies()} == {ct.study_uid, mr.study_uid}
    assert [s.study_uid for s in store.search_studies(patient_id="PAT-A")] == [ct.study_uid]
    assert [s.study_uid for s in store.search_studies(modality="MR")] == [mr.study_uid]
    assert {s.study_uid for s in store.search_studies(modality="CT")} == {ct.study_uid, mr.study_uid}
    assert [s.study_uid for s in store.search_studies(study_uid=ct.study_uid)] == [ct.study_uid]
    assert store.search_studies(patient_id="PAT-A", modality="MR") == []
    assert store.search_studies(study_uid="1.2.3.999") == []
    [both] = store.search_studies(patient_id="PAT-B")
    assert both.modalities == ("CT", "MR")
    series = {s.series_uid: s for s in store.search_series(mr.study_uid)}
    assert set(series) == {mr.series_uid, ct2.series_uid}
    assert series[mr.series_uid].modality == "MR"
    assert store.search_series("1.2.3.999") == []


def test_refused_and_non_dicom_files(tmp_path: Path, phantom_series: PhantomSeries) -> None:
    store = FolderStore(tmp_path / "pacs", create=True)
    broken = pydicom.dcmread(phantom_series.files[0])
    del broken.SeriesInstanceUID
    broken.save_as(tmp_path / "broken.dcm")
    with pytest.raises(PacsRejectedError) as caught:
        store.store([tmp_path / "broken.dcm", phantom_series.files[1]])
    assert caught.value.failed[0][0] == phantom_series.sop_uids[0]
    assert "SeriesInstanceUID" in caught.value.failed[0][1]
    assert caught.value.stored == (phantom_series.sop_uids[1],)

    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match=r"notes\.txt"):
        store.store([tmp_path / "notes.txt"])


def test_missing_folder_is_unavailable_and_unknown_series_not_found(
    tmp_path: Path, phantom_series: PhantomSeries
) -> None:
    store = FolderStore(tmp_path / "not-mounted")
    with pytest.raises(PacsUnavailableError, match="not-mounted"):
        store.check()
    with pytest.raises(PacsUnavailableError):
        store.store(phantom_series.files[:1])
    assert not (tmp_path / "not-mounted").exists()

    (tmp_path / "not-mounted").mkdir()
    with pytest.raises(PacsNotFoundError, match=r"1\.2\.3"):
        store.retrieve_series("1.2.3", "4.5.6", tmp_path / "out")


def test_open_store(tmp_path: Path) -> None:
    store = open_store({"type": "folder", "path": str(tmp_path / "p"), "create": True, "name": "archive"})
    assert isinstance(store, FolderStore)
    assert store.name == "archive"
    store.check()
    assert (tmp_path / "p").is_dir()
    with pytest.raises(InputError, match="dicomweb, folder"):
        open_store({"type": "ftp", "path": "/x"})
    with pytest.raises(InputError, match="`path`"):
        open_store({"type": "folder"})
    shutil.rmtree(tmp_path / "p")

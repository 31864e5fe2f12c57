"""Slicer's DICOM database as a MedAI DICOM store (``MedAICommonLib.dicom_database``).

``ctkDICOMDatabase`` and ``DICOMUtils.importDicom`` exist only inside the Slicer application, so a stand-in
database indexes real DICOM files the way ctkDICOMDatabase does (patients → studies → series → files, tag lookup
by file) and the stand-in importer copies a folder into it. The DICOM objects are real (a CT series and a SEG
written by MedAI); the store's searching, retrieving and de-duplicating run unchanged.
"""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAIExtension.dicom import write_dicom_seg
from MedAIExtension.io import Image, read_dicom_series, write_dicom_series
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.pacs.errors import PacsUnavailableError
from MedAIExtension.pacs.records import DicomStore
from Testing.mrml.module_import import import_module_code


class StandInDicomDatabase:
    """ctkDICOMDatabase reduced to its index queries (stand-in: the real one needs the Slicer application)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir()
        self.isOpen = True
        self.datasets: dict[str, pydicom.Dataset] = {}  # file -> header

    def add(self, path: Path) -> None:
        target = self.folder / f"{len(self.datasets):05d}.dcm"
        shutil.copyfile(path, target)
        self.datasets[str(target)] = pydicom.dcmread(target, stop_before_pixels=True)

    def patients(self) -> list[str]:
        return sorted({str(ds.PatientID) for ds in self.datasets.values()})

    def studiesForPatient(self, patient: str) -> list[str]:
        return sorted({str(ds.StudyInstanceUID) for ds in self.datasets.values() if ds.PatientID == patient})

    def seriesForStudy(self, study: str) -> list[str]:
        return sorted({str(ds.SeriesInstanceUID) for ds in self.datasets.values() if ds.StudyInstanceUID == study})

    def filesForSeries(self, series: str) -> list[str]:
        return sorted(f for f, ds in self.datasets.items() if ds.SeriesInstanceUID == series)

    def fileValue(self, path: str, tag: str) -> str:
        group, element = (int(part, 16) for part in tag.split(","))
        element_value = self.datasets[path].get((group, element))
        return "" if element_value is None else str(element_value.value)

    def fileForInstance(self, uid: str) -> str:
        return next((f for f, ds in self.datasets.items() if ds.SOPInstanceUID == uid), "")


@pytest.fixture
def store_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return import_module_code(monkeypatch, "MedAICommonLib.dicom_database")


@pytest.fixture
def study(tmp_path: Path) -> dict[str, Path]:
    array = np.full((6, 16, 16), -800, dtype=np.int16)
    array[2:4, 5:10, 5:10] = 40
    files = write_dicom_series(
        Image(array, np.diag([-0.8, -0.8, 2.0, 1.0]), modality="CT"),
        tmp_path / "ct",
        patient_id="SLICER-1",
        uid_seed="medai-dicom-database-store",
    )
    source = read_dicom_series(tmp_path / "ct")
    seg = write_dicom_seg(
        source.with_array((array > 0).astype(np.uint8)),
        source,
        [SegmentLabel(1, "Nodule", (1.0, 1.0, 0.0))],
        tmp_path / "seg.dcm",
        algorithm_name="test",
        algorithm_version="1",
    )
    return {"ct": tmp_path / "ct", "files": files, "seg": seg}


def test_results_land_under_their_patient_and_study(store_module, study, tmp_path: Path) -> None:
    database = StandInDicomDatabase(tmp_path / "database")
    for path in study["files"]:
        database.add(path)
    imported = []

    def import_dicom(folder: str, copyFiles: bool = False) -> None:
        imported.append(copyFiles)
        for path in sorted(Path(folder).iterdir()):
            database.add(path)

    store = store_module.SlicerDicomDatabaseStore(database, import_dicom)
    assert isinstance(store, DicomStore)
    outcome = store.store([study["seg"]])
    seg = pydicom.dcmread(study["seg"])
    assert outcome.stored == (str(seg.SOPInstanceUID),) and imported == [True]
    assert store.store([study["seg"]]).already_present == (str(seg.SOPInstanceUID),) and imported == [True]

    [record] = store.search_studies(patient_id="SLICER-1")
    assert record.study_uid == str(seg.StudyInstanceUID) and record.modalities == ("CT", "SEG")
    assert store.search_studies(patient_id="SOMEONE-ELSE") == [] and store.search_studies(modality="MR") == []
    series = {s.modality: s for s in store.search_series(record.study_uid)}
    assert series["CT"].number_of_instances == 6 and series["CT"].body_part == "CHEST"
    assert store.series_exists(record.study_uid, str(seg.SeriesInstanceUID))
    copies = store.retrieve_series(record.study_uid, series["SEG"].series_uid, tmp_path / "out")
    assert [p.name for p in copies] == [f"{seg.SOPInstanceUID}.dcm"]
    assert copies[0].read_bytes() == study["seg"].read_bytes()


def test_no_database_is_a_clear_error(store_module, study) -> None:
    store = store_module.SlicerDicomDatabaseStore(types.SimpleNamespace(isOpen=False), print)
    with pytest.raises(PacsUnavailableError, match="Open the DICOM module"):
        store.store([study["seg"]])

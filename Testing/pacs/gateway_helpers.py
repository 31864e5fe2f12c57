"""Helpers of the gateway tests and bench: phantom chest CT studies, a gateway configuration, PACS queries."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import yaml

from MedAIExtension.gateway.config import GatewayConfig, parse_config
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.pacs.orthanc import OrthancClient
from Testing.phantoms import SMALL_CHEST_TWO_NODULES

#: The phantom of the gateway tests: a 4A (solid ~11 mm) and a 2 (ground-glass) nodule; tracked in ~5 s.
PHANTOM = SMALL_CHEST_TWO_NODULES

RULE_LUNG = {
    "name": "lung-nodules",
    "match": {"modality": "CT", "body_part": "CHEST|LUNG"},
    "pipeline": "nodule-tracking",
    "model": None,  # the classical detector: fast enough for tests; production rules name the model
}


def config_data(pacs_url: str, workdir: Path, **overrides: Any) -> dict[str, Any]:
    """A gateway configuration mapping for an Orthanc at ``pacs_url`` with short retry delays."""
    data: dict[str, Any] = {
        "pacs": {"type": "orthanc", "url": pacs_url, "poll_seconds": 0.3},
        "workdir": str(workdir),
        "max_attempts": 4,
        "retry_seconds": [0.5, 1, 2],
        "rules": [dict(RULE_LUNG)],
    }
    data.update(overrides)
    return data


def make_config(pacs_url: str, workdir: Path, **overrides: Any) -> GatewayConfig:
    """A validated :class:`GatewayConfig` (see :func:`config_data`)."""
    return parse_config(config_data(pacs_url, workdir, **overrides), "test")


def write_config_file(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as YAML."""
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def dicom_files(folder: Path) -> list[Path]:
    """The .dcm files of a folder, sorted."""
    return sorted(folder.glob("*.dcm"))


def upload(store: DicomWebStore, folder: Path, orthanc_url: str | None = None) -> str:
    """STOW a series folder; returns its StudyInstanceUID. With ``orthanc_url``, wait until Orthanc calls it stable."""
    files = dicom_files(folder)
    store.store(files)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    if orthanc_url is not None:
        wait_stable(orthanc_url, study_uid)
    return study_uid


def wait_stable(orthanc_url: str, study_uid: str, timeout: float = 30.0) -> None:
    """Wait until Orthanc's change feed has a StableStudy change for ``study_uid``."""
    client = OrthancClient(orthanc_url)
    study_id = wait_for(lambda: client.study_id(study_uid), timeout, "the study to arrive")

    def stable() -> bool:
        changes, _, _ = client.changes(since=0, limit=10000)
        return any(c.change_type == "StableStudy" and c.resource_id == study_id for c in changes)

    wait_for(stable, timeout, "Orthanc's StableStudy change", interval=0.2)


def series_by_modality(store: DicomWebStore, study_uid: str) -> dict[str, list[Any]]:
    """The study's series grouped by modality."""
    out: dict[str, list[Any]] = {}
    for series in store.search_series(study_uid):
        out.setdefault(series.modality, []).append(series)
    return out


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def journal_states(workdir: Path) -> list[tuple[int, str, str]]:
    """(id, rule, state) of every job, read straight from the journal file (works while a gateway runs)."""
    path = workdir / "journal.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return [tuple(row) for row in db.execute("SELECT id, rule, state FROM jobs ORDER BY id")]
        except sqlite3.OperationalError:
            return []


def copy_series(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of a series as a new study (new Study/Series/SOP Instance UIDs), with attributes changed.

    Values are written as given, even when they break the VR (hostile test data), with pydicom's validation off.
    """
    from pydicom import config as pydicom_config

    target.mkdir(parents=True)
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    mode = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        for path in sorted(source.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            for keyword, value in changes.items():
                setattr(ds, keyword, value(ds) if callable(value) else value)
            ds.save_as(target / path.name)
    finally:
        pydicom_config.settings.writing_validation_mode = mode
    return target


def post_instances(orthanc_url: str, folder: Path) -> None:
    """Store every file of ``folder`` through Orthanc's REST API as it is (no DICOMweb parsing on the way)."""
    import requests

    for path in dicom_files(folder):
        requests.post(f"{orthanc_url}/instances", data=path.read_bytes(), timeout=30).raise_for_status()


def wait_settled(orthanc_url: str, timeout: float = 30.0) -> None:
    """Wait until no study in Orthanc still waits for its StableStudy change (all are stable)."""
    import requests

    def settled() -> bool:
        studies = requests.get(f"{orthanc_url}/studies", params={"expand": ""}, timeout=30).json()
        return all(study.get("IsStable") for study in studies)

    wait_for(settled, timeout, "Orthanc's studies to become stable", interval=0.2)


def start_at_feed_end(workdir: Path, orthanc_url: str) -> None:
    """Make a new gateway work folder read Orthanc's change feed from its current end (a shared Orthanc holds
    other tests' studies, which this gateway must not process)."""
    from MedAIExtension.gateway.journal import Journal

    wait_settled(orthanc_url)
    journal = Journal(workdir / "journal.sqlite")
    try:
        journal.record_candidates([], ("orthanc-changes", str(OrthancClient(orthanc_url).last_change())))
    finally:
        journal.close()


def instance_counts(store: DicomWebStore, study_uid: str) -> dict[str, list[int | None]]:
    """Instances per series of the study, grouped by modality (``{"SEG": [1], "SR": [1], "CT": [80]}``)."""
    return {
        modality: sorted(s.number_of_instances for s in items)  # type: ignore[type-var]
        for modality, items in series_by_modality(store, study_uid).items()
    }

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

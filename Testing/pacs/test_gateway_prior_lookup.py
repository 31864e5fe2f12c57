"""Prior-study lookup for any PatientID (issue 15).

Orthanc's DICOMweb plugin does not decode percent-encoded QIDO-RS values, so a PatientID with a space or any of
``/ ; & + # , = % ( ) '`` used to match nothing and every follow-up of such a patient passed for a baseline. The
gateway now asks Orthanc's REST ``/tools/find`` (or, on other DICOMweb servers, a broader QIDO-RS query) and
matches the PatientID exactly itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from MedAIExtension.dicom.sr import read_tracking_sr
from MedAIExtension.gateway.boundary import PacsBoundary
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.pacs.orthanc import OrthancClient
from MedAIExtension.phantom.followup import write_phantom_pair
from Testing.pacs.conftest import PhantomSeries
from Testing.pacs.gateway_helpers import (
    PHANTOM,
    copy_series,
    make_config,
    post_instances,
    series_by_modality,
    start_at_feed_end,
    upload,
)
from Testing.pacs.orthanc_server import OrthancServer

pytestmark = pytest.mark.slow
CHARACTERS = " /;&+#,=%()'"


def test_every_character_finds_the_patients_studies_and_only_them(
    shared_orthanc: OrthancServer, series_factory: Callable[..., PhantomSeries], tmp_path: Path
) -> None:
    source = series_factory("prior-lookup", patient_id="LOOKUP", seed=7).folder
    for index, char in enumerate(CHARACTERS):
        for patient in (f"PL{char}1", f"PL{char}12"):  # a decoy whose ID starts the same
            post_instances(
                shared_orthanc.url, copy_series(source, tmp_path / f"{index}-{len(patient)}", PatientID=patient)
            )
    store = DicomWebStore(shared_orthanc.dicomweb_url)
    via_orthanc = PacsBoundary(store, OrthancClient(shared_orthanc.url), GatewayLog(None, quiet=True))
    via_dicomweb = PacsBoundary(store, None, GatewayLog(None, quiet=True))
    for char in CHARACTERS:
        patient = f"PL{char}1"
        for pacs in (via_orthanc, via_dicomweb):
            found = pacs.patient_studies(patient, [])
            assert found.trusted and [s.patient_id for s in found.studies] == [patient], (char, pacs.orthanc)


def test_a_follow_up_of_a_patient_id_with_every_character_reuses_the_priors_tracking_uids(
    shared_orthanc: OrthancServer, tmp_path: Path
) -> None:
    patient = "P " + CHARACTERS.strip() + "X"
    write_phantom_pair(tmp_path / "pair", baseline=PHANTOM, volume_factors=(1.5, 1.0), patient_id=patient)
    store = DicomWebStore(shared_orthanc.dicomweb_url)
    config = make_config(shared_orthanc.url, tmp_path / "work")
    start_at_feed_end(config.workdir, shared_orthanc.url)
    uids = {}
    for timepoint in ("baseline", "followup"):
        uids[timepoint] = upload(store, tmp_path / "pair" / timepoint / "ct", shared_orthanc.url)
        gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
        try:
            gateway.run(once=True, max_seconds=120)
        finally:
            gateway.close()
    journal = Journal(config.workdir / "journal.sqlite")
    try:
        jobs = {job.study_uid: job for job in journal.jobs()}
    finally:
        journal.close()
    follow = jobs[uids["followup"]]
    assert follow.state is JobState.DONE and follow.summary["prior"] is True and follow.summary["prior_report"] is True
    assert "prior_lookup" not in follow.summary  # the lookup was trusted

    def tracking_uids(study_uid: str, folder: Path) -> set[str]:
        [sr] = series_by_modality(store, study_uid)["SR"]
        [path] = store.retrieve_series(study_uid, sr.series_uid, folder)
        return {str(group["tracking_uid"]) for group in read_tracking_sr(path)}

    prior = tracking_uids(uids["baseline"], tmp_path / "sr-baseline")
    assert prior and prior <= tracking_uids(uids["followup"], tmp_path / "sr-followup")

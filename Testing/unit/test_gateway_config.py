"""Gateway configuration, routing rules, triage, the job journal's state machine and the logs (no PACS needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.gateway.config import Pipeline, load_config, parse_config
from MedAIExtension.gateway.journal import JobState, Journal, StudyCandidate
from MedAIExtension.interop.triage import from_alert_labels, from_lung_rads
from MedAIExtension.models.catalog import load_catalog


def _data(**overrides: object) -> dict:
    data = {
        "pacs": {"type": "orthanc", "url": "http://127.0.0.1:8042", "password_env": "PACS_PW", "username": "u"},
        "workdir": "work",
        "rules": [
            {"name": "lung", "match": {"modality": "CT", "body_part": "CHEST|LUNG"}, "pipeline": "nodule-tracking"}
        ],
    }
    data.update(overrides)
    return data


def test_a_valid_file_reads_into_a_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "pacs: {type: orthanc, url: 'http://127.0.0.1:8042/', username: medai, password_env: PW}\n"
        "workdir: state\nshadow: true\nretry_seconds: [1, 5]\n"
        "rules:\n  - {name: seg, match: {modality: CT}, pipeline: segmentation, alert_labels: [nodule]}\n"
    )
    config = load_config(path)
    assert config.workdir == tmp_path / "state"  # relative to the file
    assert config.pacs.url == "http://127.0.0.1:8042" and config.pacs.dicomweb_url == "http://127.0.0.1:8042/dicom-web"
    assert config.shadow and config.rules[0].pipeline is Pipeline.SEGMENTATION
    assert config.rules[0].model == "chest-ct-lung-nodule" and config.rules[0].alert_labels == ("nodule",)
    assert [config.retry_delay(n) for n in (1, 2, 3, 9)] == [1.0, 5.0, 5.0, 5.0]
    assert "PW" not in repr(config.pacs)  # the credential section is not shown


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pacs": {"type": "pacs-o-matic", "url": "http://x"}}, "pacs.type"),
        ({"pacs": {"type": "orthanc", "url": "127.0.0.1:8042"}}, "pacs.url"),
        ({"pacs": {"type": "orthanc", "url": "http://x", "pasword": "typo"}}, "'pasword'"),
        ({"rules": []}, "at least one rule"),
        ({"rules": [{"pipeline": "segmentation", "match": {"modality": "CT("}}]}, "regular expression"),
        ({"rules": [{"pipeline": "radiomics"}]}, "nodule-tracking"),
        ({"rules": [{"pipeline": "segmentation", "model": None}]}, "needs a model"),
        ({"rules": [{"name": "a", "pipeline": "segmentation"}, {"name": "a", "pipeline": "segmentation"}]}, "unique"),
        ({"rules": [{"pipeline": "explainability", "method": "lime"}]}, "gradcam"),
        ({"rules": [{"pipeline": "explainability", "model": "chest-ct-nodule-classifier"}]}, "without one"),
        ({"export": {"key_file": "k"}}, "export.path"),
        ({"export": {"path": "x", "date_shift_days": 0}}, "non-zero"),
        ({"workers": 0}, "workers"),
        ({"device": "tpu"}, "device"),
        ({"colour": "blue"}, "'colour'"),
        ({"pacs": {"type": "dimse", "port": 104, "called_ae": "PACS"}}, "pacs.host"),
        ({"pacs": {"type": "dimse", "host": "pacs", "port": 70000, "called_ae": "PACS"}}, "pacs.port"),
        ({"pacs": {"type": "dimse", "host": "pacs", "port": 104, "called_ae": "A-TITLE-LONGER-THAN-16"}}, "called_ae"),
        ({"pacs": {"type": "dimse", "host": "pacs", "port": 104, "called_ae": "PACS", "url": "http://x"}}, "'url'"),
        ({"ris": {"port": 2575}}, "ris.host"),
        ({"ris": {"host": "ris", "port": 2575, "sending_facility": "A|B"}}, "ris.sending_facility"),
        ({"listen": {"port": 11112}}, "allowed_calling_aes"),
        ({"listen": {"port": 11112, "allowed_calling_aes": ["CT\\01"]}}, "allowed_calling_aes"),
        ({"listen": {"port": 11112, "allowed_calling_aes": ["CT01"], "stable_seconds": 0}}, "stable_seconds"),
    ],
)
def test_configuration_mistakes_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(InputError, match="Gateway configuration") as caught:
        parse_config(_data(**change), "gateway.yaml", Path("/tmp"))
    assert message in str(caught.value)


def test_missing_or_broken_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("pacs: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_rules_match_modality_body_part_and_description_case_insensitively() -> None:
    rule = parse_config(_data(), "t", Path("/tmp")).rules[0]
    assert rule.matches("CT", "chest", "Thorax 1mm")
    assert rule.matches("CT", "LUNG", "")
    assert not rule.matches("CT", "HEAD", "")
    assert not rule.matches("MR", "CHEST", "")
    assert not rule.matches("CTX", "CHEST", "")  # patterns match the whole value


@pytest.mark.parametrize(
    ("category", "priority"), [("4X", 1), ("4B", 1), ("4BS", 1), ("4A", 2), ("3", 3), ("0", 3), ("2", 5), ("1", 5)]
)
def test_lung_rads_sets_the_priority(category: str, priority: int) -> None:
    triage = from_lung_rads(category, "why")
    assert triage.priority == priority and triage.reason == f"Lung-RADS {category}: why"


def test_alert_labels_raise_the_priority_of_a_segmentation() -> None:
    assert from_alert_labels({"nodule": 0.4, "lung": 3000.0}, ("nodule",)).priority == 2
    assert from_alert_labels({"nodule": 0.0, "lung": 3000.0}, ("nodule",)).priority == 5
    assert from_alert_labels({"lung": 3000.0}, ()).priority == 5
    with pytest.raises(ValueError, match="Lung-RADS"):
        from_lung_rads("5")


def test_the_journal_neither_loses_nor_repeats_a_job(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    created = journal.record_candidates(
        [StudyCandidate("1.2.3", "lung", "1.2.3.4"), StudyCandidate("1.2.9", None, detail="no rule")],
        ("feed", "17"),
    )
    assert [(j.state, j.rule) for j in created] == [(JobState.QUEUED, "lung"), (JobState.IGNORED, "")]
    assert journal.record_candidates([StudyCandidate("1.2.3", "lung", "1.2.3.4")], ("feed", "18")) == []
    assert journal.cursor("feed") == "18"

    job = journal.claim()
    assert job is not None and job.state is JobState.RUNNING and job.attempts == 1
    assert journal.claim() is None  # the only job is taken
    journal.close()

    journal = Journal(tmp_path / "journal.sqlite")  # the gateway was killed while running it
    assert journal.recover() == 1
    job = journal.claim()
    assert job.state is JobState.RUNNING and job.attempts == 2
    job = journal.results_ready(job.id, ["results/seg.dcm"], 2, "high", "Lung-RADS 4A", {"nodules": 1})
    stored = journal.claim()
    assert stored.state is JobState.STORING and stored.store_attempts == 1
    journal.close()

    journal = Journal(tmp_path / "journal.sqlite")  # killed while storing: back to results, not recomputed
    assert journal.recover() == 1
    again = journal.claim()
    assert again.state is JobState.STORING and again.attempts == 2 and again.results == ("results/seg.dcm",)
    later = journal.retry_later(again.id, JobState.OUTBOX, 60.0, "STOW rejected")
    assert journal.claim() is None and later.next_at > time.time()
    assert journal.claim(now=time.time() + 61).state is JobState.STORING
    done = journal.finish(again.id, JobState.DONE)
    assert done.latency_seconds is not None and done.latency_seconds >= 0
    assert journal.pending() == 0
    journal.close()


def test_a_foreign_file_as_journal_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite").write_text("this is not a database" * 100)
    with pytest.raises(InputError, match="cannot be opened"):
        Journal(tmp_path / "journal.sqlite")


def test_logs_carry_no_study_uid_and_scrub_uids_from_messages(tmp_path: Path) -> None:
    import io
    import json

    from MedAIExtension.gateway.logs import GatewayLog, study_ref

    stream = io.StringIO()
    log = GatewayLog(tmp_path / "logs" / "gateway.log", stream=stream)
    study = "1.2.826.0.1.3680043.8.498.4711"
    log("job_failed", level="error", study_uid=study, error="Series 1.2.826.0.1.3680043.8.498.99 at 127.0.0.1:8042")
    log.close()
    [line] = (tmp_path / "logs" / "gateway.log").read_text().splitlines()
    record = json.loads(line)
    assert record["study"] == study_ref(study) and len(record["study"]) == 12
    assert record["error"] == "Series <uid> at 127.0.0.1:8042"
    assert "3680043" not in line and stream.getvalue().strip() == line


def test_an_explainability_rule_explains_whole_series_with_a_segmentation_model_by_default() -> None:
    """A whole series has no ROI, so the default is a model that explains the lesion label over all of it."""
    config = parse_config(_data(rules=[{"pipeline": "explainability"}]), "gateway.yaml", Path("/tmp"))
    model = config.rules[0].model
    assert model is not None and not load_catalog().get(model).is_classifier


def test_dimse_ris_and_listen_sections() -> None:
    data = _data(
        pacs={"type": "dimse", "host": "pacs.example", "port": 104, "called_ae": "PACS", "calling_ae": "MEDAI"},
        ris={"host": "ris.example", "port": 2575, "receiving_application": "RIS", "fhir_folder": "fhir"},
        listen={"ae_title": "MEDAI", "port": 11112, "allowed_calling_aes": ["CT01", "PACS"], "stable_seconds": 3},
    )
    config = parse_config(data, "gateway.yaml", Path("/tmp"))
    assert config.pacs.type == "dimse" and config.pacs.dimse is not None
    assert (config.pacs.dimse.host, config.pacs.dimse.port, config.pacs.dimse.called_ae) == (
        "pacs.example",
        104,
        "PACS",
    )
    assert (
        config.ris is not None
        and config.ris.fhir_folder == Path("/tmp/fhir")
        and config.ris.sending_application == "MEDAI"
    )
    assert config.listen is not None and config.listen.allowed_calling_aes == ("CT01", "PACS")
    assert config.listen.address == "127.0.0.1"  # loopback unless told otherwise

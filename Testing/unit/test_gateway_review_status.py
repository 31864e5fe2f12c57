"""How ``medai worklist`` words a reader's decisions on a gateway job, and which stored object a review opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from MedAIExtension.gateway.journal import Job, JobState
from MedAIExtension.gateway.results import RESULTS_KEY, review_folder, review_status, stored_seg
from MedAIExtension.review.store.decisions import DECISIONS_FILE, DecisionStore

SEG = {"modality": "SEG", "series_uid": "1.2.826.0.1.3680043.8.498.10", "sop_uid": "1.2.826.0.1.3680043.8.498.11"}
SR = {"modality": "SR", "series_uid": "1.2.826.0.1.3680043.8.498.20", "sop_uid": "1.2.826.0.1.3680043.8.498.21"}


def _job(job_id: int = 7, summary: dict[str, object] | None = None) -> Job:
    return Job(
        id=job_id,
        study_uid="1.2.826.0.1.3680043.8.498.1",
        rule="lung-nodules",
        series_uid="1.2.826.0.1.3680043.8.498.2",
        state=JobState.DONE,
        attempts=1,
        store_attempts=1,
        next_at=0.0,
        detail="",
        priority=2,
        priority_label="soon",
        priority_reason="",
        results=(),
        summary=summary or {},
        stable_at=None,
        created_at=0.0,
        started_at=None,
        finished_at=1.0,
    )


def test_nobody_reviewed_it_is_empty(tmp_path: Path) -> None:
    assert review_status(tmp_path, _job()) == ""


def test_study_verdict_and_finding_counts(tmp_path: Path) -> None:
    folder = review_folder(tmp_path, _job())
    assert folder == tmp_path / "review" / "job-7"
    folder.mkdir(parents=True)
    with DecisionStore.for_result(folder) as store:
        store.add("accepted", "dr_a", finding_id="N1")
        store.add("rejected", "dr_a", finding_id="N2")
        store.add("rejected", "dr_a", finding_id="N3")
        store.add("commented", "dr_b", finding_id="N1", comment="grew?")  # a comment does not undo the verdict
        store.add("rejected", "dr_a")
        store.add("accepted", "dr_b")  # the latest verdict on the study wins
    assert review_status(tmp_path, _job()) == "accepted by dr_b; findings: 1 accepted, 2 rejected"


def test_comments_only(tmp_path: Path) -> None:
    folder = review_folder(tmp_path, _job())
    folder.mkdir(parents=True)
    with DecisionStore.for_result(folder) as store:
        store.add("commented", "dr_c", comment="compare with the prior")
    assert review_status(tmp_path, _job()) == "commented by dr_c"


def test_a_damaged_store_is_said_not_raised(tmp_path: Path) -> None:
    path = review_folder(tmp_path, _job()) / DECISIONS_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database at all" * 10)
    assert review_status(tmp_path, _job()).startswith("decisions unreadable (")


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        ([SR, SEG], SEG),
        ([SR], None),  # an explanation or a report only
        (None, None),  # a job journaled before the objects were recorded
        ([{**SEG, "sop_uid": "../../etc"}], None),  # not a UID: never used
        ("SEG", None),
    ],
)
def test_the_reviewed_object_is_the_stored_seg(objects: object, expected: dict[str, str] | None) -> None:
    summary = {} if objects is None else {RESULTS_KEY: objects}
    assert stored_seg(_job(summary=summary)) == expected

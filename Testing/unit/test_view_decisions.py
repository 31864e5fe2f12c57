"""The decisions store of `medai view`: round trip, latest decision, validation, append-only, and a writer process
killed with SIGKILL between decisions losing none of the decisions it committed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.review.store.decisions import DECISIONS_FILE, DecisionStore, result_reference

REPO = Path(__file__).resolve().parents[2]


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def test_round_trip_survives_reopening(tmp_path: Path) -> None:
    """Every field of every decision comes back after the store is closed and opened again, in order."""
    with DecisionStore.for_result(tmp_path) as store:
        first = store.add("accepted", " dr_a ", finding_id="Lung", comment="clean margins", result_ref="1.2.3")
        second = store.add("rejected", "Doe^Jane", result_ref="1.2.3")
    assert (tmp_path / DECISIONS_FILE).is_file()
    with DecisionStore.for_result(tmp_path) as store:
        history = store.history()
    assert history == [first, second]
    assert (first.scope, first.finding_id, first.decision, first.comment, first.reader, first.result_ref) == (
        "finding",
        "Lung",
        "accepted",
        "clean margins",
        "dr_a",
        "1.2.3",
    )
    assert (second.scope, second.finding_id, second.reader) == ("study", "", "Doe^Jane")
    assert first.time.endswith("+00:00") and first.time <= second.time
    raw = _raw(tmp_path / DECISIONS_FILE)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_latest_decision_wins_and_comments_keep_the_verdict(tmp_path: Path) -> None:
    with DecisionStore.for_result(tmp_path) as store:
        store.add("accepted", "dr_a", finding_id="Nodule 1")
        rejected = store.add("rejected", "dr_b", finding_id="Nodule 1", comment="vessel, not a nodule")
        store.add("commented", "dr_a", finding_id="Nodule 1", comment="agree with dr_b")
        only_comment = store.add("commented", "dr_a", finding_id="Airway", comment="check the carina")
        store.add("rejected", "dr_a")
        study = store.add("accepted", "dr_a")
        latest = store.latest()
        assert latest == {
            ("finding", "Nodule 1"): rejected,
            ("finding", "Airway"): only_comment,
            ("study", ""): study,
        }
        assert store.study_decision() == study
        assert len(store.history()) == 6


def test_result_ref_selects_the_decisions_on_that_result(tmp_path: Path) -> None:
    with DecisionStore.for_result(tmp_path) as store:
        old = store.add("accepted", "dr_a", finding_id="Lung", result_ref="1.2.old")
        new = store.add("rejected", "dr_a", finding_id="Lung", result_ref="1.2.new")
        unbound = store.add("commented", "dr_a", finding_id="Airway", comment="x")
        assert store.history(result_ref="1.2.old") == [old, unbound]
        assert store.latest(result_ref="1.2.new")[("finding", "Lung")] == new
        assert store.latest()[("finding", "Lung")] == new
    assert result_reference(tmp_path) == ""  # no segmentation.dcm in this folder


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decision": "approved", "reader": "dr_a"}, "Unknown decision 'approved'"),
        ({"decision": "accepted", "reader": "  "}, "reader name is empty"),
        ({"decision": "accepted", "reader": "dr\\a"}, "backslash"),
        ({"decision": "accepted", "reader": "x" * 65}, "at most 64"),
        ({"decision": "commented", "reader": "dr_a", "comment": ""}, "comment is empty"),
        ({"decision": "accepted", "reader": "dr_a", "finding_id": " "}, "finding id is empty"),
    ],
)
def test_bad_decisions_are_refused_and_nothing_is_written(tmp_path: Path, kwargs: dict[str, str], message: str) -> None:
    with DecisionStore.for_result(tmp_path) as store:
        store.add("accepted", "dr_a")
        with pytest.raises(InputError, match=message):
            store.add(**kwargs)  # type: ignore[arg-type]
        assert len(store.history()) == 1


def test_history_is_append_only(tmp_path: Path) -> None:
    with DecisionStore.for_result(tmp_path) as store:
        store.add("accepted", "dr_a", finding_id="Lung")
    raw = _raw(tmp_path / DECISIONS_FILE)
    for statement in ("UPDATE decisions SET decision = 'rejected'", "DELETE FROM decisions"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(statement)
    raw.close()
    with DecisionStore.for_result(tmp_path) as store:
        assert [r.decision for r in store.history()] == ["accepted"]


def test_other_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database", encoding="utf-8")
    with pytest.raises(InputError, match="not a MedAI decisions file"):
        DecisionStore.open(text)
    other = tmp_path / "other.sqlite"
    raw = _raw(other)
    raw.execute("CREATE TABLE t (x)")
    raw.close()
    with pytest.raises(InputError, match="not a MedAI decisions file"):
        DecisionStore.open(other)
    with pytest.raises(InputError, match="does not exist"):
        DecisionStore.for_result(tmp_path / "missing")
    store = DecisionStore.for_result(tmp_path)
    store.close()
    with pytest.raises(InputError, match="closed"):
        store.history()


DECIDING_CHILD = r"""
import sys
from MedAIExtension.review.store.decisions import DecisionStore
store = DecisionStore.open(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    record = store.add(("accepted", "rejected")[i % 2], "dr_kill", finding_id=f"N{i % 5}", comment=f"#{i}")
    print(record.id, i, flush=True)  # printed only after the commit
    i += 1
"""


def test_writer_killed_between_decisions_keeps_every_committed_one(tmp_path: Path) -> None:
    """A server killed with SIGKILL (no close, no cleanup) while deciding loses no decision it had committed."""
    path = tmp_path / DECISIONS_FILE
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", DECIDING_CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    lines: list[str] = []
    while len(lines) < 25:
        line = child.stdout.readline()
        assert line, f"the deciding child stopped early: {child.stderr.read()}"
        lines.append(line.strip())
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    lines += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    raw = _raw(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    with DecisionStore.open(path) as store:
        history = store.history()
        by_id = {record.id: record for record in history}
        for line in lines:
            record_id, i = (int(v) for v in line.split())
            assert by_id[record_id].comment == f"#{i}"
        # at most the one decision committed between its commit and its print is extra; none is partial
        assert len(lines) <= len(history) <= len(lines) + 1
        assert [r.comment for r in history] == [f"#{i}" for i in range(len(history))]
        last = history[-1]
        assert store.latest()[("finding", last.finding_id)] == last
        store.add("accepted", "dr_after")  # and deciding goes on
        assert len(store.history()) == len(history) + 1

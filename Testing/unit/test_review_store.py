"""The review project database: real SQLite files, real child processes, tiny phantom volumes."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
from MedAIExtension.review.schema import APPLICATION_ID
from MedAIExtension.review.store import (
    DEFAULT_ARTIFACTS,
    SCHEMA_VERSION,
    ImageRole,
    ProjectLockedError,
    ReviewStore,
    image_sha256,
)

REPO = Path(__file__).resolve().parents[2]
N_VOLUMES = 4


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four distinct tiny phantom CTs as .nii.gz, and the first one again as NRRD (same voxels and geometry)."""
    folder = tmp_path_factory.mktemp("volumes")
    ct = generate_chest_phantom(PhantomSpec(size_ijk=(20, 20, 12), spacing=(9.0, 9.0, 12.0), seed=3)).ct
    files: dict[str, Path] = {}
    for n in range(N_VOLUMES):
        files[f"v{n}"] = write_volume_file(ct.with_array((ct.array + 7 * n).astype(np.int16)), folder / f"v{n}.nii.gz")
    files["v0_nrrd"] = write_volume_file(ct, folder / "v0_copy.nrrd")
    return files


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    with ReviewStore.create(tmp_path / "review.medai-review", "test project"):
        pass
    return tmp_path / "review.medai-review"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


# ---- creating and opening ------------------------------------------------------------------------------------
def test_create_sets_wal_version_and_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "p.medai-review"
    with ReviewStore.create(path, "Nodule GAN", artifacts=("checkerboard", "other")) as store:
        info = store.project_info()
        assert (info["name"], info["schema_version"], info["artifacts"]) == (
            "Nodule GAN",
            SCHEMA_VERSION,
            ["checkerboard", "other"],
        )
        assert info["images"] == {"synthetic": 0, "real": 0} and info["grades"] == 0
        assert store._db().execute("PRAGMA foreign_keys").fetchone()[0] == 1
    raw = _raw(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        ReviewStore.create(path, "again")
    assert path.read_bytes() == before
    with pytest.raises(InputError, match="listed twice"):
        ReviewStore.create(tmp_path / "q.sqlite", "dup words", artifacts=("Other", "other"))
    assert not (tmp_path / "q.sqlite").exists()
    with ReviewStore.open(path) as store:
        assert store.name == "Nodule GAN"


def test_open_refuses_files_that_are_not_projects(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        ReviewStore.open(tmp_path / "missing.sqlite")
    text = tmp_path / "notes.sqlite"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a MedAI review project"):
        ReviewStore.open(text)
    other = tmp_path / "other.sqlite"
    raw = _raw(other)
    raw.execute("CREATE TABLE t (x)")
    raw.close()
    before = other.read_bytes()
    with pytest.raises(InputError, match="not a MedAI review project"):
        ReviewStore.open(other)
    assert other.read_bytes() == before  # not switched to WAL, not touched


def test_a_project_from_a_newer_schema_is_refused_unchanged(project: Path) -> None:
    raw = _raw(project)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    digest = hashlib.sha256(project.read_bytes()).hexdigest()
    with pytest.raises(InputError) as error:
        ReviewStore.open(project)
    message = str(error.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message and f"schema version {SCHEMA_VERSION}" in message
    assert "Update MedAI" in message
    assert hashlib.sha256(project.read_bytes()).hexdigest() == digest


def test_a_version_1_project_is_migrated_keeping_its_grades(tmp_path: Path, volumes: dict[str, Path]) -> None:
    # The grading-only layout of schema version 1, written by hand as an old MedAI left it (rollback journal).
    path = tmp_path / "old.sqlite"
    raw = _raw(path)
    for statement in (
        "CREATE TABLE project (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, created_at TEXT NOT NULL,"
        " artifacts TEXT NOT NULL)",
        "CREATE TABLE images (id INTEGER PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('synthetic', 'real')),"
        " path TEXT NOT NULL, sha256 TEXT NOT NULL, shape TEXT NOT NULL, spacing TEXT NOT NULL,"
        " modality TEXT NOT NULL DEFAULT '', provenance TEXT NOT NULL DEFAULT '{}', added_at TEXT NOT NULL,"
        " UNIQUE (sha256, role))",
        "CREATE TABLE grades (id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),"
        " reviewer TEXT NOT NULL, accept INTEGER CHECK (accept IN (0, 1)),"
        " realism INTEGER CHECK (realism BETWEEN 1 AND 5), artifacts TEXT NOT NULL DEFAULT '[]',"
        " comment TEXT NOT NULL DEFAULT '', graded_at TEXT NOT NULL)",
        "INSERT INTO project VALUES (1, 'legacy', '2025-01-01T00:00:00+00:00', '[\"checkerboard\", \"other\"]')",
        "INSERT INTO images VALUES (1, 'synthetic', '/old/a.nii.gz', 'abc', '[12, 20, 20]', '[9.0, 9.0, 12.0]', 'CT',"
        ' \'{"generator": "gan", "seed": 4}\', \'2025-01-01T00:00:00+00:00\')',
        "INSERT INTO grades VALUES (1, 1, 'dr_a', 1, 4, '[\"other\"]', 'fine', '2025-01-02T00:00:00+00:00')",
        f"PRAGMA application_id = {APPLICATION_ID}",
        "PRAGMA user_version = 1",
    ):
        raw.execute(statement)
    raw.close()

    with ReviewStore.open(path) as store:
        assert store.project_info()["schema_version"] == SCHEMA_VERSION
        (old,) = store.grades()
        assert (old.reviewer, old.accept, old.realism, old.artifacts, old.comment, old.seconds) == (
            "dr_a",
            True,
            4,
            ("other",),
            "fine",
            None,
        )
        assert store.image(1).provenance == {"generator": "gan", "seed": 4} and store.image(1).parent_id is None
        new = store.grade(1, "dr_a", accept=False, realism=2, seconds=12.5)
        assert new.seconds == 12.5 and store.grades(1, "dr_a")[0].id == new.id
        assert len(store.grades(latest_only=False)) == 2
        session = store.create_reader_session("dr_b", [(1, True)], seed=0)
        assert store.next_trial(session).image_id == 1
        store.save_result("metrics", {"fid": 1.0})
    raw = _raw(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    raw.close()


# ---- images --------------------------------------------------------------------------------------------------
def test_add_image_describes_it_and_never_adds_the_same_content_twice(project: Path, volumes: dict[str, Path]) -> None:
    with ReviewStore.open(project) as store:
        real = store.add_image(volumes["v0"], "real", reviewer="dr_a")
        image = load_image(volumes["v0"])
        assert real.role == ImageRole.REAL == "real" and not real.duplicate and real.added_by == "dr_a"
        assert real.shape == image.shape and np.allclose(real.spacing, image.spacing)
        assert real.sha256 == image_sha256(image) and real.path == str(volumes["v0"].resolve())
        again = store.add_image(volumes["v0"], "real")
        assert again.duplicate and again.id == real.id
        # the same voxels and geometry written as NRRD are the same image
        assert store.add_image(volumes["v0_nrrd"], ImageRole.REAL).duplicate
        # ... but as a synthetic image it is a separate entry (a memorised copy is worth reviewing)
        provenance = {"generator": "lesion-insertion", "version": "1.0", "seed": 7, "parent": str(volumes["v0"])}
        synthetic = store.add_image(volumes["v1"], "synthetic", provenance)
        assert synthetic.parent_id == real.id and synthetic.provenance["seed"] == 7
        assert store.add_image(volumes["v0"], "synthetic", {"parent": real.id}).parent_id == real.id
        with pytest.raises(InputError, match="not a real image"):
            store.add_image(volumes["v2"], "synthetic", {"parent": synthetic.id})
        with pytest.raises(InputError, match="'synthetic' or 'real'"):
            store.add_image(volumes["v2"], "fake")
        assert [im.id for im in store.images("synthetic")] == [synthetic.id, synthetic.id + 1]
        assert len(store.images()) == 3 and store.image(real.id) == real
        with pytest.raises(InputError, match="No image with id 99"):
            store.image(99)


def test_manifest_import_reports_bad_rows_and_keeps_the_good_ones(project: Path, volumes: dict[str, Path]) -> None:
    folder = volumes["v0"].parent
    manifest = folder / "manifest.csv"
    rows = [
        {
            "path": "v1.nii.gz",
            "role": "synthetic",
            "generator": "gan",
            "version": "2",
            "seed": "11",
            "parent": "v0.nii.gz",
            "note": "first",
        },
        {
            "path": "missing.nii.gz",
            "role": "synthetic",
            "generator": "gan",
            "version": "",
            "seed": "",
            "parent": "",
            "note": "",
        },
        {"path": "v0.nii.gz", "role": "real", "generator": "", "version": "", "seed": "", "parent": "", "note": ""},
        {
            "path": "v2.nii.gz",
            "role": "imaginary",
            "generator": "",
            "version": "",
            "seed": "",
            "parent": "",
            "note": "",
        },
        {"path": "", "role": "real", "generator": "", "version": "", "seed": "", "parent": "", "note": ""},
        {"path": "v0_copy.nrrd", "role": "real", "generator": "", "version": "", "seed": "", "parent": "", "note": ""},
    ]
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    seen: list[float] = []
    with ReviewStore.open(project) as store:
        report = store.import_manifest(manifest, reviewer="importer", progress=lambda f, _m: seen.append(f))
        assert [r.path for r in report.added] == [str(volumes["v0"].resolve()), str(volumes["v1"].resolve())]
        assert len(report.duplicates) == 1 and report.duplicates[0].id == report.added[0].id
        assert [f.row for f in report.failed] == [2, 4, 5] and not report.ok
        assert "does not exist" in report.failed[0].reason and "missing.nii.gz" in report.failed[0].path
        assert "'synthetic' or 'real'" in report.failed[1].reason and "no path" in report.failed[2].reason
        assert "2 added, 1 duplicate" in report.summary() and "row 4" in report.summary()
        synthetic = report.added[1]
        assert synthetic.parent_id == report.added[0].id  # the real parent listed later was imported first
        assert synthetic.provenance == {
            "generator": "gan",
            "version": "2",
            "seed": 11,
            "note": "first",
            "parent": str(volumes["v0"].resolve()),
        }
        assert seen[-1] == 1.0 and seen == sorted(seen)

        json_manifest = folder / "manifest.json"
        json_manifest.write_text(
            json.dumps(
                {"images": [{"path": "v1.nii.gz", "role": "synthetic"}, {"path": str(volumes["v3"]), "seed": 5}]}
            )
        )
        second = store.import_manifest(json_manifest, role="synthetic")
        assert len(second.duplicates) == 1 and len(second.added) == 1 and second.ok
        assert second.added[0].provenance == {"seed": 5}
        assert store.project_info()["images"] == {"synthetic": 2, "real": 1}
    (folder / "bad.csv").write_text("file,role\nv1.nii.gz,synthetic\n")
    with ReviewStore.open(project) as store, pytest.raises(InputError, match="no 'path' column"):
        store.import_manifest(folder / "bad.csv")


# ---- grades --------------------------------------------------------------------------------------------------
def test_grades_are_validated_against_range_and_vocabulary(project: Path, volumes: dict[str, Path]) -> None:
    with ReviewStore.open(project) as store:
        image = store.add_image(volumes["v1"], "synthetic")
        with pytest.raises(InputError) as error:
            store.grade(image.id, "dr_a", accept=False, realism=2, artifacts=["checkerbord"])
        assert all(word in str(error.value) for word in DEFAULT_ARTIFACTS) and "checkerbord" in str(error.value)
        for realism in (0, 6, 2.5, True):
            with pytest.raises(InputError, match="1 to 5"):
                store.grade(image.id, "dr_a", accept=True, realism=realism)
        with pytest.raises(InputError, match="empty"):
            store.grade(image.id, "dr_a", accept=None, realism=None)
        with pytest.raises(InputError, match="reviewer"):
            store.grade(image.id, "  ", accept=True, realism=3)
        with pytest.raises(InputError, match="No image with id 42"):
            store.grade(42, "dr_a", accept=True, realism=3)
        with pytest.raises(InputError, match="seconds"):
            store.grade(image.id, "dr_a", accept=True, realism=3, seconds=-1)
        assert store.grades(latest_only=False) == []  # nothing half-saved
        grade = store.grade(
            image.id,
            "dr_a",
            accept=False,
            realism=2,
            artifacts=["Checkerboard", "noise/texture  wrong", "checkerboard"],
            comment="grid",
            seconds=3,
        )
        assert grade.artifacts == ("checkerboard", "noise/texture wrong") and grade.seconds == 3.0
        store.set_artifacts(["banding"])
        with pytest.raises(InputError, match="banding"):
            store.grade(image.id, "dr_a", accept=False, realism=2, artifacts=["checkerboard"])
        assert store.grade(image.id, "dr_a", accept=False, realism=2, artifacts=["BANDING"]).artifacts == ("banding",)


def test_regrades_keep_history_and_drive_resume_and_acceptance(project: Path, volumes: dict[str, Path]) -> None:
    with ReviewStore.open(project) as store:
        real = store.add_image(volumes["v0"], "real")
        s1, s2, s3 = (store.add_image(volumes[f"v{n}"], "synthetic") for n in (1, 2, 3))
        assert store.next_ungraded("dr_a").id == s1.id
        assert store.next_ungraded("dr_a", role=None).id == real.id
        store.grade(s1.id, "dr_a", accept=False, realism=2)
        store.grade(s1.id, "dr_a", accept=True, realism=4, comment="on second look fine")
        store.grade(s2.id, "dr_a", accept=True, realism=5)
        store.grade(s2.id, "dr_b", accept=True, realism=4)
        store.grade(s3.id, "dr_b", accept=True, realism=3)
        store.grade(s3.id, "dr_a", accept=None, realism=3)  # undecided keeps it out
        assert store.next_ungraded("dr_a") is None and store.next_ungraded("dr_b").id == s1.id
        history = store.grades(s1.id, "dr_a", latest_only=False)
        assert [g.accept for g in history] == [False, True]
        (latest,) = store.grades(s1.id, "dr_a")
        assert latest.id == history[-1].id and latest.comment == "on second look fine"
        assert [(g.image_id, g.reviewer) for g in store.grades()] == [
            (s1.id, "dr_a"),
            (s2.id, "dr_a"),
            (s2.id, "dr_b"),
            (s3.id, "dr_a"),
            (s3.id, "dr_b"),
        ]
        assert [im.id for im in store.accepted()] == [s1.id, s2.id]
        assert [im.id for im in store.accepted(min_reviewers=2)] == [s2.id]
        store.grade(s2.id, "dr_b", accept=False, realism=2)
        assert [im.id for im in store.accepted()] == [s1.id]
        assert store.project_info()["reviewers"] == ["dr_a", "dr_b"]


# ---- reader study --------------------------------------------------------------------------------------------
def test_a_reader_who_quits_half_way_resumes_where_they_stopped(project: Path, volumes: dict[str, Path]) -> None:
    with ReviewStore.open(project) as store:
        real = store.add_image(volumes["v0"], "real")
        syn = store.add_image(volumes["v1"], "synthetic")
        order = [(syn.id, True), (real.id, False), (real.id, False), (syn.id, True)]
        with pytest.raises(InputError, match="must match"):
            store.create_reader_session("reader1", [(syn.id, False)], seed=1)
        with pytest.raises(InputError, match="no trials"):
            store.create_reader_session("reader1", [], seed=1)
        assert store.reader_sessions() == []  # the refused sessions left nothing behind
        session = store.create_reader_session("reader1", order, seed=123)
        assert [(t.image_id, t.is_synthetic) for t in store.reader_trials(session)] == order
        store.answer_trial(session, 0, True, confidence=4, seconds=2.0)
        store.answer_trial(session, 1, True, confidence=2)
    with ReviewStore.open(project) as store:  # the reader comes back
        (progress,) = store.reader_sessions("reader1")
        assert (progress.n_trials, progress.n_answered, progress.seed, progress.complete) == (4, 2, 123, False)
        assert store.next_trial(session).index == 2
        with pytest.raises(InputError, match="already answered"):
            store.answer_trial(session, 1, False, confidence=5)
        with pytest.raises(InputError, match=r"0\.\.3"):
            store.answer_trial(session, 4, False)
        with pytest.raises(InputError, match="1 to 5"):
            store.answer_trial(session, 2, False, confidence=9)
        store.answer_trial(session, 2, False, confidence=3)
        store.answer_trial(session, 3, True, confidence=5, seconds=1.5)
        assert store.next_trial(session) is None and store.reader_sessions()[0].complete
        trials = store.reader_trials(session)
        assert [t.said_synthetic for t in trials] == [True, True, False, True]
        assert [t.confidence for t in trials] == [4, 2, 3, 5] and trials[1].answered
        assert store.reader_sessions("someone else") == []
        with pytest.raises(InputError, match="No reader session 77"):
            store.next_trial(77)


def test_results_cache_returns_the_latest_result(project: Path) -> None:
    with ReviewStore.open(project) as store:
        assert store.latest_result("metrics") is None
        store.save_result("metrics", {"fid": np.float32(3.5), "per_class": {"lung": [1, 2]}, "n": np.int64(4)})
        store.save_result("metrics", {"fid": 2.0})
        store.save_result("memorization", {"flagged": []})
        latest = store.latest_result("metrics")
        assert latest["fid"] == 2.0 and "saved_at" in latest
        with pytest.raises(InputError, match="JSON"):
            store.save_result("metrics", {"bad": object()})


# ---- crashes, concurrency and locks --------------------------------------------------------------------------
GRADING_CHILD = r"""
import sys, time
from MedAIExtension.review.store import ReviewStore
store = ReviewStore.open(sys.argv[1])
reviewer, count = sys.argv[2], int(sys.argv[3])
other = sys.argv[4] if len(sys.argv) > 4 else None
ids = [image.id for image in store.images()]
print("ready", flush=True)
if other:
    sys.stdin.readline()  # wait for the go signal so both reviewers write at the same time
i = 0
while count < 0 or i < count:
    if other and i == count // 2:  # half-way, wait until the other reviewer is half-way too: both really overlap
        deadline = time.monotonic() + 60
        while len(store.grades(reviewer=other, latest_only=False)) < count // 2:
            if time.monotonic() > deadline:
                sys.exit(3)
            time.sleep(0.005)
    image_id = ids[i % len(ids)]
    grade = store.grade(image_id, reviewer, accept=i % 2 == 0, realism=1 + i % 5, comment=f"{reviewer} #{i}")
    print(grade.id, image_id, i, flush=True)  # printed only after the commit
    i += 1
"""


def _grading_child(project: Path, reviewer: str, count: int, other: str | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", GRADING_CHILD, str(project), reviewer, str(count)] + ([other] if other else [])
    return subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
        cwd=str(REPO),
    )


def _check_reported(store: ReviewStore, reviewer: str, lines: list[str]) -> None:
    by_id = {g.id: g for g in store.grades(reviewer=reviewer, latest_only=False)}
    for line in lines:
        grade_id, image_id, i = (int(v) for v in line.split())
        grade = by_id[grade_id]
        assert (grade.image_id, grade.comment, grade.realism, grade.accept) == (
            image_id,
            f"{reviewer} #{i}",
            1 + i % 5,
            i % 2 == 0,
        )


def test_kill_and_resume_loses_no_committed_grade(project: Path, volumes: dict[str, Path]) -> None:
    with ReviewStore.open(project) as store:
        for n in range(N_VOLUMES):
            store.add_image(volumes[f"v{n}"], "synthetic")
    child = _grading_child(project, "killed", -1)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    lines: list[str] = []
    while len(lines) < 30:
        line = child.stdout.readline()
        assert line, f"the grading child stopped early: {child.stderr.read()}"
        lines.append(line.strip())
    child.send_signal(signal.SIGKILL)  # no cleanup, no close: a crash in the middle of grading
    child.wait(timeout=30)
    lines += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    child.stdin.close()
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    raw = _raw(project)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    raw.close()
    with ReviewStore.open(project) as store:
        history = store.grades(reviewer="killed", latest_only=False)
        _check_reported(store, "killed", lines)
        # at most the one grade committed between its commit and its print is extra; none is partial
        assert len(lines) <= len(history) <= len(lines) + 1
        assert [g.comment for g in sorted(history, key=lambda g: g.id)] == [f"killed #{i}" for i in range(len(history))]
        # and grading goes on
        store.grade(store.images()[0].id, "killed", accept=True, realism=5)
        assert len(store.grades(reviewer="killed", latest_only=False)) == len(history) + 1


def test_two_concurrent_reviewers_write_without_loss(project: Path, volumes: dict[str, Path]) -> None:
    with ReviewStore.open(project) as store:
        for n in range(N_VOLUMES):
            store.add_image(volumes[f"v{n}"], "synthetic")
    count = 40
    children = {
        name: _grading_child(project, name, count, other) for name, other in [("dr_a", "dr_b"), ("dr_b", "dr_a")]
    }
    for child in children.values():
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    for child in children.values():
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = {name: child.communicate(timeout=120) for name, child in children.items()}
    for name, child in children.items():
        assert child.returncode == 0, outputs[name][1]
    with ReviewStore.open(project) as store:
        for name, (stdout, _stderr) in outputs.items():
            lines = stdout.splitlines()  # "ready" was read above
            assert len(lines) == count
            _check_reported(store, name, lines)
            assert len(store.grades(reviewer=name, latest_only=False)) == count
        everything = store.grades(latest_only=False)
        assert len(everything) == 2 * count and len({g.id for g in everything}) == 2 * count
        assert len(store.grades()) == 2 * N_VOLUMES  # each reviewer's latest grade of each image
        # the two writers really overlapped: each waited half-way for the other, so their grades interleave
        owners = [g.reviewer for g in sorted(everything, key=lambda g: g.id)]
        assert sum(a != b for a, b in itertools.pairwise(owners)) > 1


LOCK_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO results (kind, data, saved_at) VALUES ('other-tool', '{}', 'now')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


def test_a_locked_project_says_what_to_close_and_loses_nothing(project: Path, volumes: dict[str, Path]) -> None:
    with ReviewStore.open(project, busy_timeout=0.3) as store:
        image = store.add_image(volumes["v1"], "synthetic")
        first = store.grade(image.id, "dr_a", accept=True, realism=4)
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(project)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
            started = time.monotonic()
            with pytest.raises(ProjectLockedError) as error:
                store.grade(image.id, "dr_a", accept=False, realism=1)
            assert time.monotonic() - started < 10
            message = str(error.value)
            assert "locked" in message and "Close the other program" in message and "Nothing was lost" in message
            assert isinstance(error.value, InputError)
            assert [g.id for g in store.grades(latest_only=False)] == [first.id]  # reads still work
        finally:
            holder.communicate("go\n", timeout=30)
        assert holder.returncode == 0
        second = store.grade(image.id, "dr_a", accept=False, realism=1)
        assert [g.id for g in store.grades(latest_only=False)] == [first.id, second.id]
        assert store.latest_result("other-tool") is not None

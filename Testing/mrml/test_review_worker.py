"""Synthetic Review's long steps in the worker process (``python -m MedAIExtension.worker review ...``) give what
the direct calls give, and the module's job logic (``MedAISyntheticReviewLib.jobs``) runs and cancels them.

Real: small generated phantom CTs, SQLite review projects, the worker process, the metrics and the memorization
check. Only Slicer's ScriptedLoadableModuleLogic base class is a stand-in (it exists in the GUI application alone).
"""

from __future__ import annotations

import shutil
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
from MedAIExtension.review.store import ReviewStore
from MedAIExtension.review.workflow import run_memorization, run_metrics
from MedAIExtension.runner import WorkerProcess, parse_event, review_worker_args
from Testing.mrml.module_import import import_module_code


@pytest.fixture(scope="module")
def project_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A review project of two real phantom CTs and two synthetic images (a noisy copy and a near-copy)."""
    folder = tmp_path_factory.mktemp("review-worker")
    rng = np.random.default_rng(11)
    spec = {"size_ijk": (32, 32, 16), "spacing": (9.0, 9.0, 14.0)}
    path = folder / "study.medai-review"
    with ReviewStore.create(path, "Worker study") as store:
        for seed in (1, 2):
            real = generate_chest_phantom(PhantomSpec(seed=seed, **spec)).ct
            real_path = write_volume_file(real, folder / f"real_{seed}.nrrd")
            parent = store.add_image(real_path, "real").id
            noise = 60.0 if seed == 1 else 2.0
            synthetic = real.with_array(real.array + rng.normal(0, noise, real.shape).astype(np.float32))
            synthetic_path = write_volume_file(synthetic, folder / f"synthetic_{seed}.nrrd")
            store.add_image(synthetic_path, "synthetic", {"generator": "noise", "parent": parent})
    return path


def _copy(project_file: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(project_file, target)
    return target


def _worker(args: list[str], seconds: float = 300) -> tuple[int, list[Any]]:
    process = WorkerProcess(args)
    process.start()
    code = process.wait(seconds)
    return code, process.poll()


def _numbers(data: Any, path: str = "") -> dict[str, Any]:
    """A result flattened to ``{"fid.axial": 1.5, ...}`` without its timestamp and task/project keys: what must
    agree between the worker and the direct call."""
    if isinstance(data, dict):
        skipped = {"saved_at", "task", "project"}
        return {
            k: v
            for key, value in data.items()
            if key not in skipped
            for k, v in _numbers(value, f"{path}.{key}").items()
        }
    if isinstance(data, list | tuple):
        return {k: v for i, value in enumerate(data) for k, v in _numbers(value, f"{path}[{i}]").items()}
    return {path: data}


def _assert_same(result: dict[str, Any], expected: dict[str, Any]) -> None:
    got, want = _numbers(result), _numbers(expected)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("task", ["metrics", "memorization"])
def test_the_worker_sub_command_gives_the_direct_result(task: str, project_file: Path, tmp_path: Path) -> None:
    direct_file, worker_file = _copy(project_file, tmp_path, "direct.db"), _copy(project_file, tmp_path, "worker.db")
    with ReviewStore.open(direct_file) as store:
        direct = run_metrics(store) if task == "metrics" else run_memorization(store)

    code, events = _worker(review_worker_args(task, worker_file))

    assert code == 0, [e.message for e in events if e.kind in ("error", "log")]
    kinds = [e.kind for e in events]
    assert kinds[-1] == "result" and "progress" in kinds
    fractions = [e.fraction for e in events if e.kind == "progress"]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
    result = events[-1].data
    assert result["task"] == task and result["project"] == str(worker_file)
    assert len(_numbers(direct)) >= 8, "too few numbers to compare"
    _assert_same(result, direct)
    with ReviewStore.open(worker_file) as store:  # saved in the project, as the direct call saves it
        _assert_same(store.latest_result(task), direct)


def test_the_worker_reports_a_bad_task_or_project_as_an_error(tmp_path: Path) -> None:
    code, events = _worker(review_worker_args("metrics", tmp_path / "missing.medai-review"))
    assert code != 0 and events[-1].kind == "error" and "missing.medai-review" in events[-1].message
    code, events = _worker(review_worker_args("plots", tmp_path / "x"))
    assert code == 2 and any("invalid choice: 'plots'" in e.message for e in events)


def test_threshold_reaches_the_memorization_check(project_file: Path, tmp_path: Path) -> None:
    args = review_worker_args("memorization", _copy(project_file, tmp_path, "t.db"), threshold=0.0)
    assert args[-2:] == ["--threshold", "0.0"]
    code, events = _worker(args)
    assert code == 0 and len(events[-1].data["flagged"]) == 2, "every image is a near-copy at threshold 0"


@pytest.fixture
def review_jobs(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``MedAISyntheticReviewLib.jobs`` imported as Slicer does (with a stand-in for ScriptedLoadableModuleLogic)."""
    return import_module_code(monkeypatch, "MedAISyntheticReviewLib.jobs", ["MedAISyntheticReview"])


def test_the_module_runs_a_step_in_the_worker_and_shows_the_saved_result(
    review_jobs: types.ModuleType, scene: Any, project_file: Path, tmp_path: Path
) -> None:
    logic = review_jobs.ReviewJobLogic(scene)
    logic.openProject(_copy(project_file, tmp_path, "module.db"))
    assert logic.memorizationText() == "Memorization check not run yet."
    job = logic.runTask("memorization", timeoutSeconds=300)
    assert job.task == "memorization" and job.resultLoaded and not job.workDir.exists()
    assert len(job.result["matches"]) == 2
    assert logic.memorizationText().startswith(f"Memorization: {len(job.result['flagged'])} of 2 synthetic images")
    logic.closeProject()


def test_cancel_kills_the_step_and_saves_nothing(
    review_jobs: types.ModuleType, scene: Any, project_file: Path, tmp_path: Path
) -> None:
    logic = review_jobs.ReviewJobLogic(scene)
    logic.openProject(_copy(project_file, tmp_path, "cancel.db"))
    job = logic.startTask("metrics")
    logic.cancel(job)
    deadline = time.time() + 30
    while not job.finished and time.time() < deadline:
        logic.poll(job)
        time.sleep(0.02)
    assert job.finished and job.cancelled and not job.error and not job.resultLoaded
    assert job.process.returncode != 0 and not job.workDir.exists()
    assert logic.metricsText() == "Metrics not computed yet."
    with pytest.raises(Exception, match="Unknown review task"):
        logic.startTask("plots")
    logic.closeProject()
    with pytest.raises(Exception, match="No review project is open"):
        logic.startTask("metrics")


def test_parse_event_round_trip_of_a_result_is_json() -> None:
    line = '@medai {"kind": "result", "fraction": 1.0, "message": "done", "data": {"fid": {"axial": 1.5}}}'
    assert parse_event(line).data == {"fid": {"axial": 1.5}}

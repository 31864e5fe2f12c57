"""``medai batch`` on Ray: embedded on loopback, resume after an interrupt, a 2-node loopback cluster, a killed worker.

Small phantoms (64x64x40 voxels, one sliding window each) keep the whole module near a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.batch.annotation_queue import read_annotation_queue
from MedAIExtension.batch.inputs import discover_studies
from MedAIExtension.batch.journal import Journal
from MedAIExtension.batch.ray_runner import import_ray, run_on_ray
from MedAIExtension.batch.records import RECORD_NAME, StudyRecord
from MedAIExtension.batch.report import drift_rows
from MedAIExtension.cli import main
from MedAIExtension.errors import CancelledError
from MedAIExtension.io.volume_files import read_volume_file, write_volume_file
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.phantom.study import write_phantom_study

pytest.importorskip("ray")

MODEL = "chest-ct-lung-nodule"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three phantom CTs (NIfTI) with their reference label maps, and one truncated NRRD."""
    root = tmp_path_factory.mktemp("cohort")
    studies, references = root / "studies", root / "references"
    studies.mkdir()
    references.mkdir()
    for seed in range(3):
        written = write_phantom_study(root / f"p{seed}", size_ijk=(64, 64, 40), spacing=(2.0, 2.0, 3.0), seed=seed)
        shutil.copy(written["nifti"], studies / f"case{seed}.nii.gz")
        shutil.copy(written["labels"], references / f"case{seed}.nii.gz")
    raw = write_volume_file(read_volume_file(studies / "case0.nii.gz"), root / "raw.nrrd", compress=False)
    data = raw.read_bytes()
    (studies / "corrupt.nrrd").write_bytes(data[: len(data) // 2])
    return {"studies": studies, "references": references, "root": root}


def _batch(cohort: dict[str, Path], output: Path, *extra: str) -> int:
    argv = ["batch", "--input", str(cohort["studies"]), "--model", MODEL, "--output", str(output)]
    return main([*argv, "--reference", str(cohort["references"]), "--workers", "2", "--quiet", *extra])


def _rows(output: Path) -> dict[str, tuple[str, int, str | None, StudyRecord | None]]:
    with Journal.open(output) as journal:
        return {Path(r.source).name: (r.state, r.attempts, r.error, r.record) for r in journal.rows()}


def _committed(output: Path) -> list[Path]:
    return sorted((output / "studies").iterdir())


@pytest.mark.slow
def test_embedded_batch_three_done_one_corrupt_failed_same_files_as_segment(cohort, tmp_path, capsys):
    output = tmp_path / "batch"
    assert _batch(cohort, output, "--annotation-queue") == 1  # some study failed: exit 1 so that scripts notice
    rows = _rows(output)
    assert {name: row[:2] for name, row in rows.items()} == {
        "case0.nii.gz": ("done", 1),
        "case1.nii.gz": ("done", 1),
        "case2.nii.gz": ("done", 1),
        "corrupt.nrrd": ("failed", 1),
    }
    error = rows["corrupt.nrrd"][2]
    assert error and "corrupt.nrrd" in error and "\n" not in error
    assert "corrupt.nrrd" in capsys.readouterr().out
    folders = _committed(output)  # only done studies are committed, no staging folder left behind
    assert [f.name for f in folders] == sorted(rows[n][3].key for n in ("case0.nii.gz", "case1.nii.gz", "case2.nii.gz"))

    segment_out = tmp_path / "segment"
    single = ["segment", "--input", str(cohort["studies"] / "case1.nii.gz"), "--model", MODEL]
    assert main([*single, "--output", str(segment_out), "--quiet"]) == 0
    record = rows["case1.nii.gz"][3]
    assert record is not None
    study_dir = Path(record.output_dir or "")
    assert sorted(p.name for p in study_dir.iterdir()) == sorted(
        [*(p.name for p in segment_out.iterdir()), RECORD_NAME]
    )
    batch_map = read_volume_file(study_dir / "segmentation.nii.gz").array
    assert np.array_equal(batch_map, read_volume_file(segment_out / "segmentation.nii.gz").array)
    summary = json.loads((study_dir / "summary.json").read_text())
    assert record.volumes_ml == {row["name"]: row["volume_ml"] for row in summary["statistics"]}
    assert record.volumes_ml["Lung"] > 300
    assert StudyRecord.from_dict(json.loads((study_dir / RECORD_NAME).read_text())) == record
    assert record.metrics["Lung"]["dice"] > 0.8 and set(record.metrics["Lung"]) >= {"dice", "iou", "nsd"}
    assert record.acquisition.manufacturer is None  # NIfTI input: no DICOM header to read
    done = [rows[n][3] for n in ("case0.nii.gz", "case1.nii.gz", "case2.nii.gz")]
    assert all(r is not None and r.extra["model_loads"] == 1 for r in done)  # one model load per worker
    assert len({r.extra["pid"] for r in done if r is not None}) <= 2

    # The cohort report (with each study's drift against the model's training inputs) and the annotation queue.
    page = (output / "report" / "cohort_report.html").read_text(encoding="utf-8")
    assert "corrupt.nrrd" in page and all(r is not None and r.key in page for r in done)
    assert all(r is not None and r.input_stats and r.uncertainty is not None for r in done)
    queue = read_annotation_queue(output / "queue.csv")
    assert [row["rank"] for row in queue] == ["1", "2", "3"]
    uncertainties = [float(row["uncertainty"]) for row in queue]
    assert uncertainties == sorted(uncertainties, reverse=True)
    drift = drift_rows([r for r in done if r is not None], load_catalog().get(MODEL))
    assert drift is not None and len(drift) == 3 and all(row["score"] >= 0 for row in drift)


@pytest.mark.slow
def test_rerun_after_interrupt_runs_only_what_was_missing(cohort, tmp_path):
    output = tmp_path / "batch"
    output.mkdir()
    studies = discover_studies(cohort["studies"], cohort["references"])
    seen: list[StudyRecord] = []

    def stop_after_two(record: StudyRecord) -> None:
        seen.append(record)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with Journal.open(output) as journal:
        journal.add(studies)
        with pytest.raises(CancelledError) as stopped:
            # the corrupt study first: it fails at once, so the interrupted run has one failed and one done study
            run_on_ray(journal.todo(2)[::-1], journal, MODEL, workers=2, on_record=stop_after_two)
        assert stopped.value.exit_code == 130
        assert journal.count("running") == 0  # consistent: the unfinished ones went back to pending
        assert (journal.count("done"), journal.count("failed"), journal.count("pending")) == (1, 1, 2)
    before = {f.name: f.stat().st_mtime_ns for f in _committed(output) if not f.name.startswith(".")}
    # The other worker may commit its study in the moment before it is stopped: the journal has not heard of it,
    # and the next run must take it as done without running it again.
    assert [r.status for r in seen] == ["failed", "done"] and 1 <= len(before) <= 2

    assert _batch(cohort, output) == 1  # the corrupt study is still failed
    rows = _rows(output)
    after = {f.name: f.stat().st_mtime_ns for f in _committed(output)}
    assert len(after) == 3 and all(after[k] == before[k] for k in before)  # done folder untouched, stale staging gone
    attempts = {name: (row[0], row[1]) for name, row in rows.items()}
    assert attempts == {  # the failed study was retried once, every done study ran once
        "case0.nii.gz": ("done", 1),
        "case1.nii.gz": ("done", 1),
        "case2.nii.gz": ("done", 1),
        "corrupt.nrrd": ("failed", 2),
    }

    assert _batch(cohort, output) == 1  # nothing left to try (2 attempts made): Ray is not even started
    assert {n: r[1] for n, r in _rows(output).items()} == {n: r[1] for n, r in rows.items()}
    assert {f.name: f.stat().st_mtime_ns for f in _committed(output)} == after


@pytest.fixture(scope="module")
def loopback_cluster():
    """A 2-node Ray cluster on 127.0.0.1 (one CPU each, no dashboard), each node declaring one GPU.

    The GPUs are a Ray resource only (this machine has none): the workers ask for their share and Ray assigns it;
    the model itself runs on the CPU, as ``--device auto`` does without CUDA.
    """
    import_ray(loopback=True)
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
    yield cluster
    cluster.shutdown()


@pytest.mark.slow
def test_two_node_loopback_cluster_runs_studies_on_both_nodes(cohort, loopback_cluster, tmp_path):
    assert {node.node_ip_address for node in loopback_cluster.list_all_nodes()} == {"127.0.0.1"}
    assert loopback_cluster.address.startswith("127.0.0.1:")
    output = tmp_path / "batch"
    assert _batch(cohort, output, "--address", loopback_cluster.address) == 1
    records = [r[3] for r in _rows(output).values() if r[0] == "done"]
    assert len(records) == 3
    assert len({r.extra["node_id"] for r in records if r is not None}) == 2
    # each worker asked for its share of the cluster's GPUs (2 GPUs / 2 workers: one each) and Ray gave it one
    assert all(r is not None and len(r.extra["gpu_ids"]) == 1 for r in records)


@pytest.mark.slow
def test_killed_worker_mid_batch_every_study_done_exactly_once(cohort, loopback_cluster, tmp_path):
    output = tmp_path / "batch"
    output.mkdir()
    good = [s for s in discover_studies(cohort["studies"]) if not s.source.endswith("corrupt.nrrd")]
    pids: list[int] = []
    killed: list[int] = []

    def kill_busy_worker(record: StudyRecord) -> None:
        if not killed:  # the worker that sent this record already runs its next study: kill it mid-study
            killed.append(int(record.extra["pid"]))
            os.kill(killed[0], signal.SIGKILL)

    with Journal.open(output) as journal:
        journal.add(good)
        summary = run_on_ray(
            journal.todo(2),
            journal,
            MODEL,
            address=loopback_cluster.address,
            workers=2,
            on_workers=pids.extend,
            on_record=kill_busy_worker,
        )
        rows = journal.rows()
    assert killed and killed[0] in pids
    assert (summary.done, summary.failed) == (3, 0)
    assert [(r.state, r.attempts) for r in rows] == [("done", 1)] * 3
    folders = _committed(output)
    assert len(folders) == 3 and all((f / RECORD_NAME).is_file() for f in folders)
    worker_pids = {r.record.extra["pid"] for r in rows if r.record is not None}
    assert worker_pids - set(pids), "the study interrupted by the kill ran again in a restarted worker"


@pytest.mark.parametrize("case", ["no studies", "unknown model", "output not writable"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "a-file").write_text("x")
    output = tmp_path / "a-file" / "out" if case == "output not writable" else tmp_path / "out"
    model = "no-such-model" if case == "unknown model" else MODEL
    argv = ["batch", "--input", str(empty), "--model", model, "--output", str(output), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "out").exists()

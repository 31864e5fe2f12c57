"""Benchmark: ``medai batch`` (embedded Ray) against a shell loop of ``medai segment`` and an in-process loop.

    .venv/bin/python bench/batch.py [--studies 40] [--size 256 256 150] [--workers 2] [--keep DIR]

N phantom chest CTs (seed i for study i, 1.4×1.4×2.0 mm) are written as NIfTI files into one folder (not timed).
Then, in the same run and one after the other, the same studies are segmented with ``chest-ct-lung-nodule`` on the
CPU in three ways, each as a child process timed by the wall clock from its start to its exit:

(a) shell loop: one ``python -m MedAIExtension.cli segment --input <ct> --model M --output <dir> --device cpu
    --quiet`` process per study, one after the other (each starts Python, imports, loads the model);
(b) in-process loop: one Python process that loads the model once (the Ray actor's ``StudyWorker``, used
    as a plain object, and its loaded backend) and calls ``process_study`` per study: the exact per-study work of
    a Ray worker (``segment_to_folder`` + the study's record: volumes, input statistics), without Ray;
(c) ``medai batch --input <folder> --model M --output <dir> --workers W --device cpu --quiet``: embedded Ray.

Peak memory: the child's own ``ru_maxrss`` (from ``wait4``) and, sampled every 0.5 s, the summed PSS
(``/proc/PID/smaps_rollup``: shared pages divided among their users, so no double counting) of the child and all
its descendants: for (c) this includes Ray's GCS server, raylet and worker processes started by the driver.

Prints wall time, throughput (studies/min), per-study cost, the ratios Ray/shell and Ray/in-process (target,
issue 19: Ray ≥ 1.5× the shell loop's throughput on this 2-core machine), Ray's overhead per study and a
projection for 10,000 studies on 8 GPU nodes from the measured per-study costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_model  # noqa: E402 - bench/machine.py, beside this script

MODEL = "chest-ct-lung-nodule"
TARGET_RATIO = 1.5
COHORT = 10_000
NODES = 8


def _children() -> dict[int, list[int]]:
    """Parent pid → child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree_pss_mb(root: int) -> tuple[float, int]:
    """Summed PSS (MB) of ``root`` and its descendants, and how many processes that is."""
    tree = _children()
    todo, total, count = [root], 0, 0
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    count += 1
                    break
        except OSError:
            continue
    return total / 1024.0, count


def _timed(command: list[str], log: Path) -> dict[str, Any]:
    """Run ``command`` (output into ``log``); wall seconds, exit status, own peak RSS and peak tree PSS."""
    peak = {"pss_mb": 0.0, "processes": 0}
    with log.open("w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                pss, count = _tree_pss_mb(child.pid)
                peak["pss_mb"] = max(peak["pss_mb"], pss)
                peak["processes"] = max(peak["processes"], count)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": seconds,
        "returncode": child.returncode,
        "rss_mb": usage.ru_maxrss / 1024.0,
        "pss_mb": peak["pss_mb"],
        "processes": peak["processes"],
        "output": log.read_text(errors="replace"),
    }


def _write_studies(folder: Path, count: int, size: tuple[int, int, int]) -> list[Path]:
    from MedAIExtension.io.volume_files import write_volume_file
    from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"study-{i:03d}.nii.gz"
        if not path.exists():
            phantom = generate_chest_phantom(PhantomSpec(size_ijk=size, spacing=(1.4, 1.4, 2.0), seed=i))
            write_volume_file(phantom.ct, path, compress=True)
        paths.append(path)
    return paths


def _in_process(input_dir: Path, output_dir: Path) -> int:
    """Mode (b), run in a child process: model loaded once, ``process_study`` per study, one after the other."""
    from MedAIExtension.batch.inputs import discover_studies
    from MedAIExtension.batch.ray_runner import StudyWorker
    from MedAIExtension.batch.study import process_study

    worker = StudyWorker(MODEL, "cpu", str(output_dir / "studies"))  # plain object: loads the model once
    failed = 0
    for study in discover_studies(str(input_dir), None, skip=output_dir):
        record = process_study(
            study, MODEL, worker.studies_dir, catalog=worker.catalog, device="cpu", backend=worker.backend
        )
        failed += record.status != "done"
    print(f"in-process: model loads {worker.loads}, failed {failed}")
    return 1 if failed else 0


def _record_seconds(studies: Path) -> list[float]:
    """Each committed study's own ``seconds`` (its record: inside the worker, model already loaded)."""
    from MedAIExtension.batch.records import RECORD_NAME

    return [json.loads(p.read_text())["seconds"] for p in sorted(studies.glob(f"*/{RECORD_NAME}"))]


def _row(name: str, run: dict[str, Any], n: int) -> str:
    per = run["seconds"] / n
    return (
        f"  {name:<34} {run['seconds']:7.1f} s  {60.0 * n / run['seconds']:6.2f} studies/min  "
        f"{per:6.2f} s/study  peak RSS {run['rss_mb']:6.0f} MB (main process)  "
        f"peak PSS {run['pss_mb']:6.0f} MB ({run['processes']} processes)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--size", type=int, nargs=3, default=[256, 256, 150])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR and keep inputs and outputs there")
    parser.add_argument("--in-process", nargs=2, type=Path, help=argparse.SUPPRESS)  # mode (b), internal
    args = parser.parse_args()
    if args.in_process:
        return _in_process(*args.in_process)
    n, size = args.studies, tuple(args.size)
    python = [sys.executable]
    work = args.keep or Path(tempfile.mkdtemp(prefix="medai-bench-batch-"))
    try:
        print(f"writing {n} phantom CTs {size[0]}×{size[1]}×{size[2]} into {work / 'cohort'} …", flush=True)
        inputs = _write_studies(work / "cohort", n, size)  # type: ignore[arg-type]
        runs: dict[str, dict[str, Any]] = {}
        for out in ("shell", "inproc", "ray"):
            shutil.rmtree(work / f"out-{out}", ignore_errors=True)

        load = os.getloadavg()[0]
        started = time.perf_counter()
        shell = {"seconds": 0.0, "rss_mb": 0.0, "pss_mb": 0.0, "processes": 0, "returncode": 0}
        for path in inputs:
            one = _timed(
                [*python, "-m", "MedAIExtension.cli", "segment", "--input", str(path), "--model", MODEL,
                 "--output", str(work / "out-shell" / path.name.split(".")[0]), "--device", "cpu", "--quiet"],
                work / "shell.log",
            )  # fmt: skip
            if one["returncode"] != 0:
                print(one["output"], file=sys.stderr)
                return 1
            for key in ("rss_mb", "pss_mb", "processes"):
                shell[key] = max(shell[key], one[key])
        shell["seconds"] = time.perf_counter() - started
        runs["shell"] = shell
        print(_row("(a) shell loop of medai segment", shell, n) + f"  load before {load:.2f}", flush=True)

        load = os.getloadavg()[0]
        runs["inproc"] = _timed(
            [*python, str(Path(__file__).resolve()), "--in-process", str(work / "cohort"), str(work / "out-inproc")],
            work / "inproc.log",
        )
        if runs["inproc"]["returncode"] != 0:
            print(runs["inproc"]["output"], file=sys.stderr)
            return 1
        print(_row("(b) in-process loop (model once)", runs["inproc"], n) + f"  load before {load:.2f}", flush=True)

        load = os.getloadavg()[0]
        runs["ray"] = _timed(
            [*python, "-m", "MedAIExtension.cli", "batch", "--input", str(work / "cohort"), "--model", MODEL,
             "--output", str(work / "out-ray"), "--workers", str(args.workers), "--device", "cpu", "--quiet"],
            work / "ray.log",
        )  # fmt: skip
        if runs["ray"]["returncode"] != 0:
            print(runs["ray"]["output"], file=sys.stderr)
            return 1
        print(_row(f"(c) medai batch, Ray, {args.workers} workers", runs["ray"], n) + f"  load before {load:.2f}")
        done = len(list((work / "out-ray" / "studies").iterdir()))
        print(f"      {done} study folders written by medai batch")

        rate = {k: n / r["seconds"] for k, r in runs.items()}
        print(
            f"Ray / shell loop throughput: {rate['ray'] / rate['shell']:.2f}× (target ≥ {TARGET_RATIO}×: "
            f"{'met' if rate['ray'] / rate['shell'] >= TARGET_RATIO else 'NOT met'})"
        )
        print(f"Ray / in-process loop throughput: {rate['ray'] / rate['inproc']:.2f}×")
        per_inproc = runs["inproc"]["seconds"] / n
        per_ray_worker = runs["ray"]["seconds"] * args.workers / n
        print(
            f"Ray overhead per study (Ray wall × workers / N − in-process wall / N, start-up and report included): "
            f"{per_ray_worker:.2f} − {per_inproc:.2f} = {per_ray_worker - per_inproc:+.2f} worker-s/study"
        )
        inside = {k: _record_seconds(work / f"out-{k}" / "studies") for k in ("inproc", "ray")}
        mean = {k: sum(v) / max(len(v), 1) for k, v in inside.items()}
        fixed = runs["ray"]["seconds"] - sum(inside["ray"]) / args.workers
        print(
            f"per-study seconds inside the worker (records, model loaded): in-process {mean['inproc']:.2f} s, "
            f"Ray worker {mean['ray']:.2f} s ({args.workers} side by side on {os.cpu_count()} CPUs); Ray's fixed "
            f"cost (wall − Σ study seconds / workers: Python + imports, Ray start, actor model loads, report, "
            f"shutdown) ≈ {fixed:.1f} s"
        )
        t = mean["ray"]
        hours = (fixed + COHORT * t / (NODES * args.workers)) / 3600.0
        print(
            f"Projection, {COHORT} studies on {NODES} nodes: T ≈ S + {COHORT} × t / ({NODES} × w), t = seconds per "
            f"study in one worker, w = workers per node, S = fixed cost. CPU-measured here: t = {t:.2f} s, "
            f"w = {args.workers}, S ≈ {fixed:.0f} s → {hours:.1f} h (as if each node were this 2-CPU machine). "
            f"Example with an ASSUMED (not measured) t = 2 s per study on one GPU worker, w = 1: "
            f"{(fixed + COHORT * 2.0 / NODES) / 60.0:.0f} min."
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}), "
        f"Python {platform.python_version()}; N = {n}, size {size[0]}×{size[1]}×{size[2]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

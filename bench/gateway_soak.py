"""Soak benchmark: 100 studies through the PACS gateway under seeded random faults and SIGKILLs, on CPU.

    .venv/bin/python bench/gateway_soak.py [--studies 100] [--seed 15] [--kills 12]

One phantom chest CT (the gateway tests' 150×110×80 phantom, two nodules) is copied into ``--studies`` studies of
as many patients (new UIDs each) and stored into a real Orthanc (Debian package, 127.0.0.1). The gateway runs as
``medai gateway --once`` child processes against Orthanc *through the fault proxy* of the tests
(``Testing/pacs/fault_proxy.py``): while it works, a seeded random schedule arms one fault at a time — a WADO-RS
retrieve cut after a random number of bytes, a STOW-RS request cut mid-upload or its answer lost after Orthanc
stored it, a burst of 503 answers, an answer stalled past the gateway's 1.5 s timeout — and each of the first
``--kills`` gateway processes is armed to SIGKILL itself at a random named point (retrieve, run, commit, store)
the n-th time it gets there (``MEDAI_TEST_KILL_AT``); the next process resumes from the journal.

Reported: studies done, studies whose results are stored exactly once (every result series once, one instance
each: must be all), retries (``job_retry`` + ``discover_failed`` log events), faults fired by kind, kills,
latency p50/p95 (StableStudy → results stored; every study arrives at once, so this includes queueing), job time
p50/p95, wall time and the gateway processes' peak RSS. Not a test: the suite has the deterministic versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WADO_SERIES = r"^GET /dicom-web/studies/[\d.]+/series/[\d.]+ HTTP"
STOW = r"^POST /dicom-web/studies"


def _studies(root: Path, count: int) -> list[Path]:
    from MedAIExtension.phantom.study import write_phantom_study
    from Testing.pacs.gateway_helpers import PHANTOM, copy_series

    source = write_phantom_study(root / "source", spec=PHANTOM)["ct"]
    return [copy_series(source, root / f"study{i:03d}", PatientID=f"SOAK-{i:03d}") for i in range(count)]


def _arm_random_fault(proxy: Any, rng: random.Random) -> tuple[str, Any]:
    """Arm one fault of a random kind on the proxy; returns its kind and the armed fault."""
    kind = rng.choice(["cut-retrieve", "cut-stow-request", "cut-stow-answer", "503-burst", "stall"])
    if kind == "cut-retrieve":
        return kind, proxy.cut(WADO_SERIES, after_bytes=rng.randint(20_000, 2_500_000))
    if kind == "cut-stow-request":
        return kind, proxy.cut(STOW, after_bytes=rng.randint(500, 60_000), direction="up")
    if kind == "cut-stow-answer":
        return kind, proxy.cut(STOW, after_bytes=rng.randint(0, 200), direction="down")
    if kind == "503-burst":
        return kind, proxy.unavailable(r"/dicom-web/", times=rng.randint(1, 3))
    return kind, proxy.stall(WADO_SERIES, after_bytes=rng.randint(20_000, 1_000_000), seconds=2.5)


def _exactly_once(store: Any, study_uid: str) -> bool:
    """Whether the study holds one SR series (and at most one SEG series) of one instance each."""
    from Testing.pacs.gateway_helpers import series_by_modality

    series = series_by_modality(store, study_uid)
    results = [*series.get("SEG", []), *series.get("SR", [])]
    return (
        len(series.get("SR", [])) == 1
        and len(series.get("SEG", [])) <= 1
        and all(item.number_of_instances == 1 for item in results)
    )


def run(studies: int, seed: int, kills: int) -> dict[str, object]:
    from MedAIExtension.gateway.journal import FINAL_STATES, JobState, Journal
    from MedAIExtension.gateway.kill_points import KILL_ENV_VAR, KILL_POINTS
    from MedAIExtension.pacs.dicomweb import DicomWebStore
    from Testing.pacs.fault_proxy import FaultProxy
    from Testing.pacs.gateway_helpers import config_data, post_instances, wait_for, write_config_file
    from Testing.pacs.orthanc_server import OrthancServer

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="medai-soak-") as tmp:
        root = Path(tmp)
        folders = _studies(root / "data", studies)
        with OrthancServer(root / "orthanc", stable_age=1) as server, FaultProxy(server.port) as proxy:
            for folder in folders:
                post_instances(server.url, folder)
            wait_for(lambda: all(s["IsStable"] for s in _orthanc_studies(server.url)), 120, "stable studies", 0.5)
            data = config_data(proxy.url, root / "work", max_attempts=12, retry_seconds=[0.5, 1, 2])
            data["pacs"]["timeout"] = 1.5
            config = write_config_file(root / "gateway.yaml", data)
            command = [sys.executable, "-m", "MedAIExtension.cli", "gateway", "--config", str(config), "--once"]
            command.append("--quiet")

            armed: list[tuple[str, Any]] = []
            stop = threading.Event()

            def chaos() -> None:
                while not stop.wait(rng.uniform(1.0, 4.0)):
                    armed.append(_arm_random_fault(proxy, rng))

            started = time.perf_counter()
            thread = threading.Thread(target=chaos, daemon=True)
            thread.start()
            killed, runs = 0, 0
            journal_path = root / "work" / "journal.sqlite"

            def finished() -> int:
                if not journal_path.exists():
                    return 0
                journal = Journal(journal_path)
                try:
                    return sum(1 for job in journal.jobs() if job.state in FINAL_STATES)
                finally:
                    journal.close()

            while finished() < studies and runs < kills + 40:
                env = dict(os.environ)
                if killed < kills:
                    env[KILL_ENV_VAR] = f"{rng.choice(KILL_POINTS)}@{rng.randint(1, 6)}"
                done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
                runs += 1
                if done.returncode == -9:
                    killed += 1
                elif done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
            stop.set()
            thread.join()
            wall = time.perf_counter() - started
            proxy.clear()

            journal = Journal(journal_path)
            try:
                jobs = journal.jobs()
            finally:
                journal.close()
            store = DicomWebStore(server.dicomweb_url)
            done_jobs = [job for job in jobs if job.state is JobState.DONE]
            once = sum(1 for job in done_jobs if _exactly_once(store, job.study_uid))
            log = [json.loads(line) for line in (root / "work" / "gateway.log").read_text().splitlines()]
            latency = np.array([job.latency_seconds for job in done_jobs if job.latency_seconds is not None])
            job_time = np.array([float(job.summary.get("seconds", 0.0)) for job in done_jobs])
            fired: dict[str, int] = {}
            for kind, fault in armed:
                fired[kind] = fired.get(kind, 0) + fault.fired
            return {
                "studies": studies,
                "studies_done": len(done_jobs),
                "failed": sum(1 for job in jobs if job.state is JobState.FAILED),
                "stored_exactly_once": once,
                "retries": sum(1 for r in log if r["event"] in ("job_retry", "discover_failed")),
                "faults_armed": len(armed),
                "faults_fired": fired,
                "kills": killed,
                "gateway_runs": runs,
                "latency_p50_s": round(float(np.percentile(latency, 50)), 1) if latency.size else None,
                "latency_p95_s": round(float(np.percentile(latency, 95)), 1) if latency.size else None,
                "job_time_p50_s": round(float(np.percentile(job_time, 50)), 2) if job_time.size else None,
                "job_time_p95_s": round(float(np.percentile(job_time, 95)), 2) if job_time.size else None,
                "wall_s": round(wall, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            }


def _orthanc_studies(url: str) -> list[dict[str, Any]]:
    import requests

    return list(requests.get(f"{url}/studies", params={"expand": ""}, timeout=60).json())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--kills", type=int, default=12, help="gateway processes armed to SIGKILL themselves")
    args = parser.parse_args()
    figures = run(args.studies, args.seed, args.kills)
    print(json.dumps(figures, indent=2))
    ok = figures["stored_exactly_once"] == figures["studies"] == figures["studies_done"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

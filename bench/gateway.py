"""Benchmark: 20 phantom chest CT studies through the PACS gateway and a real Orthanc, on CPU.

    .venv/bin/python bench/gateway.py [--patients 10] [--workers 1] [--model chest-ct-lung-nodule | --no-model]

Ten phantom patients with a baseline and a follow-up study each (20 studies) are written as DICOM (not timed).
An Orthanc (Debian package, 127.0.0.1, StableAge 1 s) is started; the baselines are uploaded by STOW-RS, then the
follow-ups, all at once (a burst, as when a batch arrives). The gateway (nodule-tracking rule; each follow-up
is tracked against its patient's prior and carries the prior report's Tracking UIDs) runs until every study is
stored. Reported: studies per minute, p50/p95 latency from "stable" (Orthanc's StableStudy change) to "results
stored", p50/p95 job time, and peak RSS.

Baseline measured in the same run: the same 20 pipeline runs called directly on the local files (no PACS, no
retrieve/store, no journal), one after another. The ratio gateway wall time / direct time is the gateway's
overhead (retrieve, prior lookup, STOW, journal, Orthanc's stability wait).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _write_studies(root: Path, patients: int) -> list[tuple[Path, Path]]:
    from MedAIExtension.phantom.followup import write_phantom_pair
    from Testing.pacs.gateway_helpers import PHANTOM

    pairs = []
    for index in range(patients):
        spec = replace(PHANTOM, seed=100 + index)
        folder = root / f"patient{index:02d}"
        write_phantom_pair(
            folder,
            baseline=spec,
            volume_factors=(1.2 + 0.1 * (index % 5), 1.0),
            patient_id=f"BENCH-{index:02d}",
            baseline_date=dt.date(2025, 1, 1) + dt.timedelta(days=index),
        )
        pairs.append((folder / "baseline" / "ct", folder / "followup" / "ct"))
    return pairs


def _direct(pairs: list[tuple[Path, Path]], model: str | None, out: Path) -> float:
    """The baseline: the same pipeline runs on local files, one after another."""
    from MedAIExtension.io.dicom_series import read_dicom_series
    from MedAIExtension.tracking import TrackingOptions, assess_study, track_nodules, write_study_dicom

    options = TrackingOptions(model=model, device="cpu")
    started = time.perf_counter()
    for index, (baseline, followup) in enumerate(pairs):
        base = read_dicom_series(baseline)
        write_study_dicom(assess_study(base, options), "baseline", out / f"{index}-b")
        result = track_nodules(base, read_dicom_series(followup), options)
        write_study_dicom(result, "followup", out / f"{index}-f")
    return time.perf_counter() - started


def _gateway(pairs: list[tuple[Path, Path]], model: str | None, workers: int, work: Path) -> dict[str, float]:
    from MedAIExtension.gateway import Gateway, JobState, parse_config
    from MedAIExtension.gateway.logs import GatewayLog
    from MedAIExtension.pacs.dicomweb import DicomWebStore
    from Testing.pacs.gateway_helpers import RULE_LUNG, dicom_files
    from Testing.pacs.orthanc_server import OrthancServer

    with OrthancServer(work / "orthanc", stable_age=1) as server:
        store = DicomWebStore(server.dicomweb_url)
        config = parse_config(
            {
                "pacs": {"type": "orthanc", "url": server.url, "poll_seconds": 0.5},
                "workdir": str(work / "gateway"),
                "workers": workers,
                "max_queued": 64,
                "device": "cpu",
                "rules": [dict(RULE_LUNG, model=model)],
            },
            "bench",
        )
        gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
        thread = threading.Thread(target=gateway.run, kwargs={"max_seconds": 3600})
        started = time.perf_counter()
        thread.start()
        for baseline, _ in pairs:
            store.store(dicom_files(baseline))
        # follow-ups arrive once their baselines are stable (as a later visit would), all together
        while sum(1 for _ in gateway.journal.jobs()) < len(pairs):
            time.sleep(0.2)
        for _, followup in pairs:
            store.store(dicom_files(followup))
        total = 2 * len(pairs)
        while gateway.journal.count([JobState.DONE, JobState.FAILED]) < total:
            time.sleep(0.2)
        wall = time.perf_counter() - started
        gateway.stop()
        thread.join()
        jobs = gateway.journal.jobs()
        gateway.close()
    failed = [job.detail for job in jobs if job.state is not JobState.DONE]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed: {failed[:3]}")
    latency = np.array([job.latency_seconds for job in jobs])
    seconds = np.array([job.summary["seconds"] for job in jobs])
    carried = sum(1 for job in jobs if job.summary.get("prior_report"))
    return {
        "wall": wall,
        "studies": float(total),
        "per_minute": total / wall * 60.0,
        "latency_p50": float(np.percentile(latency, 50)),
        "latency_p95": float(np.percentile(latency, 95)),
        "job_p50": float(np.percentile(seconds, 50)),
        "job_p95": float(np.percentile(seconds, 95)),
        "with_prior_report": float(carried),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10, help="patients (two studies each)")
    parser.add_argument("--workers", type=int, default=1)
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model", default=None, help="catalogue model adding candidates (default: none)")
    models.add_argument("--no-model", action="store_true")
    args = parser.parse_args()
    model = None if args.no_model else args.model
    with tempfile.TemporaryDirectory(prefix="medai-bench-gateway-") as tmp:
        root = Path(tmp)
        print(f"writing {2 * args.patients} phantom studies (150×110×80 voxels, 1.6×1.6×2.2 mm) ...", flush=True)
        pairs = _write_studies(root / "studies", args.patients)
        print("direct pipeline runs (baseline) ...", flush=True)
        direct = _direct(pairs, model, root / "direct")
        print(f"gateway with Orthanc ({args.workers} worker(s)) ...", flush=True)
        figures = _gateway(pairs, model, args.workers, root / "gateway")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
                "model": model or "classical detector",
                "workers": args.workers,
                "studies": figures["studies"],
                "gateway_wall_s": round(figures["wall"], 1),
                "direct_s": round(direct, 1),
                "ratio_gateway_over_direct": round(figures["wall"] / direct, 2),
                "studies_per_minute": round(figures["per_minute"], 1),
                "latency_stable_to_stored_p50_s": round(figures["latency_p50"], 1),
                "latency_stable_to_stored_p95_s": round(figures["latency_p95"], 1),
                "job_seconds_p50": round(figures["job_p50"], 1),
                "job_seconds_p95": round(figures["job_p95"], 1),
                "followups_with_prior_report": int(figures["with_prior_report"]),
                "peak_rss_mb": round(peak, 0),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

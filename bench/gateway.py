"""Benchmark: 20 phantom chest CT studies through the PACS gateway and a real Orthanc, on CPU.

    .venv/bin/python bench/gateway.py [--patients 10] [--workers 1] [--model chest-ct-lung-nodule | --no-model]
                                      [--transport dicomweb|dimse|both]

Ten phantom patients with a baseline and a follow-up study each (20 studies) are written as DICOM (not timed).
An Orthanc (Debian package, 127.0.0.1, StableAge 1 s) is started; the baselines are uploaded by STOW-RS, then the
follow-ups, all at once (a burst, as when a batch arrives). The gateway (nodule-tracking rule; each follow-up
is tracked against its patient's prior and carries the prior report's Tracking UIDs) runs until every study is
stored. Reported: studies per minute, p50/p95 latency from "stable" (Orthanc's StableStudy change) to "results
stored", p50/p95 job time, and peak RSS.

Baseline measured in the same run: the same 20 pipeline runs called directly on the local files (no PACS, no
retrieve/store, no journal), one after another. The ratio gateway wall time / direct time is the gateway's
overhead (retrieve, prior lookup, STOW, journal, Orthanc's stability wait).

``--transport dimse`` (``both``, the default, runs the two in one process, DICOMweb first) does the same over
classic DICOM networking, designed to be compared with the DICOMweb run:

* the PACS is pynetdicom's Query/Retrieve SCP (qrscp, 127.0.0.1, its SQLite index), reached with C-FIND (prior
  lookup, checks), C-GET (prior series, its SR and SEG) and C-STORE (SEG, SR and PR back);
* all 20 CTs are stored into it first, not timed: the PACS's own copy, as a routing rule keeps one and forwards
  another (without the CTs there, a follow-up would find no prior; the gateway never reads the current study
  from the PACS in this mode, and "earlier" compares StudyDate, so the follow-ups there change no baseline's job);
* the clock then starts as for DICOMweb; a "modality" (calling AE CT01) C-STOREs the ten baselines to the
  gateway's DICOM node (``listen``, ``stable_seconds`` 1, as Orthanc's StableAge), then, once they are journaled,
  the ten follow-ups, all at once; same rule, workers and poll interval (0.5 s) as the DICOMweb run.

Latency over DIMSE is counted from the moment the node calls a study stable (its last instance + ``stable_seconds``;
the journal's stable_at is the last instance) to results stored, as Orthanc's StableStudy change is for DICOMweb.
The run fails unless every job is done and every study holds one SEG, one SR and one PR in the archive. Peak RSS
is given per transport (Linux's VmHWM, reset before each run; it includes the in-process sender and, for DIMSE,
the node receiving the studies) and for the whole process. The ratios DIMSE / DICOMweb of studies per minute and
of median latency come from the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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
    return _figures(jobs, wall, total, latency)


def _gateway_dimse(pairs: list[tuple[Path, Path]], model: str | None, workers: int, work: Path) -> dict[str, float]:
    """The same studies through the gateway over DIMSE: a DICOM node in, pynetdicom's qrscp as the PACS."""
    from MedAIExtension.gateway import Gateway, JobState, parse_config
    from MedAIExtension.gateway.logs import GatewayLog
    from MedAIExtension.pacs.dimse import DimseSettings, DimseStore
    from MedAIExtension.pacs.errors import PacsError
    from Testing.pacs.dimse_archive import DimseArchive, free_port
    from Testing.pacs.gateway_helpers import RULE_LUNG, dicom_files

    stable_seconds = 1.0
    archive = DimseArchive(work / "archive")
    try:
        pacs = archive.store()
        for baseline, followup in pairs:  # the PACS's own copy of every CT (not timed): the priors live here
            pacs.store(dicom_files(baseline))
            pacs.store(dicom_files(followup))
        port = free_port()
        config = parse_config(
            {
                "pacs": {"type": "dimse", "host": "127.0.0.1", "port": archive.port, "called_ae": archive.ae_title,
                         "calling_ae": "MEDAI", "poll_seconds": 0.5, "timeout": 30},
                "listen": {"ae_title": "MEDAI", "port": port, "allowed_calling_aes": ["CT01"],
                           "stable_seconds": stable_seconds},
                "workdir": str(work / "gateway"),
                "workers": workers,
                "max_queued": 64,
                "device": "cpu",
                "rules": [dict(RULE_LUNG, model=model)],
            },
            "bench",
        )  # fmt: skip
        modality = DimseStore(DimseSettings("127.0.0.1", port, "MEDAI", "CT01", 30.0), check_existing=False)
        gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
        thread = threading.Thread(target=gateway.run, kwargs={"max_seconds": 3600})
        started = time.perf_counter()
        thread.start()
        while True:  # the node listens once run() has checked the PACS
            try:
                modality.check()
                break
            except PacsError:
                if not thread.is_alive() or time.perf_counter() - started > 60:
                    raise SystemExit("the gateway's DICOM node did not start listening") from None
                time.sleep(0.1)
        for baseline, _ in pairs:  # the routing rule's copy for MedAI, by C-STORE to its node
            modality.store(dicom_files(baseline))
        while sum(1 for _ in gateway.journal.jobs()) < len(pairs):
            time.sleep(0.2)
        for _, followup in pairs:
            modality.store(dicom_files(followup))
        total = 2 * len(pairs)
        while gateway.journal.count([JobState.DONE, JobState.FAILED]) < total:
            time.sleep(0.2)
        wall = time.perf_counter() - started
        gateway.stop()
        thread.join()
        jobs = gateway.journal.jobs()
        gateway.close()
        failed = [job.detail for job in jobs if job.state is not JobState.DONE]
        if len(jobs) != total or failed:
            raise SystemExit(f"DIMSE: {len(jobs)} jobs for {total} studies, {len(failed)} failed: {failed[:3]}")
        for job in jobs:  # the work really happened: one SEG, SR and PR per study in the archive
            counts = {s.modality: s.number_of_instances for s in pacs.search_series(job.study_uid)}
            if [counts.get(m) for m in ("SEG", "SR", "PR")] != [1, 1, 1]:
                raise SystemExit(f"study of job {job.id} holds {counts} in the archive, not one SEG, SR and PR")
    finally:
        archive.stop()
    # the node's stable_at is the study's last instance; it is called stable stable_seconds later
    latency = np.array([(job.latency_seconds or 0.0) - stable_seconds for job in jobs])
    return _figures(jobs, wall, total, latency)


def _figures(jobs: list, wall: float, total: int, latency: np.ndarray) -> dict[str, float]:
    seconds = np.array([job.summary["seconds"] for job in jobs])
    return {
        "wall": wall,
        "studies": float(total),
        "per_minute": total / wall * 60.0,
        "latency_p50": float(np.percentile(latency, 50)),
        "latency_p95": float(np.percentile(latency, 95)),
        "job_p50": float(np.percentile(seconds, 50)),
        "job_p95": float(np.percentile(seconds, 95)),
        "with_prior_report": float(sum(1 for job in jobs if job.summary.get("prior_report"))),
    }


def _row(figures: dict[str, float], direct: float, peak_mb: float) -> dict[str, float]:
    return {
        "studies": figures["studies"],
        "gateway_wall_s": round(figures["wall"], 1),
        "ratio_gateway_over_direct": round(figures["wall"] / direct, 2),
        "studies_per_minute": round(figures["per_minute"], 1),
        "latency_stable_to_stored_p50_s": round(figures["latency_p50"], 1),
        "latency_stable_to_stored_p95_s": round(figures["latency_p95"], 1),
        "job_seconds_p50": round(figures["job_p50"], 1),
        "job_seconds_p95": round(figures["job_p95"], 1),
        "followups_with_prior_report": int(figures["with_prior_report"]),
        "peak_rss_mb": round(peak_mb, 0),
    }


class _PeakMemory:
    """Peak resident memory of this process per phase: Linux's VmHWM, reset after each reading by writing 5 to
    /proc/self/clear_refs (elsewhere, or where that is refused, the peak so far: ru_maxrss)."""

    def __init__(self) -> None:
        self.overall_mb = 0.0
        self.resets = True

    def take(self) -> float:
        """The peak in MB since the last call (so far, where it cannot be reset), and reset it."""
        try:
            status = Path("/proc/self/status").read_text(encoding="ascii")
            peak = next(float(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        except (OSError, StopIteration, ValueError, IndexError):
            peak, self.resets = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, False
        self.overall_mb = max(self.overall_mb, peak)
        return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10, help="patients (two studies each)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--transport", choices=("dicomweb", "dimse", "both"), default="both")
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model", default=None, help="catalogue model adding candidates (default: none)")
    models.add_argument("--no-model", action="store_true")
    args = parser.parse_args()
    model = None if args.no_model else args.model
    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "model": model or "classical detector",
        "workers": args.workers,
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }
    memory = _PeakMemory()
    with tempfile.TemporaryDirectory(prefix="medai-bench-gateway-") as tmp:
        root = Path(tmp)
        print(f"writing {2 * args.patients} phantom studies (150×110×80 voxels, 1.6×1.6×2.2 mm) ...", flush=True)
        pairs = _write_studies(root / "studies", args.patients)
        print("direct pipeline runs (baseline) ...", flush=True)
        direct = _direct(pairs, model, root / "direct")
        report["direct_s"] = round(direct, 1)
        rows: dict[str, dict[str, float]] = {}
        if args.transport in ("dicomweb", "both"):
            print(f"gateway with Orthanc over DICOMweb ({args.workers} worker(s)) ...", flush=True)
            memory.take()
            rows["dicomweb"] = _gateway(pairs, model, args.workers, root / "gateway")
            report["dicomweb"] = _row(rows["dicomweb"], direct, memory.take())
        if args.transport in ("dimse", "both"):
            print(f"gateway over DIMSE: DICOM node in, qrscp as the PACS ({args.workers} worker(s)) ...", flush=True)
            memory.take()
            rows["dimse"] = _gateway_dimse(pairs, model, args.workers, root / "gateway-dimse")
            report["dimse"] = _row(rows["dimse"], direct, memory.take())
    if len(rows) == 2:
        report["dimse_over_dicomweb_studies_per_minute"] = round(
            rows["dimse"]["per_minute"] / rows["dicomweb"]["per_minute"], 2
        )
        report["dimse_over_dicomweb_latency_p50"] = round(
            rows["dimse"]["latency_p50"] / rows["dicomweb"]["latency_p50"], 2
        )
    report["peak_rss_mb"] = round(max(memory.overall_mb, memory.take()), 0)  # the whole run, direct runs included
    report["peak_rss_per_transport"] = "during that run" if memory.resets else "so far (could not be reset)"
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

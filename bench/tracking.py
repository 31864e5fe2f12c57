"""Benchmark: nodule tracking end to end on two 512×512×300 phantom chest CTs, on CPU.

    .venv/bin/python bench/tracking.py [--size 512 512 300] [--no-model] [--device cpu]

A baseline and a follow-up study of the same phantom patient (known growth, 10 mm shift + 5° rotation, 180 days)
are written as DICOM series first (not timed). Then, timed in one child process: both DICOM series are read,
nodules are detected, segmented and measured in both, the follow-up is registered to the baseline, nodules are
matched, and every output (JSON, CSV, SEG + SR per study, .seg.nrrd, HTML report) is written.
Prints the time against the issue's target (< 60 s) as a ratio, the peak RSS, and the per-step seconds, plus
the volume and VDT errors against the phantom's truth.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_SECONDS = 60.0


def _child(pair: Path, output: Path, model: str | None, device: str) -> None:
    from MedAIExtension.allocator import keep_freed_memory

    keep_freed_memory()  # the child is set up as the medai program sets itself up
    from MedAIExtension.io.loader import load_image
    from MedAIExtension.tracking.outputs import write_tracking_outputs
    from MedAIExtension.tracking.pipeline import TrackingOptions, track_nodules

    started = time.perf_counter()
    baseline = load_image(pair / "baseline" / "ct")
    followup = load_image(pair / "followup" / "ct")
    loaded = time.perf_counter()
    result = track_nodules(baseline, followup, TrackingOptions(model=model, device=device))
    tracked = time.perf_counter()
    write_tracking_outputs(result, output)
    done = time.perf_counter()
    report = {
        "seconds": done - started,
        "steps": {
            "read DICOM": loaded - started,
            "track": tracked - loaded,
            "write outputs": done - tracked,
            **{f"baseline {k}": v for k, v in result.baseline.seconds.items()},
            **{f"follow-up {k}": v for k, v in result.followup.seconds.items()},
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "registered": result.registered,
    }
    print(json.dumps(report))


def _errors(pair: Path, output: Path) -> list[str]:
    truth = json.loads((pair / "truth.json").read_text())
    found = json.loads((output / "tracking.json").read_text())["nodules"]
    lines = []
    for nodule in truth["nodules"]:
        if nodule["baseline"] is None or nodule["followup"] is None:
            continue
        centre = nodule["baseline"]["center_ras"]
        best = min(
            (row for row in found if row["baseline_center_ras"]),
            key=lambda row: sum((a - b) ** 2 for a, b in zip(row["baseline_center_ras"], centre, strict=True)),
            default=None,
        )
        if best is None:
            lines.append(f"  truth nodule {nodule['id']}: not found")
            continue
        errors = []
        for when in ("baseline", "followup"):
            measured = best[f"{when}_volume_mm3"]
            true = nodule[when]["volume_mm3"]
            errors.append(f"{when} {100 * (measured - true) / true:+.1f} %" if measured else f"{when} missing")
        vdt = (
            f"VDT {best['vdt_days']:.0f} d (truth {nodule['vdt_days']:.0f} d)"
            if nodule["vdt_days"] and best["vdt_days"]
            else f"VDT {best['vdt_days']} (truth {nodule['vdt_days']})"
        )
        lines.append(
            f"  truth nodule {nodule['id']} ({nodule['kind']}, {nodule['baseline']['diameter_mm']:.1f} mm) -> "
            f"{best['tracking_id']}: volume error {', '.join(errors)}; {vdt}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.25])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-model", action="store_true", help="classical detector only")
    parser.add_argument("--child", nargs=2, metavar=("PAIR", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = None if args.no_model else "chest-ct-lung-nodule"
    if args.child:
        _child(Path(args.child[0]), Path(args.child[1]), model, args.device)
        return 0

    from MedAIExtension.models.devices import cpu_threads
    from MedAIExtension.phantom.followup import write_phantom_pair

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"writing a {args.size[0]}×{args.size[1]}×{args.size[2]} phantom pair …", flush=True)
        write_phantom_pair(work / "pair", size_ijk=tuple(args.size), spacing=tuple(args.spacing), seed=11)
        command = [sys.executable, __file__, "--device", args.device, "--child", str(work / "pair"), str(work / "out")]
        if args.no_model:
            command.append("--no-model")
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stdout, out.stderr, file=sys.stderr)
            return 1
        report = json.loads(out.stdout.strip().splitlines()[-1])
        errors = _errors(work / "pair", work / "out")
    print(
        f"machine: {platform.processor() or platform.machine()}, {cpu_threads()} threads, "
        f"Python {platform.python_version()}; detector: {'classical only' if args.no_model else 'model + classical'}"
    )
    for step, seconds in report["steps"].items():
        print(f"  {step:<28} {seconds:6.1f} s")
    ratio = TARGET_SECONDS / report["seconds"]
    print(f"end to end: {report['seconds']:.1f} s; target < {TARGET_SECONDS:.0f} s -> {ratio:.2f}x the target speed")
    print(f"peak RSS: {report['peak_rss_mb'] / 1024:.2f} GB; registered: {report['registered']}")
    print("\n".join(errors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

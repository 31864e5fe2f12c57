"""Benchmark: ``medai segment`` end to end on a 512×512×300 phantom chest CT, as a user runs it.

    .venv/bin/python bench/segment_cli.py [--input nrrd|dicom|both] [--repeat 1] [--device cpu] [--profile DIR]

A 512×512×300 phantom chest CT (0.7×0.7×1.0 mm, seed 11) is written once into a temporary folder (not timed), as
an uncompressed NRRD and as a DICOM series. Then the real program runs as a child process, timed by the wall clock
from its start to its exit (Python start, imports, reading the input, loading the model, inference, every output
written):

    medai segment --model chest-ct-lung-nodule --input <ct> --output <folder> --device cpu --quiet

With the NRRD the outputs are .seg.nrrd, .nii.gz and summary.json (a DICOM SEG needs a DICOM input and is left out
with a warning, as ``medai`` does for a non-DICOM input without ``--format``); with the DICOM series a DICOM SEG is
written too. The same run first times ``medai --version`` (Python start and the CLI's own imports: the floor no
segmentation can go below).

Target (issue 17): ≤ 20 s end to end on this machine. Prints the time as a ratio to that target (≥ 1 is met), the
model's own seconds as ``medai`` reports them, the child's peak RSS (its ``ru_maxrss`` from ``wait4``, the same
figure ``RUSAGE_CHILDREN`` gives for one child) and its CPU seconds. ``--profile DIR`` adds one more run per input
under ``cProfile`` and ``-X importtime`` (slower; not counted) and prints where its time went.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "chest-ct-lung-nodule"
TARGET_SECONDS = 20.0
_RAN = re.compile(r"ran on (?P<provider>\S+) in (?P<seconds>[0-9.]+) s \((?P<windows>\d+) windows\)")
#: Functions of the pipeline whose cumulative time the profile prints, in the order they run.
_STAGES = (
    ("read the input", "io/loader.py", "load_image"),
    ("load the model", "models/backends.py", "load_backend"),
    ("inference (run_inference)", "models/inference.py", "run_inference"),
    ("plausibility warnings", "segmentation/plausibility.py", "plausibility_warnings"),
    ("write the outputs", "segmentation/outputs.py", "write_outputs"),
    ("label counts (inside the above)", "MedAIExtension/labels.py", "label_counts"),
)


def _medai() -> list[str]:
    """The installed ``medai`` program next to this Python, or the module when it is not installed."""
    script = Path(sys.executable).parent / "medai"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "MedAIExtension.cli"]


def _timed(command: list[str], log: Path) -> dict[str, Any]:
    """Run ``command`` with its output into ``log``; wall seconds, exit status and the child's own rusage."""
    with log.open("w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen so it does not wait again
    return {
        "seconds": seconds,
        "returncode": child.returncode,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "major_faults": usage.ru_majflt,
        "minor_faults": usage.ru_minflt,
        "output": log.read_text(errors="replace"),
    }


def _write_inputs(
    work: Path, size: tuple[int, int, int], spacing: tuple[float, float, float], kinds: set[str]
) -> dict[str, Path]:
    from MedAIExtension.io.dicom_series import write_dicom_series
    from MedAIExtension.io.volume_files import write_volume_file
    from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom

    phantom = generate_chest_phantom(PhantomSpec(size_ijk=size, spacing=spacing, seed=11))
    inputs = {}
    if "nrrd" in kinds:
        inputs["nrrd"] = write_volume_file(phantom.ct, work / "ct.nrrd", compress=False)
    if "dicom" in kinds:
        write_dicom_series(phantom.ct, work / "dicom", uid_seed="medai-bench-segment-cli")
        inputs["dicom"] = work / "dicom"
    return inputs


def _import_times(stderr: str) -> list[tuple[float, str]]:
    """Top-level imports from ``-X importtime`` output: (cumulative seconds, module), largest first."""
    rows = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 1:
            rows.append((int(match.group(1)) / 1e6, match.group(3)))
    return sorted(rows, reverse=True)


def _profile(command: list[str], ct: Path, work: Path, out_dir: Path) -> None:
    """One more run under cProfile and -X importtime, output into ``work``; print the stages' cumulative times and
    the biggest imports."""
    import pstats

    out_dir.mkdir(parents=True, exist_ok=True)
    profile = out_dir / "segment_cli.prof"
    script = command[-1] if len(command) == 1 else None
    if script is None:  # not installed: profile the module
        prefix = [sys.executable, "-X", "importtime", "-m", "cProfile", "-o", str(profile), "-m", "MedAIExtension.cli"]
    else:
        prefix = [sys.executable, "-X", "importtime", "-m", "cProfile", "-o", str(profile), script]
    args = _segment_args(ct, work)
    run = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
    (out_dir / "importtime.txt").write_text(run.stderr)
    if run.returncode != 0:
        print(run.stdout, run.stderr[-4000:], file=sys.stderr)
        return
    stats = pstats.Stats(str(profile))
    table: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    total = max(cumulative for (_, _, _, cumulative, _) in table.values())
    print(f"profile (cProfile + -X importtime, {total:.1f} s in the main thread; written to {out_dir}):")
    for label, file_part, function in _STAGES:
        rows = [row for (path, _, name), row in table.items() if name == function and file_part in path]
        calls = sum(row[1] for row in rows)
        print(f"  {label:<32} {sum(row[3] for row in rows):6.2f} s  ({calls} call{'s' if calls != 1 else ''})")
    imports = _import_times(run.stderr)
    print(f"  imports, all top-level modules: {sum(s for s, _ in imports):.2f} s; largest:")
    for seconds, module in imports[:8]:
        print(f"    {module:<40} {seconds:6.2f} s")
    with (out_dir / "cumulative.txt").open("w") as text:
        pstats.Stats(str(profile), stream=text).sort_stats("cumulative").print_stats(60)


def _segment_args(ct: Path, output: Path, device: str = "cpu") -> list[str]:
    return ["segment", "--model", MODEL, "--input", str(ct), "--output", str(output), "--device", device, "--quiet"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.0])
    parser.add_argument("--input", choices=["nrrd", "dicom", "both"], default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="runs per input, interleaved; the best counts")
    parser.add_argument("--profile", type=Path, default=None, help="also profile one run per input into DIR/<input>")
    args = parser.parse_args()
    kinds = {"nrrd", "dicom"} if args.input == "both" else {args.input}
    medai = _medai()

    from MedAIExtension.models.devices import cpu_threads

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        size, spacing = tuple(args.size), tuple(args.spacing)
        print(f"writing a {size[0]}×{size[1]}×{size[2]} phantom CT ({' + '.join(sorted(kinds))}) …", flush=True)
        inputs = _write_inputs(work, size, spacing, kinds)
        floor = _timed([*medai, "--version"], work / "version.log")
        print(f"  medai --version (Python start + the CLI's imports): {floor['seconds']:.2f} s", flush=True)
        best: dict[str, dict[str, Any]] = {}
        for round_ in range(max(args.repeat, 1)):
            for kind in ("nrrd", "dicom"):
                if kind not in inputs:
                    continue
                output = work / f"out-{kind}-{round_}"
                load = os.getloadavg()[0]  # other work on the machine shows here: compare CPU seconds too
                run = _timed([*medai, *_segment_args(inputs[kind], output, args.device)], work / f"{kind}.log")
                if run["returncode"] != 0:
                    print(run["output"], file=sys.stderr)
                    return 1
                ran = _RAN.search(run["output"])
                run["model_seconds"] = float(ran["seconds"]) if ran else float("nan")
                run["provider"] = ran["provider"] if ran else "?"
                run["windows"] = ran["windows"] if ran else "?"
                run["files"] = sorted(p.name for p in output.iterdir())
                print(
                    f"  run {round_ + 1}  {kind:<5} {run['seconds']:6.1f} s end to end  "
                    f"(inference {run['model_seconds']:.1f} s, {run['windows']} windows, {run['provider']})  "
                    f"peak RSS {run['peak_rss_mb']:6.0f} MB  "
                    f"CPU {run['cpu_seconds']:.1f} s  faults {run['minor_faults']}  load before {load:.2f}",
                    flush=True,
                )
                kept = best.setdefault(kind, run)
                if run["seconds"] < kept["seconds"]:
                    best[kind] = {**run, "peak_rss_mb": max(run["peak_rss_mb"], kept["peak_rss_mb"])}
                else:
                    kept["peak_rss_mb"] = max(run["peak_rss_mb"], kept["peak_rss_mb"])
        if args.profile:
            for kind, ct in inputs.items():
                print(f"{kind} input, ", end="")
                _profile(medai, ct, work / f"profile-{kind}", args.profile / kind)
    print(
        f"machine: {platform.processor() or platform.machine()}, {cpu_threads()} threads, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    shown = [Path(medai[0]).name, *medai[1:], *_segment_args(Path("<ct>"), Path("<out>"), args.device)]
    print(f"command: {' '.join(shown)}")
    for kind, run in best.items():
        ratio = TARGET_SECONDS / run["seconds"]
        verdict = "met" if run["seconds"] <= TARGET_SECONDS else "not met"
        print(f"{kind} input, best of {max(args.repeat, 1)}:")
        print(
            f"  end to end: {run['seconds']:.1f} s; target <= {TARGET_SECONDS:.0f} s -> {ratio:.2f}x the target speed"
            f" ({verdict})"
        )
        print(
            f"  inside it: inference {run['model_seconds']:.1f} s; everything else (start, imports, read, model load,"
            f" outputs) {run['seconds'] - run['model_seconds']:.1f} s"
        )
        print(f"  peak RSS: {run['peak_rss_mb'] / 1024:.2f} GB; outputs: {', '.join(run['files'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Child-process entry point of the Slicer modules: one long job, reported as JSON lines.

* ``python -m MedAIExtension.worker segment --input ... --model ... --output ...``
* ``python -m MedAIExtension.worker track --baseline ... --followup ... --output ... [--model NAME | --no-model]
  [--device D] [--deformable] [--force] [--interval-days N]``
* ``python -m MedAIExtension.worker explain --input ... --model ... --method ... --output ... [--target ...]
  [--roi R A S SR SA SS] ...`` (the options of :func:`MedAIExtension.explain.request.add_explain_arguments`)
* ``python -m MedAIExtension.worker review {metrics,memorization} --project P [--threshold T]`` (saves the result
  in the project, as ``medai review metrics`` / ``memorization`` do)

Prints one JSON event per line (see :mod:`MedAIExtension.runner`) and exits 0 on success, the error's exit code
otherwise. SIGTERM ends it at once; outputs are staged, so nothing partial is left behind.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Sequence

from MedAIExtension.errors import MedAIError
from MedAIExtension.explain.request import ExplainRequest, add_explain_arguments
from MedAIExtension.review.worker_tasks import REVIEW_TASKS, run_review_task
from MedAIExtension.runner import WorkerEvent, format_event

__all__ = ["main"]


def _emit(event: WorkerEvent) -> None:
    print(format_event(event), flush=True)


def _segment(args: argparse.Namespace) -> dict[str, str]:
    from MedAIExtension.segmentation.pipeline import SegmentRequest, segment_to_folder

    def warn(message: str) -> None:
        _emit(WorkerEvent("log", message=message))

    request = SegmentRequest(
        input=args.input,
        model=args.model,
        output=args.output,
        formats=args.format,
        device=args.device,
        series=args.series,
    )
    outcome = segment_to_folder(request, progress=lambda f, m: _emit(WorkerEvent("progress", f * 0.95, m)), warn=warn)
    files = outcome.files
    data = {key: str(path) for key, path in files.items()}
    if "nii.gz" in files:
        data["labelmap"] = str(files["nii.gz"])
    data["provider"] = outcome.result.provider
    return data


def _track(args: argparse.Namespace) -> dict[str, object]:
    from MedAIExtension.tracking.outputs import TrackRequest, track_to_folder
    from MedAIExtension.tracking.pipeline import TrackingOptions

    def warn(message: str) -> None:
        _emit(WorkerEvent("log", message=message))

    request = TrackRequest(args.baseline, args.followup, args.output, TrackingOptions.from_arguments(args))
    outcome = track_to_folder(request, progress=lambda f, m: _emit(WorkerEvent("progress", 0.99 * f, m)), warn=warn)
    result = outcome.result
    for message in result.warnings:
        warn(message)
    data: dict[str, object] = {key: str(path) for key, path in outcome.files.items()}
    data.update(
        output=str(args.output),
        nodules=len(result.nodules),
        registered=result.registered,
        interval_days=result.interval_days,
        warnings=list(result.warnings),
    )
    return data


def _explain(args: argparse.Namespace) -> dict[str, object]:
    request = ExplainRequest.from_arguments(args)
    from MedAIExtension.explain.pipeline import explain_to_folder

    def warn(message: str) -> None:
        _emit(WorkerEvent("log", message=message))

    document = explain_to_folder(request, progress=lambda f, m: _emit(WorkerEvent("progress", 0.99 * f, m)), warn=warn)
    files = document.get("files") or {}
    data: dict[str, object] = {"output": str(request.output), "document": str(request.output / "explanation.json")}
    for key, name in files.items():
        if isinstance(name, str):
            data[key] = str(request.output / name)
    for key in ("method", "target", "sanity", "notes", "seconds"):
        if key in document:
            data[key] = document[key]
    return data


def _review(args: argparse.Namespace) -> dict[str, object]:
    def progress(fraction: float, message: str) -> None:
        _emit(WorkerEvent("progress", 0.99 * fraction, message))

    data: dict[str, object] = dict(run_review_task(args.task, args.project, args.threshold, progress))
    data.update(task=args.task, project=str(args.project))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job and report it as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m MedAIExtension.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment")
    seg.add_argument("--input", required=True)
    seg.add_argument("--model", required=True)
    seg.add_argument("--output", required=True)
    seg.add_argument("--device", default="auto")
    seg.add_argument("--format", default="nii.gz")
    seg.add_argument("--series", default=None)
    seg.set_defaults(job=_segment)
    track = sub.add_parser("track")
    track.add_argument("--baseline", required=True)
    track.add_argument("--followup", required=True)
    track.add_argument("--output", required=True)
    models = track.add_mutually_exclusive_group()
    models.add_argument("--model", default="chest-ct-lung-nodule")
    models.add_argument("--no-model", action="store_true")
    track.add_argument("--device", default="auto")
    track.add_argument("--deformable", action="store_true")
    track.add_argument("--force", action="store_true")
    track.add_argument("--interval-days", type=float, default=None)
    track.set_defaults(job=_track)
    explain = sub.add_parser("explain")
    add_explain_arguments(explain)
    explain.set_defaults(job=_explain)
    review = sub.add_parser("review")
    review.add_argument("task", choices=REVIEW_TASKS)
    review.add_argument("--project", required=True)
    review.add_argument("--threshold", type=float, default=None)
    review.set_defaults(job=_review)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        data = args.job(args)
    except MedAIError as exc:
        _emit(WorkerEvent("error", message=str(exc), data={"type": type(exc).__name__}))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - report anything to the parent
        _emit(WorkerEvent("error", message=f"Unexpected error: {exc}", data={"traceback": traceback.format_exc()}))
        return 1
    _emit(WorkerEvent("result", 1.0, "done", data))
    return 0


if __name__ == "__main__":
    from MedAIExtension.allocator import keep_freed_memory

    keep_freed_memory()  # a job process: keep freed memory for reuse (see MedAIExtension.allocator)
    sys.exit(main())

"""Child-process entry point: ``python -m MedAIExtension.worker segment --input ... --model ... --output ...``.

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
from MedAIExtension.runner import WorkerEvent, format_event

__all__ = ["main"]


def _emit(event: WorkerEvent) -> None:
    print(format_event(event), flush=True)


def _segment(args: argparse.Namespace) -> dict[str, str]:
    from MedAIExtension.io.loader import load_image
    from MedAIExtension.segmentation import segment_image, write_outputs

    def progress(fraction: float, message: str) -> None:
        _emit(WorkerEvent("progress", fraction * 0.95, message))

    def warn(message: str) -> None:
        _emit(WorkerEvent("log", message=message))

    image = load_image(args.input, series_uid=args.series, warn=warn)
    result = segment_image(image, args.model, device=args.device, progress=progress)
    files = write_outputs(
        result.labelmap,
        result.labels,
        args.output,
        args.format,
        source=image,
        algorithm_name=result.model.name,
        algorithm_version=result.model.version,
        extra_summary={"provider": result.provider, "seconds": round(result.seconds, 3)},
    )
    data = {key: str(path) for key, path in files.items()}
    if "nii.gz" in files:
        data["labelmap"] = str(files["nii.gz"])
    data["provider"] = result.provider
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
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        data = _segment(args)
    except MedAIError as exc:
        _emit(WorkerEvent("error", message=str(exc), data={"type": type(exc).__name__}))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - report anything to the parent
        _emit(WorkerEvent("error", message=f"Unexpected error: {exc}", data={"traceback": traceback.format_exc()}))
        return 1
    _emit(WorkerEvent("result", 1.0, "done", data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``medai`` command line: segment, track, explain, review, gateway, worklist, deidentify, models, evaluate,
phantom, demo.

Errors print one clear message (no traceback unless ``--debug``) and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from MedAIExtension import __version__
from MedAIExtension.errors import MedAIError

__all__ = ["build_parser", "main"]


class _ProgressBar:
    """A tqdm bar on stderr fed by (fraction, message) callbacks."""

    def __init__(self, enabled: bool = True, lazy: bool = False) -> None:
        self.enabled = enabled
        self.bar: Any = None
        if not lazy:  # lazy: shown from the first callback on (checks made before the work print no bar)
            self._start()

    def _start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=1000, unit="‰", file=sys.stderr, disable=not self.enabled, bar_format="{l_bar}{bar}| {elapsed}"
        )

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is None:
            self._start()
        self.bar.set_description_str(message[:40].ljust(40))
        self.bar.update(max(int(fraction * 1000) - self.bar.n, 0))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _review_handler(handler: Any) -> Any:
    """Wrap a ``medai review`` handler ``handler(args, bar)`` so it gets a progress bar that is always closed."""

    def run(args: argparse.Namespace) -> int:
        bar = _ProgressBar(not args.quiet)
        try:
            return int(handler(args, bar) or 0)
        finally:
            bar.close()

    return run


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _cmd_segment(args: argparse.Namespace) -> int:
    from MedAIExtension.labels import label_statistics
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.inference import InferenceOptions
    from MedAIExtension.segmentation.outputs import parse_formats
    from MedAIExtension.segmentation.pipeline import SegmentRequest, segment_to_folder

    formats = parse_formats(args.format)
    catalog = load_catalog(args.catalog, models_dirs=args.models_dir or ())
    entry = catalog.get(args.model)
    options = InferenceOptions(
        overlap=args.overlap, batch_size=args.batch_size, roi_size=tuple(args.roi) if args.roi else None
    )
    request = SegmentRequest(
        input=args.input,
        model=entry,
        output=args.output,
        formats=tuple(formats),
        strict_formats=args.format_given,
        device=args.device,
        series=args.series,
        catalog=catalog,
        options=options,
        describe_input=True,
    )
    bar = _ProgressBar(not args.quiet, lazy=True)
    try:
        outcome = segment_to_folder(request, progress=bar, warn=_warn)
    finally:
        bar.close()
    result = outcome.result
    print(
        f"Model {entry.name} {entry.version} ran on {result.provider} "
        f"in {result.seconds:.1f} s ({result.windows} windows)."
    )
    for row in label_statistics(result.labelmap, result.labels):
        print(f"  {row['name']:<20} {row['volume_ml']:10.2f} mL  ({row['voxel_count']} voxels)")
    for fmt, path in outcome.files.items():
        print(f"  {fmt:<10} {path}")
    for message in outcome.warnings:
        _warn(message)
    return 0


def _cmd_track(args: argparse.Namespace) -> int:
    from MedAIExtension.tracking.outputs import TrackRequest, track_to_folder
    from MedAIExtension.tracking.pipeline import TrackingOptions

    request = TrackRequest(args.baseline, args.followup, args.output, TrackingOptions.from_arguments(args))
    bar = _ProgressBar(not args.quiet, lazy=True)
    try:
        outcome = track_to_folder(request, progress=bar, warn=_warn)
    finally:
        bar.close()
    result, files = outcome.result, outcome.files
    for message in result.warnings:
        _warn(message)
    exam = result.exam_lung_rads
    print(
        f"{len(result.nodules)} nodules tracked over {result.interval_days:g} days "
        f"({'registered' if result.registered else 'NOT registered'}); Lung-RADS baseline "
        f"{exam['baseline'].category}, follow-up {exam['followup'].category}."
    )
    for row in result.rows():
        vdt = f"VDT {row['vdt_days']:.0f} d" if row["vdt_days"] is not None else ""
        change = f"{row['volume_change_percent']:+.1f} %" if row["volume_change_percent"] is not None else ""
        volumes = " -> ".join(
            f"{row[key]:.0f}" if row[key] is not None else "—" for key in ("baseline_volume_mm3", "followup_volume_mm3")
        )
        print(
            f"  {row['tracking_id']:<4} {row['status']:<10} {volumes:>14} mm3 {change:>9} {vdt:>12}  {row['lung_rads']}"
        )
    for kind, path in files.items():
        print(f"  {kind:<16} {path}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from MedAIExtension.explain.pipeline import explain_to_folder
    from MedAIExtension.explain.request import ExplainRequest

    request = ExplainRequest.from_arguments(args)
    bar = _ProgressBar(not args.quiet)
    try:
        document = explain_to_folder(request, progress=bar, warn=_warn)
    finally:
        bar.close()
    target = document["target"]
    score = f" (model score {document['score']:.3f})" if document.get("score") is not None else ""
    print(f"{document['method_title']} of '{target['name']}' with {document['model']['name']}{score}.")
    for name, check in document.get("sanity", {}).items():
        print(f"  {name}: {check.get('summary', '')}")
    for row in (document.get("uncertainty") or {}).get("segments", []):
        print(f"  {row.get('name', row.get('value'))}: mean uncertainty {row.get('mean_entropy', float('nan')):.3f}")
    for kind, path in document["files"].items():
        for item in path if isinstance(path, list) else [path]:
            print(f"  {kind:<18} {request.output / item}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.devices import Device, cuda_available
    from MedAIExtension.segmentation.pipeline import runtime_entry

    catalog = load_catalog(args.catalog, models_dirs=args.models_dir or ())
    rows = []
    for entry in catalog.entries():
        backend = "onnx" if entry.backend == "onnx" else "torch"
        device = "cuda" if cuda_available(backend) else Device.CPU.value
        runs_as = runtime_entry(entry, Device.AUTO, catalog)
        rows.append(
            {
                "name": entry.name,
                "title": entry.title,
                "version": entry.version,
                "task": entry.task,
                "backend": entry.backend,
                "device": device,
                "runs_as": runs_as.name,
                "labels": [label.name for label in entry.labels],
                "source": entry.source,
            }
        )
    if args.json:
        print(json.dumps({"models": rows, "problems": catalog.problems}, indent=2))
        return 0
    for row in rows:
        where = f"would run on {row['device']}"
        if row["runs_as"] != row["name"]:
            where += f" as {row['runs_as']}: the same weights, faster there"
        print(f"{row['name']}  ({row['task']}, {row['version']}, {row['backend']}, {where})")
        print(f"    {row['title']}")
        print(f"    labels: {', '.join(row['labels'])}   [{row['source']}]")
    for problem in catalog.problems:
        _warn(problem)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from MedAIExtension.io.loader import load_image
    from MedAIExtension.metrics import compare_labelmaps, format_metrics_table

    pred = load_image(args.pred, warn=_warn)
    ref = load_image(args.ref, warn=_warn)
    labels = None
    if args.model:
        from MedAIExtension.models.catalog import load_catalog

        labels = [(label.value, label.name) for label in load_catalog().get(args.model).labels]
    rows = compare_labelmaps(pred, ref, labels, tolerance_mm=args.tolerance)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(format_metrics_table(rows, args.tolerance))
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from MedAIExtension.phantom.study import write_phantom_study

    if args.followup:
        from MedAIExtension.phantom.followup import write_phantom_pair

        study = write_phantom_pair(
            args.output,
            size_ijk=tuple(args.size),
            spacing=tuple(args.spacing),
            seed=args.seed,
            interval_days=args.interval_days,
            volume_factors=args.growth,
            rotation_deg=tuple(args.rotation),
            translation_mm=tuple(args.translation),
        )
        print(f"Baseline and follow-up studies written to {args.output} (truth: {study['truth']})")
        for key in ("baseline", "followup", "truth"):
            print(f"  {key:<10} {study[key]}")
        return 0
    study = write_phantom_study(args.output, size_ijk=tuple(args.size), spacing=tuple(args.spacing), seed=args.seed)
    print(f"Phantom study written to {args.output}")
    for key, path in study.items():
        print(f"  {key:<10} {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from MedAIExtension.demo import run_demo

    bar = _ProgressBar(not args.quiet)
    try:
        files = run_demo(args.output, device=args.device, progress=bar)
    finally:
        bar.close()
    print(f"Demo finished. Results in {args.output}:")
    for key, path in files.items():
        print(f"  {key:<12} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``medai``."""
    parser = argparse.ArgumentParser(prog="medai", description="MedAI: AI segmentation for medical images.")
    parser.add_argument("--version", action="version", version=f"medai {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment a CT/MR volume with a catalogue model")
    seg.add_argument("--input", required=True, help="DICOM folder, .nii.gz or .nrrd")
    seg.add_argument("--model", required=True, help="model name ('medai models' lists them)")
    seg.add_argument("--output", required=True, help="output folder")
    seg.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    seg.add_argument(
        "--format", default=None, help="comma list of seg.nrrd, nii.gz, dicom-seg (default: all that apply)"
    )
    seg.add_argument("--series", default=None, help="SeriesInstanceUID when the folder holds several series")
    seg.add_argument("--models-dir", action="append", help="extra folder with user models (ONNX / MONAI bundles)")
    seg.add_argument("--catalog", type=Path, default=None, help="model catalogue JSON (default: the shipped one)")
    seg.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: catalogue)")
    seg.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: catalogue)")
    seg.add_argument("--roi", type=int, nargs=3, default=None, metavar=("D", "H", "W"), help="window size")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=_cmd_segment)

    track = sub.add_parser("track", help="follow lung nodules from a baseline to a follow-up chest CT")
    track.add_argument("--baseline", required=True, help="baseline CT: DICOM folder, .nii.gz or .nrrd")
    track.add_argument("--followup", required=True, help="follow-up CT of the same patient")
    track.add_argument("--output", required=True, help="output folder")
    track.add_argument("--model", default="chest-ct-lung-nodule", help="model adding nodule candidates")
    track.add_argument("--no-model", action="store_true", help="classical detector only (no model)")
    track.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    track.add_argument("--deformable", action="store_true", help="add a B-spline registration inside the lungs")
    track.add_argument("--interval-days", type=float, default=None, help="days between the scans (default: dates)")
    track.add_argument("--force", action="store_true", help="track even if the patient IDs differ")
    track.add_argument("--suspicious", action="append", metavar="ID", help="nodule with suspicious features (4X)")
    track.add_argument("--quiet", action="store_true", help="no progress bar")
    track.set_defaults(func=_cmd_track)

    explain = sub.add_parser("explain", help="Grad-CAM, occlusion, integrated gradients or uncertainty map")
    from MedAIExtension.explain.request import add_explain_arguments

    add_explain_arguments(explain)
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    explain.set_defaults(func=_cmd_explain)

    from MedAIExtension.review.commands import add_review_parser

    add_review_parser(sub, lambda parser, handler: parser.set_defaults(func=_review_handler(handler)))

    from MedAIExtension.gateway.commands import add_gateway_parsers

    add_gateway_parsers(sub)

    from MedAIExtension.deid.commands import add_deidentify_parser

    add_deidentify_parser(sub)

    models = sub.add_parser("models", help="list the models and the device each would use")
    models.add_argument("--models-dir", action="append", help="extra folder with user models")
    models.add_argument("--catalog", type=Path, default=None, help="model catalogue JSON (default: the shipped one)")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)

    ev = sub.add_parser("evaluate", help="Dice, IoU, HD95, surface Dice of a prediction against a reference")
    ev.add_argument("--pred", required=True)
    ev.add_argument("--ref", required=True)
    ev.add_argument("--model", default=None, help="name the labels after this model's catalogue entry")
    ev.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    ph = sub.add_parser("phantom", help="write a synthetic chest CT study (DICOM, NIfTI, truth)")
    ph.add_argument("--output", required=True)
    ph.add_argument("--size", type=int, nargs=3, default=[256, 256, 160], metavar=("I", "J", "K"))
    ph.add_argument("--spacing", type=float, nargs=3, default=[1.4, 1.4, 2.0], metavar=("SI", "SJ", "SK"))
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--followup", action="store_true", help="also write a later study of the same patient + truth")
    ph.add_argument("--interval-days", type=int, default=180, help="days between baseline and follow-up")
    ph.add_argument("--growth", type=float, nargs="+", default=None, help="volume factor per nodule (follow-up)")
    ph.add_argument("--rotation", type=float, nargs=3, default=[0.0, 0.0, 5.0], metavar=("RX", "RY", "RZ"))
    ph.add_argument("--translation", type=float, nargs=3, default=[10.0, 0.0, 0.0], metavar=("TR", "TA", "TS"))
    ph.set_defaults(func=_cmd_phantom)

    demo = sub.add_parser("demo", help="phantom → segmentation → DICOM SEG, seg.nrrd, overlay PNG, HTML")
    demo.add_argument("--output", default="medai-demo")
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=_cmd_demo)
    return parser


_JOB_COMMANDS = frozenset({"segment", "track", "explain", "demo"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``medai``; returns the exit status.

    Run as the ``medai`` program (``argv`` None) for one job (segment, track, explain, demo), the process keeps
    freed memory for reuse (:func:`~MedAIExtension.allocator.keep_freed_memory`); not for the long-running gateway,
    and not when called with arguments from other code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:  # libraries' warnings about odd headers are noise to a user; MedAI says what matters itself
        import warnings

        warnings.filterwarnings("ignore", module=r"(pydicom|highdicom|SimpleITK|monai|torch|onnx)")
    if argv is None and getattr(args, "command", None) != "gateway":  # the gateway stops gracefully on its own
        from MedAIExtension.interrupts import interrupt_on_termination

        interrupt_on_termination()
    if argv is None and getattr(args, "command", None) in _JOB_COMMANDS:
        from MedAIExtension.allocator import keep_freed_memory

        keep_freed_memory()
    if getattr(args, "command", None) == "segment":
        args.format_given = args.format is not None
        if args.format is None:
            args.format = "seg.nrrd,nii.gz,dicom-seg"
    try:
        return int(args.func(args) or 0)
    except MedAIError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file-system failure no writer anticipated: one line, not a traceback
        if args.debug:
            raise
        from MedAIExtension.atomic import disk_full_error

        full = disk_full_error(exc, Path(getattr(args, "output", None) or "."))
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {full or f'{exc.strerror or exc}{where}. Check the path and its permissions.'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        print("error: interrupted; no output was written.", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", 2))


if __name__ == "__main__":
    sys.exit(main())

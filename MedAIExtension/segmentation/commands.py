"""``medai segment`` and ``medai evaluate``: segment a volume with a catalogue model, score a prediction."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_evaluate_parser", "add_segment_parser"]

_ALL_FORMATS = "seg.nrrd,nii.gz,dicom-seg"


def _cmd_segment(args: argparse.Namespace, bar: Any, warn: Callable[[str], None]) -> int:
    from MedAIExtension.labels import label_statistics
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.inference import InferenceOptions
    from MedAIExtension.segmentation.outputs import parse_formats
    from MedAIExtension.segmentation.pipeline import SegmentRequest, segment_to_folder

    formats = parse_formats(args.format if args.format is not None else _ALL_FORMATS)
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
        strict_formats=args.format is not None,  # formats named by the user must all be written
        device=args.device,
        series=args.series,
        catalog=catalog,
        options=options,
        describe_input=True,
    )
    try:
        outcome = segment_to_folder(request, progress=bar, warn=warn)
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
        warn(message)
    return 0


def _cmd_evaluate(args: argparse.Namespace, _bar: Any, warn: Callable[[str], None]) -> int:
    from MedAIExtension.errors import InputError
    from MedAIExtension.io.loader import load_image
    from MedAIExtension.metrics import compare_labelmaps, format_metrics_table

    if len(args.pred) != len(args.ref):
        raise InputError(
            f"Give one --ref per --pred ({len(args.pred)} predictions, {len(args.ref)} references), in the same order."
        )
    if args.froc:
        return _evaluate_froc(args, warn)
    if len(args.pred) > 1:
        raise InputError("Per-label metrics compare one prediction with one reference; use --froc for several scans.")
    pred = load_image(args.pred[0], warn=warn)
    ref = load_image(args.ref[0], warn=warn)
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


def _evaluate_froc(args: argparse.Namespace, warn: Callable[[str], None]) -> int:
    from MedAIExtension.errors import InputError
    from MedAIExtension.io.loader import load_image
    from MedAIExtension.segmentation.froc import format_froc, froc, scan_detections

    if args.label is None:
        raise InputError("--froc needs --label: the reference label value of the lesions (e.g. 2 for nodules).")
    scans = []
    for pred_path, ref_path in zip(args.pred, args.ref):
        prediction, reference = load_image(pred_path, warn=warn), load_image(ref_path, warn=warn)
        scans.append(scan_detections(prediction, reference, args.label, threshold=args.threshold))
    result = froc(scans)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_froc(result))
    return 0


def add_segment_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai segment`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
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
    set_handler(seg, _cmd_segment, bar="lazy")


def add_evaluate_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai evaluate`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
    ev = sub.add_parser(
        "evaluate",
        help="Dice, IoU, HD95, surface Dice of a prediction against a reference; or lesion detection (--froc)",
    )
    ev.add_argument("--pred", required=True, action="append", help="prediction (repeat with --froc: one per scan)")
    ev.add_argument("--ref", required=True, action="append", help="reference label map (one per --pred, in order)")
    ev.add_argument(
        "--froc",
        action="store_true",
        help="lesion-level FROC and LUNA16 CPM over the scans: a float --pred is a lesion probability map "
        "(candidates scored by their peak), an integer one a label map (one operating point)",
    )
    ev.add_argument("--label", type=int, default=None, help="with --froc: the lesion label value")
    ev.add_argument("--threshold", type=float, default=0.5, help="with --froc: probability that makes a candidate")
    ev.add_argument("--model", default=None, help="name the labels after this model's catalogue entry")
    ev.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm")
    ev.add_argument("--json", action="store_true")
    set_handler(ev, _cmd_evaluate, bar="none")

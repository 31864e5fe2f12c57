"""``medai track``: follow lung nodules from a baseline to a follow-up chest CT."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_track_parser"]


def _cmd_track(args: argparse.Namespace, bar: Any, warn: Callable[[str], None]) -> int:
    from MedAIExtension.tracking.outputs import TrackRequest, track_to_folder
    from MedAIExtension.tracking.pipeline import TrackingOptions

    request = TrackRequest(args.baseline, args.followup, args.output, TrackingOptions.from_arguments(args))
    try:
        outcome = track_to_folder(request, progress=bar, warn=warn)
    finally:
        bar.close()
    result, files = outcome.result, outcome.files
    for message in result.warnings:
        warn(message)
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


def add_track_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai track`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
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
    set_handler(track, _cmd_track, bar="lazy")

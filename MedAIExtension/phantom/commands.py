"""``medai phantom``: write a synthetic chest CT study (and optionally a follow-up of the same patient)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_phantom_parser"]


def _cmd_phantom(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
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


def add_phantom_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai phantom`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
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
    set_handler(ph, _cmd_phantom, bar="none")

"""``medai demo``: phantom -> segmentation -> DICOM SEG, seg.nrrd, overlay PNG and HTML, in one folder."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_demo_parser"]


def _cmd_demo(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.demo import run_demo

    try:
        files = run_demo(args.output, device=args.device, progress=bar)
    finally:
        bar.close()
    print(f"Demo finished. Results in {args.output}:")
    for key, path in files.items():
        print(f"  {key:<12} {path}")
    return 0


def add_demo_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai demo`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
    demo = sub.add_parser("demo", help="phantom → segmentation → DICOM SEG, seg.nrrd, overlay PNG, HTML")
    demo.add_argument("--output", default="medai-demo")
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--quiet", action="store_true")
    set_handler(demo, _cmd_demo, bar="eager")

"""The ``medai`` command line: segment, batch, track, explain, review, view, train, gateway, worklist, deidentify,
models, evaluate, phantom, demo.

Each package registers its sub-commands in its own ``commands.py`` (``add_<name>_parser(sub, set_handler)``);
this module holds the wiring, the progress bar, the warning printer and :func:`main`. Handlers take
``(args, bar, warn)`` and return the exit status. Errors print one clear message (no traceback unless
``--debug``) and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from MedAIExtension import __version__
from MedAIExtension.batch.commands import add_batch_parser
from MedAIExtension.command_types import BarMode, Handler
from MedAIExtension.deid.commands import add_deidentify_parser
from MedAIExtension.demo_commands import add_demo_parser
from MedAIExtension.errors import MedAIError
from MedAIExtension.explain.commands import add_explain_parser
from MedAIExtension.gateway.commands import add_gateway_parsers
from MedAIExtension.models.commands import add_models_parser
from MedAIExtension.phantom.commands import add_phantom_parser
from MedAIExtension.review.commands import add_review_parser
from MedAIExtension.segmentation.commands import add_evaluate_parser, add_segment_parser
from MedAIExtension.tracking.commands import add_track_parser
from MedAIExtension.training.commands import add_train_parser
from MedAIExtension.view.commands import add_view_parser

__all__ = ["build_parser", "main", "set_handler"]


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

    def close(self, failed: bool = False) -> None:
        """Finish the bar (it stays on screen), or clear it when the run ``failed``; closing twice does nothing."""
        if self.bar is not None:
            if failed:
                self.bar.leave = False
            self.bar.close()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def set_handler(parser: argparse.ArgumentParser, handler: Handler, *, bar: BarMode) -> None:
    """Make ``handler(args, bar, warn)`` the function :func:`main` runs for ``parser``'s sub-command.

    ``bar`` says when the progress bar on stderr appears: ``"eager"`` at once, ``"lazy"`` at the first progress
    callback (checks made before the work print no bar), ``"none"`` never (the handler's callbacks draw nothing).
    ``--quiet`` hides it. The handler may close the bar itself (before printing its results); it is closed after
    the handler returns or raises in any case. ``warn`` prints ``warning: ...`` on stderr.
    """

    def run(args: argparse.Namespace) -> int:
        progress = _ProgressBar(bar != "none" and not getattr(args, "quiet", False), lazy=bar != "eager")
        try:
            return int(handler(args, progress, _warn) or 0)
        finally:
            progress.close()

    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``medai``."""
    parser = argparse.ArgumentParser(prog="medai", description="MedAI: AI segmentation for medical images.")
    parser.add_argument("--version", action="version", version=f"medai {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in (
        add_segment_parser,
        add_batch_parser,
        add_track_parser,
        add_explain_parser,
        add_review_parser,
        add_gateway_parsers,
        add_deidentify_parser,
        add_models_parser,
        add_evaluate_parser,
        add_phantom_parser,
        add_demo_parser,
        add_view_parser,
        add_train_parser,
    ):
        add_parser(sub, set_handler)
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

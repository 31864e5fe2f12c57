"""The contract between ``medai`` (:mod:`MedAIExtension.cli`) and the ``commands.py`` of each package.

Each package registers its sub-commands with ``add_<name>_parser(sub, set_handler)``: it adds its parser to
``sub`` and calls ``set_handler(parser, handler, bar=...)``. The CLI then runs ``handler(args, bar, warn)`` and
exits with what it returns; ``bar`` is the CLI's progress bar (a ``(fraction, message)`` callback with
``close()``), ``warn`` prints ``warning: ...`` on stderr. ``commands.py`` files import their package's work inside
the handlers, so ``medai --help`` loads no pipeline.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Literal, Protocol

__all__ = ["BarMode", "Handler", "SetHandler", "SubParsers"]

#: The sub-parsers action of the ``medai`` parser.
SubParsers = argparse._SubParsersAction

#: When the progress bar appears: at once, at the first progress callback, or never.
BarMode = Literal["eager", "lazy", "none"]

#: A sub-command's handler: ``handler(args, bar, warn) -> exit status``.
Handler = Callable[[argparse.Namespace, Any, Callable[[str], None]], int]


class SetHandler(Protocol):
    """``set_handler(parser, handler, bar=...)``: make ``handler`` what runs for ``parser``'s sub-command."""

    def __call__(self, parser: argparse.ArgumentParser, handler: Handler, *, bar: BarMode) -> None: ...

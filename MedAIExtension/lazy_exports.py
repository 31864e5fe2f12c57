"""Package names loaded on first use (PEP 562), so importing one light module of a package loads nothing else.

``medai --help`` imports every package's ``commands.py``; Python runs the package's ``__init__`` first. A package
whose ``__init__`` re-exports its pipeline would load that pipeline (and SciPy, pydicom, ...) for ``--help``.
With :func:`lazy_exports` the ``__init__`` names its exports and the modules that define them, and each is
imported when it is first used::

    __getattr__, __dir__ = lazy_exports(__name__, {"track_nodules": "pipeline"}, globals())

Readers and type checkers see the same names in an ``if TYPE_CHECKING:`` block of imports beside it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps a name to its module in the package."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__

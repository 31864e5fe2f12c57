"""``medai explain``: Grad-CAM, occlusion, integrated gradients or an uncertainty map of a model's output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers
from MedAIExtension.explain.request import add_explain_arguments

__all__ = ["add_explain_parser", "headline"]


def _note(message: str) -> None:
    """An informational note (what was chosen or skipped), not a warning: ``note: ...`` on stderr."""
    print(f"note: {message}", file=sys.stderr)


def headline(document: dict[str, Any]) -> str:
    """The first line of the report: what was explained, of which output, with which model."""
    model = document["model"]["name"]
    if document.get("method") == "uncertainty":  # one map over every label, not one label's
        return f"{document['method_title']} over all labels of {model} (one map for the whole label map)."
    score = f" (model score {document['score']:.3f})" if document.get("score") is not None else ""
    return f"{document['method_title']} of '{document['target']['name']}' with {model}{score}."


def _cmd_explain(args: argparse.Namespace, bar: Any, warn: Callable[[str], None]) -> int:
    from MedAIExtension.explain.pipeline import explain_to_folder
    from MedAIExtension.explain.request import ExplainRequest

    request = ExplainRequest.from_arguments(args)
    try:
        document = explain_to_folder(request, progress=bar, warn=warn, note=_note)
    finally:
        bar.close()
    print(headline(document))
    for name, check in document.get("sanity", {}).items():
        print(f"  {name}: {check.get('summary', '')}")
    for row in (document.get("uncertainty") or {}).get("segments", []):
        print(f"  {row.get('name', row.get('value'))}: mean uncertainty {row.get('mean_entropy', float('nan')):.3f}")
    for kind, path in document["files"].items():
        for item in path if isinstance(path, list) else [path]:
            print(f"  {kind:<18} {request.output / item}")
    return 0


def add_explain_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai explain`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
    explain = sub.add_parser("explain", help="Grad-CAM, occlusion, integrated gradients or uncertainty map")
    add_explain_arguments(explain)
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    set_handler(explain, _cmd_explain, bar="eager")

"""``medai models``: list the catalogue's models and the device each would run on."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_models_parser"]


def _cmd_models(args: argparse.Namespace, _bar: Any, warn: Callable[[str], None]) -> int:
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.devices import Device, cuda_available
    from MedAIExtension.models.variants import runtime_entry

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
        warn(problem)
    return 0


def add_models_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai models`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
    models = sub.add_parser("models", help="list the models and the device each would use")
    models.add_argument("--models-dir", action="append", help="extra folder with user models")
    models.add_argument("--catalog", type=Path, default=None, help="model catalogue JSON (default: the shipped one)")
    models.add_argument("--json", action="store_true")
    set_handler(models, _cmd_models, bar="none")

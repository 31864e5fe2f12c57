"""``medai gateway`` and ``medai worklist``: the command-line side of the PACS gateway."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

__all__ = ["add_gateway_parsers"]


def _open(args: argparse.Namespace) -> Any:
    from MedAIExtension.gateway.config import load_config

    config = load_config(args.config)
    if getattr(args, "shadow", False):
        from dataclasses import replace

        config = replace(config, shadow=True)
    return config


def _cmd_gateway(args: argparse.Namespace) -> int:
    from MedAIExtension.gateway.service import Gateway

    config = _open(args)
    gateway = Gateway(config, quiet=args.quiet)
    previous = {}

    def stop(signum: int, _frame: Any) -> None:
        gateway.log("signal", signal=signal.Signals(signum).name)
        gateway.stop()
        for sig, handler in previous.items():  # a second signal ends the process at once
            signal.signal(sig, handler)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, stop)
    try:
        gateway.run(once=args.once, max_seconds=args.max_seconds)
    finally:
        gateway.close()
    return 0


def _cmd_worklist(args: argparse.Namespace) -> int:
    from MedAIExtension.gateway.journal import Journal
    from MedAIExtension.gateway.worklist import worklist_rows
    from MedAIExtension.pacs.credentials import credentials_from_config
    from MedAIExtension.pacs.dicomweb import DicomWebStore

    config = _open(args)
    journal_path = config.workdir / "journal.sqlite"
    if not journal_path.is_file():
        from MedAIExtension.errors import InputError

        raise InputError(
            f"No gateway journal in {config.workdir}. Start the gateway with this configuration first "
            "(medai gateway --config ...)."
        )
    journal = Journal(journal_path)
    try:
        store = None
        if not args.offline:
            store = DicomWebStore(config.pacs.dicomweb_url, credentials_from_config(config.pacs.section))
        rows = worklist_rows(journal, store, include_shadow=args.shadow)
    finally:
        journal.close()
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    if not rows:
        print("No finished studies yet.")
        return 0
    print(f"{'P':<2} {'priority':<9} {'date':<9} {'patient':<16} {'accession':<12} {'rule':<16} reason")
    for row in rows:
        print(
            f"{row.priority:<2} {row.label:<9} {row.study_date:<9} {row.patient_id[:16]:<16} "
            f"{row.accession_number[:12]:<12} {row.rule[:16]:<16} {row.reason}"
        )
    return 0


def add_gateway_parsers(sub: Any) -> None:
    """Register ``gateway`` and ``worklist`` on the ``medai`` sub-command parser."""
    gateway = sub.add_parser(
        "gateway", help="watch a PACS (Orthanc/DICOMweb), run pipelines by rule, store SEG/SR back"
    )
    gateway.add_argument("--config", required=True, type=Path, help="gateway.yaml (PACS, rules, work folder)")
    gateway.add_argument("--once", action="store_true", help="process what is there, then exit when idle")
    gateway.add_argument("--shadow", action="store_true", help="run and journal, but store nothing in the PACS")
    gateway.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    gateway.add_argument("--quiet", action="store_true", help="log to the work folder only, not to stderr")
    gateway.set_defaults(func=_cmd_gateway)

    worklist = sub.add_parser("worklist", help="studies the gateway finished, most urgent first")
    worklist.add_argument("--config", required=True, type=Path, help="the gateway's gateway.yaml")
    worklist.add_argument("--json", action="store_true")
    worklist.add_argument("--shadow", action="store_true", help="include shadow-mode results")
    worklist.add_argument("--offline", action="store_true", help="do not ask the PACS for patient/study details")
    worklist.set_defaults(func=_cmd_worklist)

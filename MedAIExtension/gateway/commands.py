"""``medai gateway``, ``medai gateway requeue`` and ``medai worklist``: the command-line side of the PACS gateway."""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from MedAIExtension.gateway.config import GatewayConfig
    from MedAIExtension.gateway.journal import Journal

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_gateway_parsers"]


def _open(args: argparse.Namespace) -> GatewayConfig:
    from MedAIExtension.gateway.config import load_config

    if args.config is None:
        from MedAIExtension.errors import InputError

        raise InputError("medai gateway needs --config gateway.yaml (the PACS, the rules and the work folder).")

    config = load_config(args.config)
    if getattr(args, "shadow", False):
        from dataclasses import replace

        config = replace(config, shadow=True)
    return config


def _check_pacs(config: GatewayConfig) -> int:
    """``medai gateway --check``: C-ECHO (DIMSE) or one search (DICOMweb) against the configured PACS."""
    from MedAIExtension.gateway.pacs_store import open_pacs_store

    store = open_pacs_store(config.pacs)
    store.check()  # PacsError: one line and exit 2, like every bad input
    how = "C-ECHO" if config.pacs.type == "dimse" else "a study search"
    print(f"PACS {store.name} answers ({how} succeeded).")
    return 0


def _cmd_gateway(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.gateway.service import Gateway

    config = _open(args)
    if args.check:
        return _check_pacs(config)
    gateway = Gateway(config, quiet=args.quiet)
    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def stop(signum: int, _frame: FrameType | None) -> None:
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


def _journal(config: GatewayConfig) -> Journal:
    from MedAIExtension.gateway.journal import existing_journal

    return existing_journal(config.workdir)


def _cmd_worklist(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.gateway.pacs_store import open_pacs_store
    from MedAIExtension.gateway.worklist import failed_rows, worklist_rows

    config = _open(args)
    journal = _journal(config)
    try:
        store = None
        if not args.offline:
            store = open_pacs_store(config.pacs)
        rows = worklist_rows(journal, store, include_shadow=args.shadow, workdir=config.workdir)
        failed = failed_rows(journal)
    finally:
        journal.close()
    if args.json:
        print(json.dumps([row.as_dict() for row in [*rows, *failed]], indent=2))
        return 0
    if not rows:
        print("No finished studies yet.")
    else:
        print(f"{'P':<2} {'priority':<9} {'date':<9} {'patient':<16} {'accession':<12} {'rule':<16} reason")
    for row in rows:
        print(
            f"{row.priority:<2} {row.label:<9} {row.study_date:<9} {row.patient_id[:16]:<16} "
            f"{row.accession_number[:12]:<12} {row.rule[:16]:<16} {row.reason}"
        )
        report = f"; RIS report {row.ris_report}" if row.ris_report else ""
        print(f"   study {row.study_uid} - " + (f"reviewed: {row.review}" if row.review else "not reviewed") + report)
    if rows:
        print("\nReview a study in the browser: medai view --study UID --config <this gateway.yaml>")
    if failed:
        print(f"\nFailed ({len(failed)}; after fixing the cause: medai gateway requeue --study UID --config ...):")
        for row in failed:
            print(f"  {row.study_uid}  {row.rule[:16]:<16} {row.reason}")
    return 0


def _cmd_requeue(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.dicom.uids import check_uid

    study_uid = check_uid(args.study, "--study value")
    config = _open(args)
    journal = _journal(config)
    try:
        jobs = journal.requeue(study_uid, args.rule)
    finally:
        journal.close()
    if not jobs:
        from MedAIExtension.errors import InputError

        raise InputError(
            f"The gateway journal has no failed job for study {study_uid}"
            + (f" and rule {args.rule!r}" if args.rule else "")
            + ". `medai worklist --config ...` lists the failed ones."
        )
    for job in jobs:
        print(f"re-queued job {job.id} ({job.rule}); a running gateway picks it up, or run medai gateway --once")
    return 0


def add_gateway_parsers(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``gateway`` (with ``gateway requeue``) and ``worklist`` (see :mod:`MedAIExtension.command_types`).

    The gateway logs its progress itself, so no bar.
    """
    gateway = sub.add_parser(
        "gateway", help="watch a PACS (Orthanc/DICOMweb), run pipelines by rule, store SEG/SR back"
    )
    gateway.add_argument("--config", type=Path, help="gateway.yaml (PACS, rules, work folder); required")
    gateway.add_argument("--once", action="store_true", help="process what is there, then exit when idle")
    gateway.add_argument("--shadow", action="store_true", help="run and journal, but store nothing in the PACS")
    gateway.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    gateway.add_argument("--quiet", action="store_true", help="log to the work folder only, not to stderr")
    gateway.add_argument(
        "--check", action="store_true", help="check the PACS answers (DIMSE: C-ECHO), print it and exit"
    )
    set_handler(gateway, _cmd_gateway, bar="none")
    actions = gateway.add_subparsers(dest="gateway_action", metavar="{requeue}")
    requeue = actions.add_parser("requeue", help="put a study's failed jobs back into the queue")
    requeue.add_argument("--study", required=True, help="StudyInstanceUID of the failed study (medai worklist)")
    requeue.add_argument("--config", required=True, type=Path, help="the gateway's gateway.yaml")
    requeue.add_argument("--rule", default=None, help="only the job of this rule")
    set_handler(requeue, _cmd_requeue, bar="none")

    worklist = sub.add_parser("worklist", help="studies the gateway finished, most urgent first")
    worklist.add_argument("--config", required=True, type=Path, help="the gateway's gateway.yaml")
    worklist.add_argument("--json", action="store_true")
    worklist.add_argument("--shadow", action="store_true", help="include shadow-mode results")
    worklist.add_argument("--offline", action="store_true", help="do not ask the PACS for patient/study details")
    set_handler(worklist, _cmd_worklist, bar="none")

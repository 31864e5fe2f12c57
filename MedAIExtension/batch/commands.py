"""``medai batch``: segment a cohort on Ray (embedded, or on a cluster), resumable through a results journal.

Exit status: 0 when every study of the batch is done, 1 when at least one study failed (the others are done and
their outputs kept; run the command again to retry the failed ones), 2 for bad input (nothing written, Ray not
started), 130 when interrupted (run the command again to resume).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_batch_parser"]

_SHOWN_FAILURES = 10


def _cmd_batch(args: argparse.Namespace, bar: Any, warn: Callable[[str], None]) -> int:
    import importlib.util

    from MedAIExtension.atomic import check_output_directory, ensure_writable_directory
    from MedAIExtension.batch.dicomweb_input import (
        discover_dicomweb_studies,
        is_dicomweb_query,
        source_from_gateway_config,
    )
    from MedAIExtension.batch.inputs import discover_studies
    from MedAIExtension.batch.journal import JOURNAL_NAME, Journal
    from MedAIExtension.batch.ray_runner import run_on_ray
    from MedAIExtension.batch.report import write_batch_report
    from MedAIExtension.batch.study import remove_stale_staging
    from MedAIExtension.errors import InputError
    from MedAIExtension.models.catalog import load_catalog

    # Every check before anything is written or Ray starts.
    if args.max_attempts < 1:
        raise InputError(f"--max-attempts must be at least 1 (got {args.max_attempts}).")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1 (got {args.workers}).")
    if importlib.util.find_spec("ray") is None:
        raise InputError(
            "medai batch needs Ray, which is not installed. Install it with "
            "'pip install -r Resources/requirements-ray.txt' (make venv does)."
        )
    entry = load_catalog().get(args.model)
    if entry.task != "segmentation":
        raise InputError(f"Model {entry.name} is a {entry.task} model; medai batch runs segmentation models.")
    output = Path(args.output)
    check_output_directory(output)
    dicomweb = None
    if is_dicomweb_query(args.input):
        if args.gateway_config is None:
            raise InputError(
                "A DICOMweb --input needs --gateway-config: the gateway's YAML, whose pacs section names the "
                "DICOMweb server (dicomweb_url) and its credentials."
            )
        if args.reference is not None:
            raise InputError("--reference matches label maps to files by name; DICOMweb studies have none. Drop it.")
        dicomweb = source_from_gateway_config(args.gateway_config)
        store = dicomweb.open()
        try:
            studies, refused = discover_dicomweb_studies(args.input, store)
        finally:
            store.close()
        if refused:
            warn(f"{refused} series found on the DICOMweb server have malformed UIDs and were left out.")
    else:
        if args.gateway_config is not None:
            raise InputError("--gateway-config is for a DICOMweb --input ('dicomweb:Modality=CT&…'). Drop it.")
        studies = discover_studies(args.input, args.reference, skip=output)
    wanted = {s.key for s in studies}

    ensure_writable_directory(output)
    with Journal.open(output) as journal:
        journal.add(studies)
        journal.recover()
        remove_stale_staging(journal.studies_dir)
        todo = [s for s in journal.todo(args.max_attempts) if s.key in wanted]
        summary = run_on_ray(
            todo,
            journal,
            args.model,
            address=args.address,
            workers=args.workers,
            device=args.device,
            progress=bar,
            uncertainty=args.annotation_queue,
            dicomweb=dicomweb,
        )
        bar.close()
        rows = [row for row in journal.rows() if row.key in wanted]
    records = [row.record for row in rows if row.record is not None]
    report = write_batch_report(records, entry, output, queue=args.annotation_queue) if records else {}
    done = sum(row.state == "done" for row in rows)
    failed = [row for row in rows if row.state == "failed"]
    print(
        f"Batch of {len(rows)} studies with {entry.name} {entry.version}: {done} done, {len(failed)} failed "
        f"({summary.done + summary.failed} run now on {summary.workers} worker(s), {summary.seconds:.1f} s)."
    )
    print(f"  outputs  {output / 'studies'}")
    print(f"  journal  {output / JOURNAL_NAME}")
    for kind in ("html", "queue"):
        if kind in report:
            print(f"  {'report' if kind == 'html' else 'queue':<8} {report[kind]}")
    for row in failed[:_SHOWN_FAILURES]:
        print(f"  failed   {row.source}: {row.error} (attempts: {row.attempts})")
    if len(failed) > _SHOWN_FAILURES:
        print(f"  ... and {len(failed) - _SHOWN_FAILURES} more failed studies (see the journal).")
    if failed:
        warn(f"{len(failed)} studies failed; run the same command again to retry them (--max-attempts).")
    return 1 if failed else 0


def add_batch_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai batch`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
    batch = sub.add_parser(
        "batch",
        help="segment a cohort on Ray (embedded or on a cluster), resumable",
        description="Segment every study of a folder tree or CSV manifest on Ray. Exit status: 0 all done, "
        "1 some studies failed (run again to retry them), 2 bad input, 130 interrupted (run again to resume).",
    )
    batch.add_argument(
        "--input",
        required=True,
        help="folder tree (one study per DICOM series folder and per .nii.gz/.nrrd file), CSV manifest "
        "(columns input[,reference]), or a DICOMweb query 'dicomweb:Modality=CT&StudyDate=20240101-20241231' "
        "(QIDO-RS series matching; one study per series; needs --gateway-config)",
    )
    batch.add_argument(
        "--gateway-config",
        default=None,
        help="for a DICOMweb --input: the gateway's YAML; its pacs section gives the DICOMweb server and credentials "
        "(secrets from an environment variable or a file)",
    )
    batch.add_argument("--model", required=True, help="segmentation model ('medai models' lists them)")
    batch.add_argument("--output", required=True, help="output folder: studies/<key>/ per study and journal.sqlite")
    batch.add_argument(
        "--reference",
        default=None,
        help="folder of reference label maps matched to the studies by file stem (a manifest's 'reference' "
        "column wins); adds Dice, IoU, HD95 and NSD per label to each study's record",
    )
    batch.add_argument(
        "--address",
        default=None,
        help="join an existing Ray cluster ('auto' or HOST:PORT); default: an embedded Ray on 127.0.0.1",
    )
    batch.add_argument("--workers", type=int, default=None, help="workers, each loading the model once (default: CPUs)")
    batch.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    batch.add_argument(
        "--max-attempts", type=int, default=2, help="attempts per study across runs before it stays failed (2)"
    )
    batch.add_argument(
        "--annotation-queue",
        action="store_true",
        help="also rank the studies by model uncertainty (test-time flips: two more model passes per study) into "
        "queue.csv, most informative first, for annotators",
    )
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    set_handler(batch, _cmd_batch, bar="lazy")

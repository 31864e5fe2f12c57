"""The ``medai deidentify`` sub-command: de-identify DICOM studies and their derived objects into a folder.

The key comes from ``--key-file`` or the environment variable ``MEDAI_DEID_KEY`` (never from the command line
itself, where other users could read it); without either, a random key is used and a warning says that the
UIDs will not match a later run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_deidentify_parser"]


def _cmd_deidentify(args: argparse.Namespace, bar: Any, warn: Callable[[str], None]) -> int:
    """Handler of ``medai deidentify``; returns the exit status (errors are raised as MedAIError)."""
    from MedAIExtension.deid.deidentify import DeidOptions, deidentify_files
    from MedAIExtension.deid.uids import KEY_ENV_VAR, load_key

    key, persistent = load_key(args.key_file)
    options = DeidOptions(
        date_shift_days=args.date_shift_days,
        skip_burned_in=args.skip_burned_in,
        keep_series_descriptions=args.keep_series_descriptions,
        strict=args.strict,
    ).check()
    if not persistent:
        warn(
            f"no key given (--key-file or {KEY_ENV_VAR}): a random key is used for this run only, so its UIDs and "
            "pseudonyms will not match files de-identified in another run."
        )
    try:
        report = deidentify_files(args.inputs, args.output, key, options, progress=bar)
    except BaseException:
        bar.close(failed=True)
        raise
    bar.close()
    for path, reason in report.skipped:
        warn(f"skipped {path}: {reason}")
    print(
        f"{len(report.written)} file(s) of {report.studies} study(ies) de-identified into {args.output} "
        f"({report.uid_count} UIDs remapped, {len(report.skipped)} file(s) skipped)."
    )
    return 0


def add_deidentify_parser(subparsers: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai deidentify`` (see :mod:`MedAIExtension.command_types`)."""
    parser = subparsers.add_parser(
        "deidentify",
        help="de-identify DICOM studies and their SEG/SR/maps (PS3.15 Basic Profile)",
        description=(
            "De-identify DICOM files and folders with the PS3.15 Basic Application Level Confidentiality Profile. "
            "UIDs are remapped with a secret key so that studies and derived objects de-identified in different "
            "runs with the same key still reference each other. Output: OUTPUT/<study>/<series>/<instance>.dcm."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM files or folders (searched recursively)")
    parser.add_argument("--output", required=True, help="output folder (outside the input folders)")
    parser.add_argument(
        "--key-file",
        default=None,
        help="file holding the secret key (default: the MEDAI_DEID_KEY environment variable, else a random key)",
    )
    parser.add_argument(
        "--date-shift-days",
        type=int,
        default=None,
        metavar="DAYS",
        help="shift all dates by DAYS instead of removing them (keeps intervals between studies)",
    )
    parser.add_argument(
        "--skip-burned-in",
        action="store_true",
        help="leave out images with burned-in annotation instead of failing",
    )
    parser.add_argument(
        "--keep-series-descriptions",
        action="store_true",
        help="keep Series Description (only when it holds no identifying text)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole run (nothing written) when a file is damaged — pixel data truncated or not "
        "decodable, or a DICOM file that cannot be read — instead of leaving it out (listed as skipped)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    set_handler(parser, _cmd_deidentify, bar="lazy")

"""``medai view PATH``: serve a study or a MedAI result folder to a browser on 127.0.0.1, behind a random token.

``medai view --study UID --config gateway.yaml`` reviews a study the gateway processed: its images and AI SEG are
fetched back from the PACS (:mod:`MedAIExtension.view.gateway_study`), removed again when the server stops, and the
decisions show in ``medai worklist``.

Prints one line, ``MedAI view: http://127.0.0.1:PORT/?token=…``, once the page answers, and serves until Ctrl-C
(exit 130) or SIGTERM. Bad input (no such path, a result folder whose study cannot be found, a busy port) is one
``error:`` line and exit 2, before anything is served.
"""

from __future__ import annotations

import argparse
import getpass
import signal
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_view_parser", "default_user"]


def default_user() -> str:
    """Who is using the view when ``--user`` is not given: the operating system user (``"unknown"`` if none)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):
        return "unknown"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check_port(port: int) -> None:
    from MedAIExtension.errors import InputError

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise InputError(f"Port {port} on 127.0.0.1 is not free ({exc.strerror}). Pick another --port.") from None


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)


def _cmd_view(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.errors import InputError
    from MedAIExtension.view.review_app import ReviewApp, resolve_view_input
    from MedAIExtension.view.token_guard import new_token

    if args.study is not None and (args.path is not None or args.image is not None):
        raise InputError("Give either PATH (a study or a result folder) or --study UID --config FILE, not both.")
    if args.study is None and args.path is None:
        raise InputError("Give PATH (a study or a result folder), or --study UID --config gateway.yaml.")
    if args.rule is not None and args.study is None:
        raise InputError("--rule goes with --study UID --config gateway.yaml.")
    if (args.study is None) != (args.config is None):
        raise InputError("--study and --config go together: the study UID and the gateway.yaml that processed it.")
    port = args.port or _free_port()
    _check_port(port)
    gateway = None
    if args.study is not None:
        from MedAIExtension.view.gateway_study import open_gateway_study

        gateway = open_gateway_study(args.config, args.study, args.rule)
        view = replace(
            resolve_view_input(gateway.folder),
            title=f"MedAI view: gateway job {gateway.job.id} ({gateway.job.rule})",
            after_export=gateway.store_in_pacs,
        )
    else:
        view = resolve_view_input(args.path, args.image)
    view = replace(view, user=args.user or default_user())
    if gateway is not None:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # so that `finally` removes the fetched images
    try:
        app = ReviewApp(view)
        token = new_token()
        url = f"http://127.0.0.1:{port}/?token={token}"

        def announce(**_: Any) -> None:
            print(f"MedAI view: {url}", flush=True)

        app.server.controller.on_server_ready.add(announce)
        app.serve(port, token)
    finally:
        if gateway is not None:
            gateway.remove_images()
    return 0


def add_view_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai view`` on the CLI's sub-parsers (see :mod:`MedAIExtension.command_types`)."""
    view = sub.add_parser(
        "view",
        help="review a study or a MedAI result in a browser (127.0.0.1, token in the printed URL)",
        description="Serve a study (DICOM folder, NIfTI/NRRD) or a medai segment / medai batch result folder to a "
        "browser on 127.0.0.1. The printed URL carries a random token; requests without it are refused (403).",
    )
    view.add_argument(
        "path", nargs="?", default=None, help="a study, or a result folder (summary.json + segmentation.nii.gz)"
    )
    view.add_argument("--image", default=None, help="the study a result folder was computed from, when moved")
    view.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    view.add_argument(
        "--user",
        default=None,
        help="who reviews or annotates (recorded with each decision and correction; default: the login name)",
    )
    view.add_argument(
        "--study",
        default=None,
        help="review a study the gateway processed (its StudyInstanceUID, as medai worklist shows it), with --config",
    )
    view.add_argument("--rule", default=None, help="with --study: the gateway rule whose result to review")
    view.add_argument("--config", type=Path, default=None, help="the gateway.yaml that processed --study")
    set_handler(view, _cmd_view, bar="none")

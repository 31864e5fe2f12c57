"""A real Orthanc server for the PACS tests: its own configuration, storage and port, started as a child process.

The Debian ``orthanc`` (1.10) and ``orthanc-dicomweb`` packages provide ``/usr/sbin/Orthanc`` and the DICOMweb
plugin. The server listens on 127.0.0.1 only (``RemoteAccessAllowed`` false, no DICOM port). Every started
server is stopped when the Python process exits (``atexit``) and receives SIGTERM if its parent dies
(``PR_SET_PDEATHSIG``), so a failing or killed test run leaves no orphan Orthanc process.

Use it as a context manager::

    with OrthancServer(tmp_path) as server:
        requests.get(f"{server.url}/system")
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = [
    "DICOMWEB_PLUGIN",
    "ORTHANC_BINARY",
    "USER_METADATA",
    "OrthancServer",
    "OrthancStartError",
    "free_port",
    "orthanc_missing_reason",
]

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: User-defined metadata the MedAI gateway stores on studies (Orthanc 1.10 has no labels).
USER_METADATA = {"MedAIPriority": 1024, "MedAIPriorityReason": 1025, "MedAIStatus": 1026}

_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1

#: Servers started and not yet stopped (strong references, so that exit still stops them).
_running: set[OrthancServer] = set()


class OrthancStartError(RuntimeError):
    """Orthanc did not come up; the message holds the tail of its log."""


def orthanc_missing_reason() -> str | None:
    """Why the Orthanc tests cannot run, or ``None`` when Orthanc and its DICOMweb plugin are installed."""
    if not ORTHANC_BINARY.exists():
        return f"{ORTHANC_BINARY} is missing (Debian package orthanc; run `make system-deps`)"
    if not DICOMWEB_PLUGIN.exists():
        return f"{DICOMWEB_PLUGIN} is missing (Debian package orthanc-dicomweb; run `make system-deps`)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class OrthancServer:
    """One Orthanc process with its configuration, storage, index and log in ``folder``.

    Args:
        folder: where to keep configuration, storage and log (a new temporary folder when ``None``, removed on
            :meth:`stop`).
        stable_age: Orthanc's ``StableAge`` in seconds (how long after the last instance a study becomes stable).
        users: basic-auth users (name → password); authentication is enabled when given.
        verbose: start Orthanc with ``--verbose``.
        extra_config: further Orthanc configuration keys (override the defaults).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        stable_age: int = 1,
        users: dict[str, str] | None = None,
        verbose: bool = False,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._own_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="medai-orthanc-")) if folder is None else Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.stable_age = int(stable_age)
        self.users = dict(users or {})
        self.verbose = verbose
        self.extra_config = dict(extra_config or {})
        self._process: subprocess.Popen[bytes] | None = None

    # ---- properties -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:8042``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """Base URL of the DICOMweb plugin."""
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        """The Orthanc log file."""
        return self.folder / "orthanc.log"

    @property
    def config_path(self) -> Path:
        """The JSON configuration written by :meth:`start`."""
        return self.folder / "orthanc.json"

    @property
    def auth(self) -> tuple[str, str] | None:
        """Basic-auth pair of the first registered user, or ``None`` without authentication."""
        return next(iter(self.users.items()), None)

    @property
    def pid(self) -> int | None:
        """Process id of the running Orthanc, or ``None``."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        """Whether the Orthanc process is alive."""
        return self._process is not None and self._process.poll() is None

    # ---- configuration ----------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The Orthanc configuration this server runs with."""
        config: dict[str, Any] = {
            "Name": f"MedAI-test-{self.port}",
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": False,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "UserMetadata": dict(USER_METADATA),
            "StableAge": self.stable_age,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": dict(self.users),
            "SaveJobs": False,
            "HttpThreadsCount": 8,
        }
        config.update(self.extra_config)
        return config

    # ---- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until ``/system`` answers.

        Raises:
            OrthancStartError: Orthanc exited or did not answer within 20 s (the message holds its log tail).
        """
        if self.running:
            return self
        reason = orthanc_missing_reason()
        if reason:
            raise OrthancStartError(reason)
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        command = [str(ORTHANC_BINARY), f"--logfile={self.log_path}"]
        if self.verbose:
            command.append("--verbose")
        command.append(str(self.config_path))
        with (self.folder / "orthanc.stderr").open("ab") as stderr:
            self._process = subprocess.Popen(
                command,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_die_with_parent,
            )
        _running.add(self)
        try:
            self._wait_until_up()
        except BaseException:
            self._terminate()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise OrthancStartError(f"Orthanc exited with status {code} while starting.\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/system", auth=self.auth, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise OrthancStartError(
            f"Orthanc did not answer on {self.url} within {_START_TIMEOUT_S:.0f} s.\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 10 s); remove the folder if this server created it."""
        self._terminate()
        _running.discard(self)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT_S)

    def restart(self) -> OrthancServer:
        """Stop and start again on the same port with the same storage (stored data survives)."""
        self._terminate()
        return self.start()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the Orthanc log (and stderr), for failure messages."""
        parts = []
        for path in (self.log_path, self.folder / "orthanc.stderr"):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(Orthanc wrote no log)"

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"OrthancServer({self.url}, {state}, folder={self.folder})"


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()

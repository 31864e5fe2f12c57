"""A real DICOM archive on loopback for the DIMSE tests: pynetdicom's own Query/Retrieve SCP (``qrscp``, with its
SQLite index; run with Nagle's algorithm off, :mod:`.qrscp_nodelay`), bound to 127.0.0.1 on a free port, plus a
TCP proxy that cuts an association after a number of bytes.

dcmtk's ``dcmqrscp`` cannot be bound to one interface (it listens on all of them), so it is not used here.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from MedAIExtension.pacs.dimse import DimseSettings, DimseStore
from MedAIExtension.pacs.errors import PacsError

__all__ = ["CutProxy", "DimseArchive", "free_port"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DimseArchive:
    """``python -m pynetdicom qrscp`` with AE title ``ae_title`` in ``folder``; stopped by :meth:`stop`."""

    def __init__(self, folder: Path, ae_title: str = "ARCHIVE") -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "qrscp.ini"
        config.write_text(
            "[DEFAULT]\n"
            f"    ae_title: {ae_title}\n    port: {self.port}\n    max_pdu: 16382\n"
            "    acse_timeout: 30\n    dimse_timeout: 30\n    network_timeout: 30\n"
            "    bind_address: 127.0.0.1\n"
            f"    instance_location: {folder / 'instances'}\n"
            f"    database_location: {folder / 'index.sqlite'}\n"
            "    log_identifier: False\n",
            encoding="utf-8",
        )
        self.log = (folder / "qrscp.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("qrscp_nodelay.py")), "-c", str(config), "-q"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.store().check()
                return
            except PacsError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"qrscp did not start: {(folder / 'qrscp.log').read_text()[-2000:]}") from None
                time.sleep(0.2)

    def settings(self, port: int | None = None, timeout: float = 10.0) -> DimseSettings:
        """How MedAI reaches this archive (through ``port`` when a proxy sits in between)."""
        return DimseSettings("127.0.0.1", port or self.port, self.ae_title, "MEDAI", timeout)

    def store(self, port: int | None = None) -> DimseStore:
        """A :class:`DimseStore` on this archive."""
        return DimseStore(self.settings(port))

    def stop(self) -> None:
        """Stop the archive."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class CutProxy:
    """A TCP proxy on 127.0.0.1 to ``upstream_port``. While armed, the first connection whose answer grows past
    ``after_bytes`` bytes is closed right there (a transfer cut mid-way: small answers such as C-FIND pass), and
    the proxy disarms."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._cut: int | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, after_bytes: int) -> None:
        """Cut the first connection whose answer passes ``after_bytes`` bytes."""
        with self._lock:
            self._cut = after_bytes

    def _take_cut(self, total: int) -> int | None:
        """The byte budget if this connection is to be cut at ``total`` bytes (and disarm), else None."""
        with self._lock:
            if self._cut is not None and total > self._cut:
                budget, self._cut = self._cut, None
                self.cuts += 1
                return budget
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def pump_up() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    upstream.sendall(data)

        threading.Thread(target=pump_up, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                budget = self._take_cut(sent + len(data))
                if budget is not None:
                    client.sendall(data[: max(0, budget - sent)])
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        """Stop accepting connections."""
        self._server.close()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

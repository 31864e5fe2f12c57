"""A fault injector for the PACS tests: a TCP proxy on 127.0.0.1 between the gateway and Orthanc.

Every connection carries one HTTP request (the proxy asks Orthanc to close after answering), so a fault can be
aimed at one kind of request by a regular expression on its request line, e.g. ``r"^GET /dicom-web/studies/[^?]+
/series/[^/?]+ "`` (a WADO-RS series retrieve) or ``r"^POST /dicom-web/studies"`` (STOW-RS). On command it:

* ``cut(match, after_bytes, direction)`` — forwards ``after_bytes`` bytes of the answer (``"down"``) or of the
  request (``"up"``) and then closes both sides: a transfer cut mid-way, every time at the same byte;
* ``stall(match, after_bytes, seconds)`` — forwards ``after_bytes`` bytes of the answer, then nothing for
  ``seconds`` (the client's read timeout fires), then closes;
* ``unavailable(match, count)`` — answers ``503 Service Unavailable`` itself, without asking Orthanc.

Each fault applies to the next ``times`` matching requests (default 1). Faults fire deterministically, not by timing.

    with FaultProxy(orthanc.port) as proxy:
        proxy.cut(r"^GET .*/series/[^/?]+ ", after_bytes=200_000)
        ... point the gateway at proxy.url ...
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType

__all__ = ["Fault", "FaultProxy"]

_CHUNK = 65536
_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
    b"Connection: close\r\n\r\nservice unavailable"
)


@dataclass
class Fault:
    """One armed fault (see the module docstring)."""

    kind: str  # "cut", "stall" or "503"
    match: re.Pattern[str]
    times: int
    after_bytes: int = 0
    direction: str = "down"
    seconds: float = 0.0
    fired: int = 0


class FaultProxy:
    """A one-request-per-connection HTTP proxy from ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = int(upstream_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.requests: list[str] = []  # request lines seen, in order
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: give this to the client instead of the server's address."""
        return f"http://127.0.0.1:{self.port}"

    # -- commands -------------------------------------------------------------------------------------------------

    def cut(self, match: str, after_bytes: int, direction: str = "down", times: int = 1) -> Fault:
        """Cut the next ``times`` matching requests after ``after_bytes`` of the answer (down) or request (up)."""
        return self._arm(Fault("cut", re.compile(match), times, after_bytes, direction))

    def stall(self, match: str, after_bytes: int, seconds: float, times: int = 1) -> Fault:
        """Stop forwarding the answer after ``after_bytes`` for ``seconds``, then close."""
        return self._arm(Fault("stall", re.compile(match), times, after_bytes, "down", seconds))

    def unavailable(self, match: str = r".", times: int = 1) -> Fault:
        """Answer ``503`` to the next ``times`` matching requests."""
        return self._arm(Fault("503", re.compile(match), times))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def _arm(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def _take(self, request_line: str) -> Fault | None:
        with self._lock:
            self.requests.append(request_line)
            for fault in self._faults:
                if fault.fired < fault.times and fault.match.search(request_line):
                    fault.fired += 1
                    return fault
        return None

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(_CHUNK)
                if not data:
                    return
                head += data
            header, _, rest = head.partition(b"\r\n\r\n")
            lines = header.split(b"\r\n")
            request_line = lines[0].decode("latin-1")
            fault = self._take(request_line)
            if fault is not None and fault.kind == "503":
                client.sendall(_UNAVAILABLE)
                return
            kept = [line for line in lines[1:] if not line.lower().startswith((b"connection:", b"keep-alive:"))]
            forwarded = b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n" + rest
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            up_budget = (
                fault.after_bytes if fault is not None and fault.kind == "cut" and fault.direction == "up" else None
            )
            if up_budget is not None and len(forwarded) > up_budget:
                upstream.sendall(forwarded[:up_budget])
                return
            upstream.sendall(forwarded)
            sent_up = len(forwarded)
            pump = threading.Thread(target=self._pump_up, args=(client, upstream, sent_up, up_budget), daemon=True)
            pump.start()
            self._pump_down(upstream, client, fault)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:  # shutdown first: close() alone does not end a recv() blocked in another thread
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()

    @staticmethod
    def _pump_up(client: socket.socket, upstream: socket.socket, sent: int, budget: int | None) -> None:
        try:
            while True:
                data = client.recv(_CHUNK)
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    return
                if budget is not None and sent + len(data) > budget:
                    upstream.sendall(data[: budget - sent])
                    for sock in (client, upstream):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    return
                upstream.sendall(data)
                sent += len(data)
        except OSError:
            return

    def _pump_down(self, upstream: socket.socket, client: socket.socket, fault: Fault | None) -> None:
        budget = fault.after_bytes if fault is not None and fault.kind in ("cut", "stall") else None
        if fault is not None and fault.kind == "cut" and fault.direction == "up":
            budget = None
        sent = 0
        head: bytes | None = b""
        while True:
            data = upstream.recv(_CHUNK)
            if not data:
                if head:
                    client.sendall(head)
                return
            if head is not None:  # the answer's header: tell the client the connection ends with this answer
                head += data
                if b"\r\n\r\n" not in head:
                    continue
                header, _, body = head.partition(b"\r\n\r\n")
                lines = [line for line in header.split(b"\r\n") if not line.lower().startswith(b"connection:")]
                data = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body
                head = None
            if budget is not None and sent + len(data) >= budget:
                client.sendall(data[: budget - sent])
                if fault is not None and fault.kind == "stall":
                    deadline = time.monotonic() + fault.seconds
                    while time.monotonic() < deadline and not self._closed.is_set():
                        time.sleep(0.05)
                return
            client.sendall(data)
            sent += len(data)

    def close(self) -> None:
        """Stop accepting connections."""
        self._closed.set()
        self._server.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

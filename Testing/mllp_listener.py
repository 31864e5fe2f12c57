"""A real MLLP listener for the tests (python-hl7's asyncio server in a thread, on a free port of 127.0.0.1) that
answers as a RIS would: AA, a negative ACK, nothing at all, or an ACK for another message."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hl7.mllp import start_hl7_server

__all__ = ["Listener"]


class Listener:
    """An MLLP listener on a free loopback port; ``mode`` is the ACK code to answer, ``"silent"`` or ``"other-id"``."""

    def __init__(self, modes: list[str] | None = None) -> None:
        self.mode = "AA"
        self.modes = list(modes or [])  # answers to use first, one per message, before ``mode``
        self.received: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = start_hl7_server(self._client, "127.0.0.1", 0, encoding="utf-8")
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(5)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while True:
                message = await reader.readmessage()
                self.received.append(str(message))
                mode = self.modes.pop(0) if self.modes else self.mode
                if mode == "silent":
                    continue  # never answers: the sender must time out
                ack = message.create_ack("AA" if mode == "other-id" else mode, message_id="ACK-1")
                if mode == "other-id":
                    ack.segment("MSA").assign_field("OTHER-MESSAGE", 2)
                writer.writemessage(ack)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the sender closed the connection
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

"""Run pynetdicom's qrscp with Nagle's algorithm off on the sockets it accepts, as a production PACS does.

qrscp leaves Nagle on, so every DIMSE message it sends waits for MedAI's delayed TCP ACK (about 40 ms on Linux):
a C-GET of an 80-slice series took 4 s instead of 0.65 s, which measured the archive's socket setting, not MedAI.
Usage (as ``python -m pynetdicom qrscp``): ``python qrscp_nodelay.py -c qrscp.ini [-q]``.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from pynetdicom import transport
from pynetdicom.apps.qrscp import qrscp

_accept = transport.AssociationServer.get_request


def _get_request(self: Any) -> tuple[socket.socket, Any]:
    client, address = _accept(self)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, address


transport.AssociationServer.get_request = _get_request  # type: ignore[method-assign]

if __name__ == "__main__":
    qrscp.main(sys.argv[1:])

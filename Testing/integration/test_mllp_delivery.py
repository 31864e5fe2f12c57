"""Delivering the ORU over MLLP (issue 21) to real listeners on 127.0.0.1: python-hl7's asyncio MLLP server
(:func:`hl7.mllp.start_hl7_server`) run in a thread, answering as a RIS would: AA, a negative ACK, nothing at all,
or an ACK for another message; and a port where nothing listens.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import hl7
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.interop.hl7_oru import build_oru
from MedAIExtension.interop.mllp import Hl7DeliveryError, send_mllp
from Testing.interop_helpers import follow_up_result, study_dataset
from Testing.mllp_listener import Listener


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def oru() -> str:
    return build_oru(follow_up_result(), dataset=study_dataset(), control_id="MEDAI-ORU-1")


def test_ack_accepted(listener: Listener, oru: str) -> None:
    listener.mode, listener.received = "AA", []
    assert send_mllp(oru, "127.0.0.1", listener.port, 5.0) == "ACK-1"
    assert len(listener.received) == 1
    received = hl7.parse(listener.received[0])
    assert str(received.segment("MSH")(10)) == "MEDAI-ORU-1"
    assert str(received.segment("OBR")(5)) == str(hl7.parse(oru).segment("OBR")(5))
    assert received.unescape(str(received.segment("PID")(5)(1)(1))) == "O|Brien&Co~X\\Y", "UTF-8 and escapes intact"


@pytest.mark.parametrize("code", ["AE", "AR"])
def test_negative_ack_is_a_retryable_error(listener: Listener, oru: str, code: str) -> None:
    listener.mode = code
    with pytest.raises(Hl7DeliveryError) as caught:
        send_mllp(oru, "127.0.0.1", listener.port, 5.0)
    error = caught.value
    assert (error.retryable, error.ack_code, error.control_id) == (True, code, "MEDAI-ORU-1")
    assert code in str(error) and "MEDAI-ORU-1" in str(error) and "Brien" not in str(error)


def test_ack_for_another_message_is_a_retryable_error(listener: Listener, oru: str) -> None:
    listener.mode = "other-id"
    with pytest.raises(Hl7DeliveryError, match="OTHER-MESSAGE instead of MEDAI-ORU-1") as caught:
        send_mllp(oru, "127.0.0.1", listener.port, 5.0)
    assert caught.value.retryable


def test_silent_receiver_times_out(listener: Listener, oru: str) -> None:
    listener.mode, listener.received = "silent", []
    started = time.monotonic()
    with pytest.raises(Hl7DeliveryError, match=r"within 0\.5 s") as caught:
        send_mllp(oru, "127.0.0.1", listener.port, 0.5)
    assert caught.value.retryable and 0.4 < time.monotonic() - started < 3.0
    assert len(listener.received) == 1, "the message arrived; only the ACK is missing"


def test_refused_connection_is_a_retryable_error(oru: str) -> None:
    with socket.socket() as closed:  # bound, not listening: connecting is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(Hl7DeliveryError, match="refused") as caught:
            send_mllp(oru, "127.0.0.1", port, 2.0)
    assert caught.value.retryable and caught.value.ack_code is None


def test_send_from_inside_an_event_loop(listener: Listener, oru: str) -> None:
    listener.mode = "AA"

    async def inside() -> str:
        return send_mllp(oru, "127.0.0.1", listener.port, 5.0)

    assert asyncio.run(inside()) == "ACK-1"


def test_bad_input_is_refused_before_connecting(listener: Listener) -> None:
    listener.received = []
    with pytest.raises(InputError, match="MSH"):
        send_mllp("hello", "127.0.0.1", listener.port, 1.0)
    with pytest.raises(InputError, match="port"):
        send_mllp(build_oru(follow_up_result(), dataset=study_dataset()), "127.0.0.1", 0, 1.0)
    assert listener.received == []

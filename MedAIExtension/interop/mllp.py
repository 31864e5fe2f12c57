"""Delivering an HL7 v2 message to a RIS over MLLP (Minimal Lower Layer Protocol) and reading its acknowledgment.

The framing and the reading of the answer block are python-hl7's (:mod:`hl7.mllp`: ``<VT>message<FS><CR>``); the
exchange runs on asyncio with one deadline for connecting, sending and the ACK.

Failures raise :class:`Hl7DeliveryError`, a :class:`MedAIError` of its own rather than a PACS error: a RIS that
is down must not look like a PACS outage to code that handles :class:`~MedAIExtension.pacs.errors.PacsError`
(pausing retrieval, say). Like :class:`~MedAIExtension.pacs.errors.PacsError` it says with ``retryable`` whether
sending the same message again later may succeed. Messages name the receiver (host:port), the message control ID
and the acknowledgment code, never patient data nor the receiver's free-text error (which may quote the message).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
from collections.abc import Coroutine
from typing import Any

from MedAIExtension.errors import InputError, MedAIError

__all__ = ["ACCEPTED", "NEGATIVE", "Hl7DeliveryError", "send_mllp"]

#: Acknowledgment codes (MSA-1, HL7 table 0008) that accept a message: application / commit accept.
ACCEPTED = frozenset({"AA", "CA"})
#: Negative acknowledgments: application error / reject, commit error / reject.
NEGATIVE = frozenset({"AE", "AR", "CE", "CR"})


class Hl7DeliveryError(MedAIError):
    """An HL7 message was not delivered, or its receiver did not accept it.

    Attributes:
        control_id: MSH-10 of the message that was sent.
        retryable: whether sending the same message again later may succeed (True for a refused connection, a
            timeout, a connection closed before the ACK, a negative ACK (AE, AR, CE, CR) and an ACK for another
            message; False when the receiver does not speak MLLP/HL7 at all: a configuration error).
        ack_code: the receiver's MSA-1, when it answered with one.
    """

    def __init__(self, message: str, *, control_id: str, retryable: bool, ack_code: str | None = None) -> None:
        super().__init__(message)
        self.control_id = control_id
        self.retryable = retryable
        self.ack_code = ack_code


async def _exchange(payload: bytes, host: str, port: int, timeout: float) -> bytes:
    """Send ``payload`` as one MLLP block and return the first block answered, all within ``timeout`` seconds."""
    from hl7.mllp import open_hl7_connection

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def left() -> float:
        return max(deadline - loop.time(), 1e-3)

    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port, encoding="utf-8"), left())
    try:
        writer.writeblock(payload)
        await asyncio.wait_for(writer.drain(), left())
        return bytes(await asyncio.wait_for(reader.readblock(), left()))
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


def _run(coroutine: Coroutine[Any, Any, bytes]) -> bytes:
    """Run ``coroutine`` to the end; in a thread of its own when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _control_id(message: str) -> str:
    import hl7

    if not isinstance(message, str) or not hl7.ishl7(message):
        raise InputError("send_mllp needs an HL7 v2 message as text starting with MSH (e.g. what build_oru returns).")
    try:
        control = str(hl7.parse(message).segment("MSH")(10)).strip()
    except (KeyError, IndexError, ValueError):
        control = ""
    if not control:
        raise InputError("The HL7 message has no message control ID (MSH-10), which its ACK must echo; set one.")
    return control


def _check_target(host: str, port: int, timeout: float) -> None:
    if not isinstance(host, str) or not host.strip():
        raise InputError("The MLLP receiver needs a host name or address (e.g. the RIS interface engine's).")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InputError(f"The MLLP port must be a number from 1 to 65535, got {port!r}.")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise InputError(f"The MLLP timeout must be a positive number of seconds, got {timeout!r}.")


def _read_ack(answer: bytes, control: str, where: str) -> str:
    """The ACK's own control ID, after checking that it accepts message ``control``."""
    import hl7

    text = answer.decode("utf-8", errors="replace").strip("\r\n")
    try:
        ack = hl7.parse(text)
        msa = ack.segment("MSA")
        code, acked = str(msa(1)).strip().upper(), str(msa(2)).strip()
        own = str(ack.segment("MSH")(10)).strip()
    except (KeyError, IndexError, ValueError, hl7.HL7Exception):
        raise Hl7DeliveryError(
            f"The MLLP receiver at {where} answered message {control} with something that is not an HL7 ACK "
            "(no MSH/MSA segment); check that host and port are those of the RIS's HL7 interface.",
            control_id=control,
            retryable=False,
        ) from None
    if code in NEGATIVE:
        raise Hl7DeliveryError(
            f"The MLLP receiver at {where} did not accept message {control} (MSA-1 {code}); it is sent again "
            "later. If it keeps failing, check the receiver's log for that message control ID.",
            control_id=control,
            retryable=True,
            ack_code=code,
        )
    if code not in ACCEPTED:
        raise Hl7DeliveryError(
            f"The MLLP receiver at {where} answered message {control} with the unknown acknowledgment code "
            f"{code!r} (expected AA or CA); check the receiver's configuration.",
            control_id=control,
            retryable=False,
            ack_code=code,
        )
    if acked != control:
        raise Hl7DeliveryError(
            f"The MLLP receiver at {where} acknowledged message {acked or '(none)'} instead of {control}; it is "
            "sent again later.",
            control_id=control,
            retryable=True,
            ack_code=code,
        )
    return own or acked


def send_mllp(message: str, host: str, port: int, timeout: float) -> str:
    """Send ``message`` (an HL7 v2 message, segments separated by ``\\r``, UTF-8) to ``host:port`` over MLLP.

    One connection per message: connect, send the MLLP block, read one acknowledgment block, close; connecting,
    sending and the ACK together take at most ``timeout`` seconds.

    Returns:
        The ACK's own message control ID (its MSH-10; its MSA-2 was checked to be ``message``'s MSH-10).

    Raises:
        InputError: ``message`` is not an HL7 message with a control ID, or host/port/timeout are invalid.
        Hl7DeliveryError: not delivered or not accepted; ``retryable`` is True for a refused or broken connection,
            a timeout, a negative ACK (MSA-1 AE, AR, CE or CR; ``ack_code`` set) and an ACK for another message
            control ID, False when the answer is not MLLP/HL7 or has an unknown code.
    """
    from hl7.mllp import InvalidBlockError

    control = _control_id(message)
    _check_target(host, port, timeout)
    where = f"{host}:{port}"

    def failed(text: str, retryable: bool = True) -> Hl7DeliveryError:
        return Hl7DeliveryError(text, control_id=control, retryable=retryable)

    try:
        answer = _run(_exchange(message.encode("utf-8"), host, port, float(timeout)))
    except TimeoutError:
        raise failed(
            f"The MLLP receiver at {where} did not acknowledge message {control} within {timeout:g} s; it is sent "
            "again later. Check that the receiver is running, or raise the timeout."
        ) from None
    except ConnectionRefusedError:
        raise failed(
            f"The MLLP receiver at {where} refused the connection for message {control}; it is sent again later. "
            "Check that the receiver is running and listening on that port."
        ) from None
    except asyncio.IncompleteReadError:
        raise failed(
            f"The MLLP receiver at {where} closed the connection before acknowledging message {control}; it is "
            "sent again later."
        ) from None
    except (InvalidBlockError, ValueError):
        raise failed(
            f"The receiver at {where} did not answer message {control} with an MLLP block; check that host and "
            "port are those of the RIS's HL7 (MLLP) interface.",
            retryable=False,
        ) from None
    except OSError as exc:
        reason = type(exc).__name__ if not exc.strerror else exc.strerror.lower()
        raise failed(
            f"Cannot deliver message {control} to the MLLP receiver at {where} ({reason}); it is sent again later. "
            "Check the host name, the network and that the receiver is running."
        ) from None
    return _read_ack(answer, control, where)

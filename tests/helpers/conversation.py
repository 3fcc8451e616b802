"""Conversation tables: a driver's dialogue written down as exact (request, reply) pairs.

A table is the device: each thing the driver sends must be exactly the next request of the table
(byte for byte, message for message, register request for register request), and the reply of
that row is what comes back. Over an in-memory transport (:mod:`bridge.transports.memory`) the
test reads like the protocol manual and takes no time: silence times out at once.

The table fails the test on anything it did not foresee, in both directions:

* an **unexpected** request (a wrong byte, a request after the last row) fails at once, naming
  the row and both sides;
* an **unused** row (the driver stopped early) or an **unread** reply (the driver never read
  bytes the device sent) fails when the ``with`` block ends.

::

    with serial_conversation((b"UNI\\r", b"\\x06\\r\\n"), (b"\\x05", b"0\\r\\n")) as transport:
        driver = PfeifferTPG.from_config(transport, {"channels": [1]}, "gauge")
        assert driver.read_unit() == "mbar"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from bridge.config import InstrumentConfig
from bridge.drivers.base import Driver
from bridge.edge.polling.bus import assemble
from bridge.transports.memory import (
    MemoryModbusTransport,
    MemorySerialTransport,
    MemoryVisaTransport,
    ModbusAnswer,
    ModbusRequest,
)

Request = TypeVar("Request")
Reply = TypeVar("Reply")

#: a row of a VISA table: the message written, and the reply (several, or none: silence)
VisaReply = str | Sequence[str]


class Table(Generic[Request, Reply]):
    """The device side of a conversation table; called with each request the driver sends."""

    def __init__(self, rows: Sequence[tuple[Request, Reply]]) -> None:
        self.rows = list(rows)
        self.used = 0
        #: the first mismatch, kept in case the driver swallowed the AssertionError
        self.failure: str | None = None

    def __call__(self, request: Request) -> Reply:
        if self.failure is not None:
            raise AssertionError(self.failure)
        if self.used >= len(self.rows):
            self.failure = f"unexpected request after the table's {len(self.rows)} rows: {request!r}"
            raise AssertionError(self.failure)
        expected, reply = self.rows[self.used]
        if request != expected:
            self.failure = f"row {self.used + 1}: expected {expected!r}, the driver sent {request!r}"
            raise AssertionError(self.failure)
        self.used += 1
        return reply

    def check_finished(self, unread: object) -> None:
        """Every row used, every reply read."""
        assert self.failure is None, self.failure
        unused = self.rows[self.used:]
        assert not unused, f"{len(unused)} row(s) never reached, from row {self.used + 1}: {unused!r}"
        assert not unread, f"replies the driver never read: {unread!r}"


@contextmanager
def serial_conversation(*rows: tuple[bytes, bytes], owner: str = "inst",
                        timeout: float = 0.5) -> Iterator[MemorySerialTransport]:
    """An open serial line whose device is this table of (bytes written, bytes replied);
    ``owner`` is the instrument it belongs to (errors name it)."""
    table: Table[bytes, bytes] = Table(rows)
    transport = MemorySerialTransport(table, owner, timeout=timeout)
    with _checked(table, transport, transport.unread):
        yield transport


@contextmanager
def visa_conversation(*rows: tuple[str, VisaReply], owner: str = "inst",
                      timeout: float = 2.0) -> Iterator[MemoryVisaTransport]:
    """An open VISA resource whose device is this table of (message written, reply or replies)."""
    table: Table[str, VisaReply] = Table(rows)
    transport = MemoryVisaTransport(lambda message: _replies(table(message)), owner, timeout=timeout)
    with _checked(table, transport, transport.unread):
        yield transport


@contextmanager
def modbus_conversation(*rows: tuple[ModbusRequest, ModbusAnswer], owner: str = "inst", unit: int = 1,
                        timeout: float = 1.0) -> Iterator[MemoryModbusTransport]:
    """An open Modbus link whose device is this table of (request, values | Refusal | None)."""
    table: Table[ModbusRequest, ModbusAnswer] = Table(rows)
    transport = MemoryModbusTransport(table, owner, unit=unit, timeout=timeout)
    with _checked(table, transport, lambda: None):
        yield transport


def driver_on(transport: MemorySerialTransport | MemoryVisaTransport | MemoryModbusTransport, driver: str,
              options: dict[str, Any] | None = None) -> Driver[Any, Any]:
    """The driver of an instrument named after the transport's owner, with ``options``, assembled
    on ``transport`` the way ``poll`` and ``read`` assemble it (:func:`bridge.edge.polling.bus.assemble`)."""
    config = InstrumentConfig(name=transport.owner, driver=driver, transport=transport.config,
                              options=options or {})
    ((_, assembled),) = assemble([config], transport=transport).drivers
    return assembled


def _replies(reply: VisaReply) -> Sequence[str]:
    return [reply] if isinstance(reply, str) else reply


@contextmanager
def _checked(table: Table[Any, Any], transport: MemorySerialTransport | MemoryVisaTransport | MemoryModbusTransport,
             unread: Callable[[], object]) -> Iterator[None]:
    transport.open()
    try:
        yield
        table.check_finished(unread())
    finally:
        transport.close()

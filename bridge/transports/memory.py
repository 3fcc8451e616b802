"""In-memory transports, for tests: the real transports with the wire replaced by a function.

Each class subclasses the real transport and replaces only what touches the outside world, so
everything a driver relies on is the production code: ``SerialTransport``'s framing
(``read_until``, ``read_exact``, ``drain``: replies cut exactly, the rest kept), ``ModbusTransport``'s
request checks and error mapping (an exception response is a ``DeviceError`` with its code, a reply
of the wrong length a ``ProtocolError``), ``VisaTransport``'s stripping and timeout mapping.

The far end is a *device*, a plain function: what the driver sent in, what comes back out.
Silence is immediate: a read with nothing to read times out at once, without waiting, so a test
of a timeout takes no time. Nothing here opens a port, a socket or a thread.

* :class:`MemorySerialTransport`: ``device(bytes written) -> bytes that arrive``; :meth:`feed`
  adds bytes nobody asked for (a stream, a late reply).
* :class:`MemoryModbusTransport`: ``device(ModbusRequest) -> values``, a :class:`Refusal`
  (exception response) or None (no reply).
* :class:`MemoryVisaTransport`: ``device(message written) -> messages to read``.

``unread()`` on each says what arrived and was never read: a test that expects every byte to be
used asserts it is empty (``tests/helpers/conversation.py`` does).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)
from pyvisa import constants
from pyvisa.errors import VisaIOError
from pyvisa.resources import MessageBasedResource

from bridge.errors import TransportDisconnected
from bridge.transports.modbus import ModbusTransport
from bridge.transports.serial import SerialTransport
from bridge.transports.settings import ModbusTcpTransportConfig, SerialTransportConfig, VisaTransportConfig
from bridge.transports.visa import VisaTransport

log = logging.getLogger("bridge.transports.memory")

ByteDevice = Callable[[bytes], bytes]
MessageDevice = Callable[[str], Sequence[str]]


# ---------------------------------------------------------------- bytes


class MemorySerialTransport(SerialTransport):
    """A serial line in memory: every write goes to ``device``, whose answer becomes readable."""

    def __init__(self, device: ByteDevice, owner: str = "memory", *, timeout: float = 1.0,
                 port: str = "memory://") -> None:
        super().__init__(SerialTransportConfig(kind="serial", port=port, timeout=timeout), owner)
        self.device = device
        self._incoming = bytearray()
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._open = True
        self._buffer.clear()
        self._incoming.clear()

    def close(self) -> None:
        self._open = False
        self._buffer.clear()
        self._incoming.clear()

    def feed(self, data: bytes) -> None:
        """Bytes arriving unasked (a power-up stream, a late reply, line noise)."""
        self._incoming += data

    def unread(self) -> bytes:
        """What arrived and was neither read nor dropped by the driver."""
        return bytes(self._buffer + self._incoming)

    def write(self, data: bytes) -> None:
        self._check_open()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s > %r", self.owner, data)
        self._incoming += self.device(bytes(data))

    def flush_input(self) -> bytes:
        self._check_open()
        junk = self.unread()
        self._buffer.clear()
        self._incoming.clear()
        return junk

    def _fill(self, deadline: float) -> bool:
        """Everything that has arrived, at once; False (the deadline, without waiting) if nothing has."""
        self._check_open()
        if not self._incoming:
            return False
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s < %r", self.owner, bytes(self._incoming))
        self._buffer += self._incoming
        self._incoming.clear()
        return True

    def _check_open(self) -> None:
        if not self._open:
            raise TransportDisconnected(f"{self.owner}: {self.config.port} is not open")


# ---------------------------------------------------------------- registers

ModbusTable = Literal["holding", "input", "coils", "discrete"]


@dataclass(frozen=True)
class ModbusRequest:
    """One request as the device sees it; ``values`` only for writes."""

    table: ModbusTable
    address: int
    count: int
    unit: int
    values: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Refusal:
    """An exception response with this code (0x02: illegal data address)."""

    code: int


ModbusAnswer = Sequence[int] | Sequence[bool] | Refusal | None
RegisterDevice = Callable[[ModbusRequest], ModbusAnswer]

#: (function code, the response class) per request kind
_RESPONSES: dict[str, tuple[int, Callable[..., ModbusPDU]]] = {
    "holding": (0x03, lambda values: ReadHoldingRegistersResponse(registers=list(values))),
    "input": (0x04, lambda values: ReadInputRegistersResponse(registers=list(values))),
    "coils": (0x01, lambda values: ReadCoilsResponse(bits=[bool(v) for v in values])),
    "discrete": (0x02, lambda values: ReadDiscreteInputsResponse(bits=[bool(v) for v in values])),
    "write": (0x06, lambda values: WriteSingleRegisterResponse(registers=list(values))),
    "write_many": (0x10, lambda values: WriteMultipleRegistersResponse(count=len(values))),
}


class _MemoryModbusClient:
    """The part of a pymodbus client that :class:`ModbusTransport` calls, answered by a device."""

    connected = True

    def __init__(self, device: RegisterDevice) -> None:
        self.device = device

    def _answer(self, kind: str, request: ModbusRequest) -> ModbusPDU:
        function, response = _RESPONSES[kind]
        answer = self.device(request)
        if answer is None:
            raise ModbusIOException(f"no response to {request}")
        if isinstance(answer, Refusal):
            return ExceptionResponse(function, answer.code)
        return response(answer)

    def read_holding_registers(self, address: int, *, count: int, device_id: int) -> ModbusPDU:
        return self._answer("holding", ModbusRequest("holding", address, count, device_id))

    def read_input_registers(self, address: int, *, count: int, device_id: int) -> ModbusPDU:
        return self._answer("input", ModbusRequest("input", address, count, device_id))

    def read_coils(self, address: int, *, count: int, device_id: int) -> ModbusPDU:
        return self._answer("coils", ModbusRequest("coils", address, count, device_id))

    def read_discrete_inputs(self, address: int, *, count: int, device_id: int) -> ModbusPDU:
        return self._answer("discrete", ModbusRequest("discrete", address, count, device_id))

    def write_register(self, address: int, value: int, *, device_id: int) -> ModbusPDU:
        return self._answer("write", ModbusRequest("holding", address, 1, device_id, (value,)))

    def write_registers(self, address: int, values: Sequence[int], *, device_id: int) -> ModbusPDU:
        return self._answer("write_many", ModbusRequest("holding", address, len(values), device_id, tuple(values)))

    def close(self) -> None:
        self.connected = False


class MemoryModbusTransport(ModbusTransport):
    """Modbus in memory: every request goes to ``device``; ``unit`` is the configured device id."""

    def __init__(self, device: RegisterDevice, owner: str = "memory", *, unit: int = 1,
                 timeout: float = 1.0) -> None:
        super().__init__(ModbusTcpTransportConfig(kind="modbus_tcp", host="memory", unit=unit, timeout=timeout),
                         owner)
        self.device = device

    def open(self) -> None:
        self.close()
        self._client = cast(ModbusTcpClient, _MemoryModbusClient(self.device))


# ---------------------------------------------------------------- messages


class _MemoryResource:
    """The part of a pyvisa message-based resource that :class:`VisaTransport` calls."""

    def __init__(self, device: MessageDevice) -> None:
        self.device = device
        self.replies: deque[str] = deque()

    def write(self, command: str) -> int:
        self.replies.extend(self.device(command))
        return len(command)

    def read(self) -> str:
        if not self.replies:
            raise VisaIOError(constants.StatusCode.error_timeout)
        return self.replies.popleft()

    def close(self) -> None:
        self.replies.clear()


class MemoryVisaTransport(VisaTransport):
    """A VISA resource in memory: every message written goes to ``device``, whose replies are read in turn."""

    def __init__(self, device: MessageDevice, owner: str = "memory", *, timeout: float = 2.0,
                 resource: str = "MEMORY::INSTR") -> None:
        super().__init__(VisaTransportConfig(kind="visa", resource=resource, timeout=timeout), owner)
        self.device = device

    def open(self) -> None:
        self.close()
        self._resource = cast(MessageBasedResource, _MemoryResource(self.device))

    def unread(self) -> list[str]:
        """Replies that arrived and were never read."""
        resource = self._resource
        return [] if resource is None else list(cast(_MemoryResource, resource).replies)

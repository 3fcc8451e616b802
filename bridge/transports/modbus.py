"""Modbus TCP and RTU through pymodbus' synchronous clients.

pymodbus is used with ``retries=0``: one request, one answer or one failure, so the poller alone
decides when to retry. Its exceptions and exception responses are mapped here:

* cannot connect, connection closed or lost -> ``TransportDisconnected``
* no (valid) answer within the timeout      -> ``TransportTimeout``
* a Modbus exception response               -> ``DeviceError`` with ``code`` = exception code

After a ``TransportDisconnected`` the transport stays closed until ``open()`` (or
``bridge.transports.base.reopen``) is called; pymodbus' own silent reconnect is not used, so a
lost link is always seen by the poller.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Literal, cast

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from bridge.errors import DeviceError, ProtocolError, TransportDisconnected, TransportTimeout
from bridge.transports.settings import ModbusRtuTransportConfig, ModbusTcpTransportConfig

log = logging.getLogger("bridge.transports.modbus")

RegisterTable = Literal["holding", "input"]
BitTable = Literal["coils", "discrete"]

# Exception codes of the Modbus application protocol (v1.1b3, section 7).
EXCEPTION_NAMES: dict[int, str] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x07: "negative acknowledge",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


def exception_name(code: int) -> str:
    """``illegal data address (0x02)``; unknown codes are still shown in hex."""
    return f"{EXCEPTION_NAMES.get(code, 'unknown exception')} (0x{code:02X})"


class ModbusTransport:
    def __init__(self, config: ModbusTcpTransportConfig | ModbusRtuTransportConfig,
                 owner: str) -> None:
        self.config = config
        self.owner = owner
        self.timeout = config.timeout
        self._client: ModbusTcpClient | ModbusSerialClient | None = None

    # ---------------------------------------------------------- lifecycle

    def describe(self) -> str:
        c = self.config
        if isinstance(c, ModbusTcpTransportConfig):
            return f"{c.host}:{c.port}"
        return c.port

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.connected

    def open(self) -> None:
        self.close()
        c = self.config
        client: ModbusTcpClient | ModbusSerialClient
        if isinstance(c, ModbusTcpTransportConfig):
            client = ModbusTcpClient(c.host, port=c.port, timeout=c.timeout, retries=0)
            # Connect here rather than through client.connect(), which swallows the OSError
            # (logging it at ERROR with a frame dump) and leaves only False to report.
            try:
                client.socket = socket.create_connection((c.host, c.port), timeout=c.timeout)
            except OSError as exc:
                raise TransportDisconnected(
                    f"{self.owner}: cannot open {self.describe()}: {_reason(exc)}") from exc
        else:
            # Always pass the line settings: pymodbus defaults to 19200 baud, Eurotherm to 9600.
            client = ModbusSerialClient(
                c.port, framer=FramerType.RTU, baudrate=c.baudrate, bytesize=c.bytesize,
                parity=c.parity, stopbits=cast(int, c.stopbits),  # pyserial also accepts 1.5
                timeout=c.timeout, retries=0,
            )
            if not client.connect():
                reason = ("no such device" if "://" not in c.port and not os.path.exists(c.port)
                          else "port unavailable (busy, no permission or unsupported settings)")
                raise TransportDisconnected(f"{self.owner}: cannot open {c.port}: {reason}")
        self._client = client
        log.debug("%s: opened %s", self.owner, self.describe())

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]

    def _require(self) -> ModbusTcpClient | ModbusSerialClient:
        client = self._client
        if client is None:
            raise TransportDisconnected(f"{self.owner}: {self.describe()} is not open")
        if not client.connected:  # pymodbus dropped the socket after a failure
            raise TransportDisconnected(f"{self.owner}: lost {self.describe()}")
        return client

    # ---------------------------------------------------------- registers and bits

    def read_registers(self, table: RegisterTable, address: int, count: int,
                       unit: int | None = None) -> list[int]:
        """Read ``count`` 16-bit registers (unsigned) from the holding or input table."""
        client = self._require()
        if table == "holding":
            call, function = client.read_holding_registers, "read holding registers"
        elif table == "input":
            call, function = client.read_input_registers, "read input registers"
        else:
            raise ValueError(f"unknown register table {table!r} (holding or input)")
        response = self._execute(function, address, count, unit,
                                 lambda u: call(address, count=count, device_id=u))
        registers = list(response.registers)
        # A reply of another length is not ours: most likely a late reply to an earlier request
        # on a shared line, which must not be taken for this one.
        if len(registers) != count:
            raise ProtocolError(
                f"{self.owner}: {function} {address} (count {count}) from {self.describe()} "
                f"returned {len(registers)} registers: {registers}")
        return registers

    def read_bits(self, table: BitTable, address: int, count: int,
                  unit: int | None = None) -> list[bool]:
        """Read ``count`` coils or discrete inputs (the reply's padding to 8 bits is dropped)."""
        client = self._require()
        if table == "coils":
            call, function = client.read_coils, "read coils"
        elif table == "discrete":
            call, function = client.read_discrete_inputs, "read discrete inputs"
        else:
            raise ValueError(f"unknown bit table {table!r} (coils or discrete)")
        response = self._execute(function, address, count, unit,
                                 lambda u: call(address, count=count, device_id=u))
        bits = [bool(b) for b in response.bits]
        if not count <= len(bits) <= 8 * -(-count // 8):  # padded to whole bytes, no more
            raise ProtocolError(f"{self.owner}: {function} {address} (count {count}) from "
                                f"{self.describe()} returned {len(bits)} bits")
        return bits[:count]

    def write_register(self, address: int, value: int, unit: int | None = None) -> None:
        """Write one holding register (function 0x06); ``value`` is 0..65535."""
        client = self._require()
        self._execute("write register", address, 1, unit,
                      lambda u: client.write_register(address, value, device_id=u), [value])

    def write_registers(self, address: int, values: Sequence[int], unit: int | None = None) -> None:
        """Write consecutive holding registers (function 0x10)."""
        client = self._require()
        values = list(values)
        self._execute("write registers", address, len(values), unit,
                      lambda u: client.write_registers(address, values, device_id=u), values)

    # ---------------------------------------------------------- helpers

    def _execute(self, function: str, address: int, count: int, unit: int | None,
                 call: Callable[[int], ModbusPDU], values: list[int] | None = None) -> ModbusPDU:
        device_id = self.config.unit if unit is None else unit
        if not 0 <= device_id <= 247:
            raise ValueError(f"Modbus unit {device_id} is outside 0..247")
        where = f"{function} {address} (count {count}, unit {device_id})"
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s > %s%s", self.owner, where,
                      "" if values is None else f" values {values}")
        client = self._client
        try:
            response = call(device_id)
        except ConnectionException as exc:
            self.close()
            raise TransportDisconnected(f"{self.owner}: lost {self.describe()} during {where}: "
                                        f"{_pymodbus_text(exc, client)}") from exc
        except ModbusIOException as exc:
            raise TransportTimeout(f"{self.owner}: no reply from {self.describe()} to {where} "
                                   f"within {self.timeout:g} s") from exc
        except OSError as exc:  # pyserial / socket errors that escape pymodbus
            self.close()
            raise TransportDisconnected(
                f"{self.owner}: lost {self.describe()} during {where}: {_reason(exc)}") from exc
        if response is None:  # pymodbus returns None when no response is expected
            raise TransportTimeout(f"{self.owner}: no reply from {self.describe()} to {where}")
        if response.isError():
            code = response.exception_code
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s < exception %s", self.owner, exception_name(code))
            raise DeviceError(f"{self.owner}: {where} refused: {exception_name(code)}", code=code)
        if log.isEnabledFor(logging.DEBUG):
            if values is not None:
                log.debug("%s < written", self.owner)
            elif response.bits:
                log.debug("%s < bits %s", self.owner, [int(b) for b in response.bits])
            else:
                log.debug("%s < registers %s", self.owner, list(response.registers))
        return response


def _pymodbus_text(exc: BaseException, client: object) -> str:
    """pymodbus' message without its ``Modbus Error: [Connection] ModbusTcpClient host:port:``."""
    text = str(exc)
    for prefix in ("Modbus Error: [Connection] ", "Modbus Error: ", f"{client}: ", f"{client}"):
        text = text.removeprefix(prefix)
    return text.strip() or type(exc).__name__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

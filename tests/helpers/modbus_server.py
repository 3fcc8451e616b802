"""Real pymodbus servers for tests: TCP on 127.0.0.1, RTU on a pair of bridged ptys.

The servers themselves live in ``simulators.serving.modbus_server`` (the Modbus simulators run on
them too); this module keeps the fixed register set of the transport tests, the names those tests
use, and the plumbing the Modbus tests share (:class:`ModbusLink`, :func:`serve`, :func:`exchange`).

Each server runs its own asyncio loop in a daemon thread and is built from ``SimDevice`` (the
datastore API of pymodbus >= 3.12; the older ``ModbusServerContext`` family warns about v4).
``SimData`` addresses are the request addresses (0-based): no off-by-one as with the deprecated
``ModbusSequentialDataBlock(1, ...)``.

Tests own the server's life: ``stop()`` closes the listener and every connection (what a
crashed instrument or a gateway restart looks like to a client), ``start()`` brings it back on
the same port, ``silent = True`` makes it swallow its replies (the client then times out, as
with a real device that ignores a request).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import serial
from pymodbus.simulator import DataType, SimData, SimDevice

from bridge.config import InstrumentConfig
from bridge.edge.instrument import Instrument, connect_instrument
from bridge.transports.modbus import ModbusTransport
from bridge.transports.settings import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from simulators.serving import modbus_server
from simulators.serving.modbus_server import DeviceServer
from simulators.serving.null_modem import NullModem
from simulators.serving.register_device import RegisterDevice
from tests.helpers.polling import wait_until

# The device the tests read: distinct tables (coils, discrete inputs, holding, input registers).
HOLDING = [0, 2345, 250, 1000, 0xFFFF, 7, 8, 9, 10, 11]  # 1: Eurotherm PV 234.5
INPUT = [101, 202, 303]
COILS = [True, False, True, True, False, False, False, True]
DISCRETE = [False, True, False, False, True, True, False, False]


def make_device(unit: int = 1) -> SimDevice:
    """A fresh device: coils/discrete 0..7, holding registers 0..9, input registers 0..2."""
    return SimDevice(id=unit, simdata=(
        [SimData(0, values=list(COILS), datatype=DataType.BITS)],
        [SimData(0, values=list(DISCRETE), datatype=DataType.BITS)],
        [SimData(0, values=list(HOLDING), datatype=DataType.REGISTERS)],
        [SimData(0, values=list(INPUT), datatype=DataType.REGISTERS)],
    ))


class ModbusServerThread(modbus_server.ModbusServerThread):
    """A pymodbus TCP server (``serial_port=None``) or RTU server on ``serial_port``."""

    def __init__(self, device_factory: Callable[[], SimDevice] = make_device, *,
                 port: int | None = None, serial_port: str | None = None,
                 baudrate: int = 9600) -> None:
        super().__init__(device_factory, port=port or 0, serial_port=serial_port, baudrate=baudrate)


#: Two pty pairs joined by a copying thread: a virtual null-modem cable.
PtyBridge = NullModem


# ---------------------------------------------------------------- driver tests

#: A reply takes milliseconds; a second leaves room for a loaded machine.
TIMEOUT = 1.0
#: For tests that expect silence: each one waits this long.
SHORT = 0.3


@dataclass
class ModbusLink:
    """Simulated devices on a real server, and how a config reaches them (``kind``: tcp or rtu)."""

    server: DeviceServer
    kind: Literal["tcp", "rtu"]

    def transport_config(self, unit: int = 1, timeout: float = TIMEOUT) -> dict[str, Any]:
        if self.kind == "tcp":
            return {"kind": "modbus_tcp", "host": self.server.host, "port": self.server.port,
                    "unit": unit, "timeout": timeout}
        return {"kind": "modbus_rtu", "port": self.server.host_port, "baudrate": 9600, "unit": unit,
                "timeout": timeout}

    def instrument(self, driver: str, options: dict[str, Any], *, name: str = "dev", unit: int = 1,
                   timeout: float = TIMEOUT) -> Instrument:
        config = InstrumentConfig.model_validate({
            "name": name, "driver": driver, "transport": self.transport_config(unit, timeout),
            "options": options})
        return connect_instrument(config)

    def transport(self, name: str = "line", unit: int = 1, timeout: float = TIMEOUT) -> ModbusTransport:
        """An open transport of its own (several drivers sharing one line use one)."""
        raw = self.transport_config(unit, timeout)
        config = ModbusTcpTransportConfig(**raw) if self.kind == "tcp" else ModbusRtuTransportConfig(**raw)
        transport = ModbusTransport(config, name)
        transport.open()
        return transport

    def settle(self) -> None:
        """Wait until every reply the server sent has reached the host side of the line.

        After a timeout the late reply is still on its way; a serial host drops unread input
        before its next request, so it must be there by then, not arrive during that request.
        """
        assert wait_until(self.server.delivered), "a late reply never reached the host"


@contextmanager
def serve(devices: RegisterDevice | list[RegisterDevice], kind: str) -> Iterator[ModbusLink]:
    """Serve ``devices`` (one server, one line) over Modbus TCP (``kind="tcp"``) or RTU on a pty
    null modem (``"rtu"``)."""
    if kind not in ("tcp", "rtu"):
        raise ValueError(f"kind {kind!r} is tcp or rtu")
    transport = cast(Literal["tcp", "rtu"], kind)
    with DeviceServer(devices, transport=transport, baudrate=9600) as server:
        yield ModbusLink(server, transport)


def exchange(port: serial.Serial, request: bytes, expected: int, wait: float = 2.0) -> bytes:
    """Raw bytes on a serial line: drop what is waiting, send ``request``, and collect up to
    ``expected`` bytes of reply within ``wait`` seconds (fewer, or none, if that is all there is)."""
    port.reset_input_buffer()
    port.write(request)
    reply = b""
    deadline = time.monotonic() + wait
    while len(reply) < expected and time.monotonic() < deadline:
        reply += port.read(expected - len(reply))
    return reply

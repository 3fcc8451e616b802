"""Simulated text instruments on real transports, and configs that reach them.

Shared by the scpi_psu, scpi and serial_ascii driver tests: a simulator served on TCP (a raw
SCPI socket or a serial device server) or a pty, and ``instrument(...)`` building the config a
lab would write and connecting it with :func:`bridge.edge.instrument.connect_instrument`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import simulators.instruments
from bridge.config import InstrumentConfig
from bridge.edge.instrument import Instrument, connect_instrument
from bridge.errors import TransportTimeout
from bridge.model import Reading
from simulators.instruments.scpi_psu import ScpiPsuSimulator
from simulators.serving import ByteDevice, PtyServer, TcpServer
from tests.helpers.polling import wait_until
from tests.helpers.served import ServedLink, serve_on

#: pyvisa-sim description of a Keysight and a Rigol supply (resources on 5025 and 5555)
PSU_YAML = Path(simulators.instruments.__file__).parent / "pyvisa_sim_psu.yaml"

#: generous for a loaded 2-core machine; fault tests pass their own shorter timeouts
TIMEOUT = 1.0


def psu_sim(dialect: str) -> ScpiPsuSimulator:
    """A noiseless three-channel supply; channel 1: 5 V / 1 A limit into 10 ohm (CV, 0.5 A);
    channel 2: 12 V / 0.2 A into 10 ohm (CC, 2 V); channel 3: 3.3 V programmed, output off."""
    sim = ScpiPsuSimulator(dialect, seed=1)
    sim.noise = 0.0
    sim.set_voltage(1, 5.0)
    sim.set_current(1, 1.0)
    sim.set_output(1, True)
    sim.set_voltage(2, 12.0)
    sim.set_current(2, 0.2)
    sim.set_output(2, True)
    sim.set_voltage(3, 3.3)
    return sim


def sim_of(served: Served) -> ScpiPsuSimulator:
    """The supply behind ``served`` (served by :func:`psu_sim`)."""
    assert isinstance(served.device, ScpiPsuSimulator)
    return served.device


@dataclass
class Served(ServedLink):
    """A simulator reachable over a real transport; ``kind`` is "tcp" or "pty"."""

    device: ByteDevice
    server: PtyServer | TcpServer
    kind: str

    @property
    def visa_resource(self) -> str:
        if isinstance(self.server, TcpServer):
            return f"TCPIP::127.0.0.1::{self.server.port}::SOCKET"
        return f"ASRL{self.server.port}::INSTR"

    @property
    def serial_port(self) -> str:
        return self.server.url if isinstance(self.server, TcpServer) else self.server.port

    def visa(self, driver: str, name: str = "psu", timeout: float = TIMEOUT, **options: Any) -> Instrument:
        return connect(name, driver, {"kind": "visa", "resource": self.visa_resource, "timeout": timeout},
                       options)

    def serial(self, driver: str, name: str = "dev", timeout: float = TIMEOUT, **options: Any) -> Instrument:
        return connect(name, driver, {"kind": "serial", "port": self.serial_port, "timeout": timeout}, options)

    def wait_sent(self, timeout: float = 5.0) -> bool:
        """Block until the device's queued (delayed) output has been handed to the transport."""
        def sent() -> bool:
            links = self.server.links if isinstance(self.server, TcpServer) else [self.server.link]
            return all(link is None or link.pending == 0 for link in links)

        return wait_until(sent, timeout)


@contextmanager
def serve(device: ByteDevice, kind: str) -> Iterator[Served]:
    """One device (its state shared by every connection) on a pty or on TCP."""
    with serve_on(kind, device) as (server, _port):
        yield Served(device, server, kind)


def connect(name: str, driver: str, transport: dict[str, Any], options: dict[str, Any]) -> Instrument:
    config = InstrumentConfig.model_validate(
        {"name": name, "driver": driver, "transport": transport, "options": options})
    return connect_instrument(config)


def read_when_in_step(inst: Instrument, attempts: int = 20) -> list[Reading]:
    """Poll until a poll succeeds, allowing only timeouts on the way (late replies still coming)."""
    for _ in range(attempts - 1):
        try:
            return inst.read()
        except TransportTimeout:
            continue
    return inst.read()


def read_after_late_replies(inst: Instrument, sim: ScpiPsuSimulator) -> list[Reading]:
    """A poll whose every reply (and resync answer) arrives after the driver gave up on it must time
    out; then, replies on time again, the first poll that succeeds: no late reply is ever taken for a
    later one."""
    sim.reply_delay = 1.0
    with pytest.raises(TransportTimeout):
        inst.read()
    sim.reply_delay = 0.0
    return read_when_in_step(inst)


def sim_instrument(resource: str, driver: str, name: str = "psu", **options: Any) -> Instrument:
    """An instrument on the pyvisa-sim backend described by :data:`PSU_YAML`."""
    return connect(name, driver, {"kind": "visa", "resource": resource, "backend": f"{PSU_YAML}@sim",
                                  "timeout": 0.3}, options)

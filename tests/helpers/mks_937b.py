"""MKS 937B simulators reachable over real transports, for the driver tests.

:class:`MKSLink` serves one controller or several on one simulated RS-485 line
(:class:`~simulators.serving.rs485.SharedLine`) behind one pty or TCP port; ``port`` is what a config
would say, so every test goes through ``InstrumentConfig`` like a lab's config does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bridge.config import InstrumentConfig
from bridge.drivers.base import Driver
from bridge.drivers.registry import default_registry
from bridge.edge.instrument import Instrument, connect_instrument
from bridge.transports import open_transport
from bridge.transports.serial import SerialTransport
from simulators.instruments.mks_937b import MKS937BSimulator
from simulators.serving import ByteDevice, PtyServer, TcpServer
from simulators.serving.rs485 import SharedLine
from tests.helpers.served import ServedLink, serve_on

#: mbar per Torr, to pin simulator pressures (mbar) at round Torr readings
TORR = 1.33322368


@dataclass
class MKSLink(ServedLink):
    sims: list[MKS937BSimulator]
    port: str
    kind: str
    server: PtyServer | TcpServer

    @property
    def sim(self) -> MKS937BSimulator:
        return self.sims[0]

    def config(self, name: str = "gauge", timeout: float = 0.5, **options: Any) -> InstrumentConfig:
        return InstrumentConfig.model_validate({
            "name": name, "driver": "mks_937b",
            "transport": {"kind": "serial", "port": self.port, "timeout": timeout},
            "options": {"address": self.sim.address, "settle": 0.05, **options},
        })

    def instrument(self, name: str = "gauge", timeout: float = 0.5, **options: Any) -> Instrument:
        return connect_instrument(self.config(name, timeout, **options))


def make_sims(addresses: Sequence[int] = (253,)) -> list[MKS937BSimulator]:
    return [MKS937BSimulator(address, seed=n + 1) for n, address in enumerate(addresses)]


@contextmanager
def serve(kind: str, sims: list[MKS937BSimulator]) -> Iterator[MKSLink]:
    """The controllers on one line, over a pty (``kind="pty"``) or TCP (``socket://``)."""
    device: ByteDevice = sims[0] if len(sims) == 1 else SharedLine(sims)
    with serve_on(kind, device) as (server, port):
        yield MKSLink(sims, port, kind, server)


@contextmanager
def one_bus(*configs: InstrumentConfig) -> Iterator[list[Driver[Any, Any]]]:
    """Drivers for several instruments on ONE open transport, as the poller runs a shared line."""
    transport = open_transport(configs[0].transport, "rs485 line")
    assert isinstance(transport, SerialTransport)
    transport.open()
    try:
        drivers = [default_registry().get(c.driver).from_config(transport, c.options, c.name) for c in configs]
        for driver in drivers:
            driver.connect()
        yield drivers
    finally:
        transport.close()

"""Genesys simulators reachable over real transports, for the driver tests.

:class:`GenesysLink` serves one supply, or several on one simulated RS-485 chain
(:class:`~simulators.serving.rs485.SharedLine`), behind one pty or TCP port; ``port`` is what a
config would say, so every test goes through ``InstrumentConfig`` like a lab's config does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bridge.config import InstrumentConfig
from bridge.drivers.genesys import Genesys
from bridge.edge.instrument import Instrument, connect_instrument
from bridge.edge.polling.bus import assemble
from simulators.instruments.genesys import GenesysSimulator
from simulators.serving import ByteDevice, PtyServer, TcpServer
from simulators.serving.rs485 import SharedLine
from tests.helpers.served import ServedLink, serve_on


@dataclass
class GenesysLink(ServedLink):
    sims: list[GenesysSimulator]
    port: str
    kind: str
    server: PtyServer | TcpServer

    @property
    def sim(self) -> GenesysSimulator:
        return self.sims[0]

    def config(self, name: str = "psu", timeout: float = 0.5, **options: Any) -> InstrumentConfig:
        return InstrumentConfig.model_validate({
            "name": name, "driver": "genesys",
            "transport": {"kind": "serial", "port": self.port, "timeout": timeout},
            "options": {"address": self.sim.address, "settle": 0.05, **options},
        })

    def instrument(self, name: str = "psu", timeout: float = 0.5, **options: Any) -> Instrument:
        return connect_instrument(self.config(name, timeout, **options))

    def commands(self, index: int = 0) -> list[str]:
        """What supply ``index`` heard, command by command (on a chain: every supply's traffic)."""
        return self.sims[index].received_commands()


def make_sims(addresses: Sequence[int] = (6,)) -> list[GenesysSimulator]:
    """Supplies without noise, each programmed differently (12 V, 2.5 A limit; 24 V, 1 A; ...)
    with the output on into 10 ohm, so a mix-up between them cannot go unnoticed."""
    sims = []
    for n, address in enumerate(addresses):
        sim = GenesysSimulator(address, seed=n + 1)
        sim.noise = 0.0
        sim.set_current(2.5 / (n + 1) * (1 + n % 2 * 0.6))
        sim.set_voltage(12.0 * (n + 1))
        sim.set_output(True)
        sims.append(sim)
    return sims


@contextmanager
def serve(kind: str, sims: list[GenesysSimulator]) -> Iterator[GenesysLink]:
    """The supplies on one line, over a pty (``kind="pty"``) or TCP (``socket://``)."""
    device: ByteDevice = sims[0] if len(sims) == 1 else SharedLine(sims)
    with serve_on(kind, device) as (server, port):
        yield GenesysLink(sims, port, kind, server)


@contextmanager
def one_line(*configs: InstrumentConfig) -> Iterator[list[Genesys]]:
    """The supplies' drivers on ONE open transport, assembled and connected as the poller does."""
    bus = assemble(list(configs))
    bus.transport.open()
    try:
        drivers: list[Genesys] = []
        for _, driver in bus.drivers:
            assert isinstance(driver, Genesys)
            driver.connect()
            drivers.append(driver)
        yield drivers
    finally:
        bus.transport.close()

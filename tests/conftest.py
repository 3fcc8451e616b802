"""Shared fixtures: real parts started privately per test (broker, simulators)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.config import InstrumentConfig
from bridge.edge.instrument import Instrument, connect_instrument
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import PtyServer, TcpServer
from tests.helpers.clock import FakeClock
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.served import ServedLink, serve_on
from tests.helpers.uploader import tpg_gauges


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto on a free port; the test may stop, kill, freeze and restart it."""
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.thaw()
        broker.kill()


@pytest.fixture
def clock() -> FakeClock:
    """A fake ``time.monotonic`` at 1000 s, for simulators tested as pure state machines."""
    return FakeClock()


@dataclass
class TPGLink(ServedLink):
    """A simulated TPG reachable over a real transport: ``port`` is what a config would say."""

    sim: TPGSimulator
    port: str
    kind: str
    server: PtyServer | TcpServer

    def instrument(self, name: str = "gauge", **options: Any) -> Instrument:
        config = InstrumentConfig.model_validate({
            "name": name, "driver": "pfeiffer_tpg",
            "transport": {"kind": "serial", "port": self.port, "timeout": 0.5},
            "options": {"settle": 0.05, **options},
        })
        return connect_instrument(config)


def _tpg_sim(model: str = "TPG362") -> TPGSimulator:
    sim = TPGSimulator(model, seed=1)
    sim.stream_interval = 0.02
    return sim


@pytest.fixture(params=["pty", "tcp"])
def tpg(request: pytest.FixtureRequest) -> Iterator[TPGLink]:
    """A TPG 362 simulator over a pty pair and over TCP (reached through ``socket://``)."""
    sim = _tpg_sim()
    with serve_on(request.param, sim) as (server, port):
        yield TPGLink(sim, port, request.param, server)


@pytest.fixture
def tpg_tcp() -> Iterator[TPGLink]:
    """A TPG 362 on TCP only, for tests that run the CLI in another process."""
    sim = _tpg_sim()
    with serve_on("tcp", sim) as (server, port):
        yield TPGLink(sim, port, "tcp", server)


@pytest.fixture
def gauges() -> Iterator[list[tuple[TPGSimulator, TcpServer]]]:
    """Two simulated TPG 362 gauge controllers, each on its own TCP port (its own bus)."""
    pairs = tpg_gauges()
    yield pairs
    for _, server in pairs:
        server.stop()

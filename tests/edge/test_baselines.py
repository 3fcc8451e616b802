"""Baselines read by the real pollers, on their bus threads, from the simulated chamber over real transports.

The chamber's six instruments (two gauge controllers, a pyrometer, a Eurotherm 3504 with two
loops, a SCPI supply) on five buses, a real outbox, and :class:`bridge.edge.baseline.Baselines`
as the bridge builds it. Counts and contents, never timings.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import InstrumentConfig
from bridge.edge.baseline import Baselines
from bridge.edge.outbox import Outbox
from bridge.edge.polling.pollers import Backoff, Pollers
from bridge.model import Reading
from simulators.chamber.mbe import SimulatedChamber
from tests.helpers.polling import wait_until

FAST_BACKOFF = Backoff(initial=0.05, maximum=0.2)


@pytest.fixture
def chamber() -> Iterator[SimulatedChamber]:
    with SimulatedChamber(seed=3) as sim:
        yield sim


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.sqlite") as box:
        yield box


def configs(chamber: SimulatedChamber, **overrides: dict[str, Any]) -> list[InstrumentConfig]:
    result = []
    for raw in chamber.instrument_configs():
        raw["interval"] = 0.2
        raw["transport"]["timeout"] = 1.0
        if raw["driver"] in ("pfeiffer_tpg", "mks_937b", "impac"):
            raw["options"]["settle"] = 0.02
        for key, value in overrides.get(raw["name"], {}).items():
            raw[key] = value
        result.append(InstrumentConfig.model_validate(raw))
    return result


class Bridge:
    """Pollers, a sink counting polls per instrument, the outbox and the baselines, as the service wires them."""

    def __init__(self, instruments: list[InstrumentConfig], outbox: Outbox, timeout: float = 5.0) -> None:
        self.polls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.pollers = Pollers(instruments, self.sink, on_baseline=self.connected, backoff=FAST_BACKOFF)
        self.baselines = Baselines(self.pollers, outbox, lambda: None, timeout=timeout)
        self.outbox = outbox

    def sink(self, readings: list[Reading]) -> None:
        with self._lock:
            self.polls[readings[0].instrument] += 1

    def connected(self, instrument: str, snapshot: dict[str, Any]) -> None:
        self.baselines.connected(instrument, snapshot)

    def collect(self, when: str = "start") -> tuple[dict[str, Any], str]:
        answered = threading.Event()
        result: dict[str, Any] = {}

        def done(instruments: dict[str, Any]) -> None:
            result.update(instruments)
            result["__thread__"] = threading.current_thread().name
            answered.set()

        self.baselines.collect(when, done)
        assert answered.wait(20), "the collection was never answered"
        thread = result.pop("__thread__")
        return result, thread

    def connect_markers(self) -> list[dict[str, Any]]:
        self.outbox.flush()
        return [e.body for e in self.outbox.pending(0, 100_000) if e.kind == "baseline"]

    def count(self, name: str) -> int:
        with self._lock:
            return self.polls[name]


def test_every_instrument_logs_its_baseline_at_connect_once_and_again_when_it_changed(
        chamber: SimulatedChamber, outbox: Outbox) -> None:
    bridge = Bridge(configs(chamber), outbox)
    with bridge.pollers:
        assert wait_until(lambda: len(bridge.connect_markers()) == 6, 20), bridge.connect_markers()
        markers = {name: body for marker in bridge.connect_markers() for name, body in marker["instruments"].items()}
        assert all(marker["when"] == "connect" and marker["run_id"] is None for marker in bridge.connect_markers())
        assert markers["main_gauge"]["identity"]["model"] == "TPG362"
        assert markers["main_gauge"]["configuration"] == {"unit": "mbar", "gauge_1": "PKR", "gauge_2": "TPR"}
        assert markers["ion_gauge"]["identity"]["serial"] == "937B12345"
        assert markers["pyrometer"]["configuration"]["emissivity"] == 1.0
        assert markers["cell_al"]["identity"]["instrument_id"] == "3504"
        assert markers["cell_al"]["configuration"]["loop"] == 2
        assert markers["heater_psu"]["identity"]["vendor"].startswith("Keysight")
        # a reconnect with nothing changed logs nothing; one after a front-panel change logs it
        polls = bridge.count("main_gauge")
        chamber._byte_servers["main_gauge"].drop_connections()
        assert wait_until(lambda: bridge.count("main_gauge") > polls + 3, 20)
        assert len(bridge.connect_markers()) == 6
        chamber.tpg.set_unit("Torr")
        chamber._byte_servers["main_gauge"].drop_connections()
        assert wait_until(lambda: len(bridge.connect_markers()) == 7, 20)
    (last,) = bridge.connect_markers()[6:]
    assert list(last["instruments"]) == ["main_gauge"]
    assert last["instruments"]["main_gauge"]["configuration"]["unit"] == "Torr"


def test_a_collection_is_read_by_every_bus_on_its_own_thread_while_polling_goes_on(
        chamber: SimulatedChamber, outbox: Outbox) -> None:
    chamber.tpg.refuse_identity = True
    bridge = Bridge(configs(chamber), outbox)
    with bridge.pollers:
        assert wait_until(lambda: all(bridge.count(i.name) > 2 for i in bridge.pollers._instruments), 20)
        snapshots, thread = bridge.collect()
        before = bridge.count("pyrometer")
        assert wait_until(lambda: bridge.count("pyrometer") > before + 3, 20), "polling goes on"
        statuses = {s.name: s.available for s in bridge.pollers.status()}
    assert thread.startswith("poller "), "answered by the last bus to read, on its thread"
    assert list(snapshots) == ["main_gauge", "ion_gauge", "pyrometer", "cell_ga", "cell_al", "heater_psu"]
    assert all("t" in snapshot and "error" not in snapshot for snapshot in snapshots.values()), snapshots
    gauge = snapshots["main_gauge"]
    assert gauge["identity"] == {"vendor": "Pfeiffer Vacuum"} and set(gauge["errors"]) == {"AYT", "PNR"}
    assert gauge["configuration"]["unit"] == "mbar"
    assert statuses["main_gauge"], "a refused identity query must not make an instrument unavailable"
    assert snapshots["cell_ga"]["configuration"]["setpoint_high"] == 1200.0


def test_an_instrument_down_or_on_a_bus_busy_past_the_timeout_is_named_not_read(
        chamber: SimulatedChamber, outbox: Outbox) -> None:
    chamber.psu.reply_delay = 0.4  # every exchange slow: the supply's bus is never idle for long
    chamber.mks.silent = True
    bridge = Bridge(configs(chamber, heater_psu={"interval": 0.1}), outbox, timeout=0.3)
    with bridge.pollers:
        assert wait_until(lambda: not {s.name: s.available for s in bridge.pollers.status()}.get("ion_gauge", True)
                          and bridge.count("heater_psu") > 0, 20)
        snapshots, _ = bridge.collect()
    assert snapshots["ion_gauge"]["error"].startswith("unavailable: ")
    assert snapshots["heater_psu"] == {"identity": {}, "configuration": {},
                                       "error": "not read within 0.3 s (its bus was busy)"}
    assert "error" not in snapshots["main_gauge"]


def test_an_interval_baseline_instrument_is_read_at_connect_and_with_each_baseline_only(
        chamber: SimulatedChamber, outbox: Outbox) -> None:
    bridge = Bridge(configs(chamber, cell_ga={"interval": "baseline"}, cell_al={"interval": "baseline"}), outbox)
    with bridge.pollers:
        assert wait_until(lambda: bridge.count("cell_ga") == 1 and bridge.count("cell_al") == 1, 20)
        main = bridge.count("main_gauge")
        assert wait_until(lambda: bridge.count("main_gauge") > main + 10, 20)
        assert (bridge.count("cell_ga"), bridge.count("cell_al")) == (1, 1), "not polled on a schedule"
        snapshots, _ = bridge.collect()
        assert (bridge.count("cell_ga"), bridge.count("cell_al")) == (2, 2), "read with the baseline"
    assert snapshots["cell_ga"]["identity"]["instrument_id"] == "3504"


def test_stopping_answers_a_collection_the_buses_can_no_longer_read(chamber: SimulatedChamber,
                                                                      outbox: Outbox) -> None:
    bridge = Bridge(configs(chamber), outbox)
    bridge.pollers.start()
    bridge.pollers.stop()
    snapshots, _ = bridge.collect("stop")
    assert {s["error"] for s in snapshots.values()} == {"the bus is not polling"}


def test_an_interval_baseline_instrument_starts_with_the_others(chamber: SimulatedChamber) -> None:
    from bridge.edge.polling.bus_poller import spread_intervals

    mixed = configs(chamber, cell_ga={"interval": "baseline"}, main_gauge={"interval": 0.05})
    assert spread_intervals(mixed) == [0.05, 0.2, 0.2, 0.05, 0.2, 0.2]
    only = configs(chamber, cell_ga={"interval": "baseline"}, cell_al={"interval": "baseline"})[3:5]
    assert spread_intervals(only) == [1.0, 1.0]

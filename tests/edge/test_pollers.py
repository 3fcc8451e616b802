"""The poller against real simulators over real transports (TCP, ptys, a simulated RS-485 line).

Counts, never timings: a window is "the fast instrument's next K polls", and every other
instrument's polls in that window are compared with K times the ratio of the intervals, within
one poll. Where a test needs to know how long something took (a silent instrument holding a
shared line), it asks the poller's own turn records, not the wall clock.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import InstrumentConfig, group_by_bus
from bridge.edge.polling.pollers import Backoff, InstrumentStatus, Pollers, ReadTiming
from bridge.errors import ConfigError
from bridge.model import Reading
from bridge.transports.settings import bus_key
from simulators.chamber.mbe import SimulatedChamber
from simulators.instruments.eurotherm import EurothermSimulator
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.instruments.serial_ascii import TextDevice
from simulators.serving import PtyServer, TcpServer
from tests.conftest import TPGLink
from tests.helpers import mks_937b, modbus_server
from tests.helpers.net import free_port
from tests.helpers.polling import wait_until

#: quick retries: tests wait for recoveries, they do not time them
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.2)


def instrument(name: str, driver: str, transport: dict[str, Any], interval: float, **options: Any
               ) -> InstrumentConfig:
    return InstrumentConfig.model_validate(
        {"name": name, "driver": driver, "interval": interval, "transport": transport, "options": options})


def thermometer(port: str, name: str = "thermometer", interval: float = 0.05) -> InstrumentConfig:
    """A serial_ascii instrument reading the TextDevice default thermometer."""
    query = {"name": "t", "command": "T?", "parse": "regex", "regex": r"T=([-0-9.]+)C", "units": "degC"}
    return instrument(name, "serial_ascii", {"kind": "serial", "port": port, "timeout": 0.3}, interval,
                      queries=[query], settle=0.02)


class Collector:
    """The sink, the status callback and the turn observer of a test: polls per instrument, every
    status change, every turn; and snapshots of all poll counts taken at chosen polls of one
    instrument (inside the sink, so a snapshot is exact with respect to that instrument)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.polls: Counter[str] = Counter()
        self.readings: list[Reading] = []
        self.changes: list[InstrumentStatus] = []
        self.turns: list[ReadTiming] = []
        self._marks: dict[tuple[str, int], dict[str, int] | None] = {}

    def sink(self, readings: list[Reading]) -> None:
        with self._lock:
            name = readings[0].instrument
            assert {r.instrument for r in readings} == {name}
            self.polls[name] += 1
            self.readings.extend(readings)
            if (name, self.polls[name]) in self._marks:
                self._marks[name, self.polls[name]] = dict(self.polls)

    def on_change(self, status: InstrumentStatus) -> None:
        with self._lock:
            self.changes.append(status)

    def observe(self, timing: ReadTiming) -> None:
        with self._lock:
            self.turns.append(timing)

    def pollers(self, instruments: list[InstrumentConfig], **kwargs: Any) -> Pollers:
        kwargs.setdefault("backoff", FAST_BACKOFF)
        return Pollers(instruments, self.sink, on_change=self.on_change, observer=self.observe, **kwargs)

    def count(self, name: str) -> int:
        with self._lock:
            return self.polls[name]

    def availability(self, name: str) -> list[bool]:
        with self._lock:
            return [s.available for s in self.changes if s.name == name]

    def window(self, fast: str, polls: int, timeout: float = 10.0) -> dict[str, int]:
        """Polls of every instrument during ``fast``'s next ``polls`` polls."""
        with self._lock:
            first, last = self.polls[fast] + 1, self.polls[fast] + 1 + polls
            self._marks[fast, first] = self._marks[fast, last] = None
        assert wait_until(lambda: self._marks[fast, last] is not None, timeout), f"{fast} stopped polling"
        with self._lock:
            before, after = self._marks.pop((fast, first)), self._marks.pop((fast, last))
        assert before is not None and after is not None
        return {name: after[name] - before.get(name, 0) for name in after}


def assert_counts(window: dict[str, int], intervals: dict[str, float], fast: str) -> None:
    """Each instrument polled once per interval over the window, within one poll."""
    span = window[fast] * intervals[fast]
    expected = {name: span / interval for name, interval in intervals.items()}
    off = {name: (window.get(name, 0), expected[name]) for name in intervals
           if abs(window.get(name, 0) - expected[name]) > 1}
    assert not off, f"polls (got, expected) off by more than one: {off}"


def status_of(pollers: Pollers, name: str) -> InstrumentStatus:
    return next(s for s in pollers.status() if s.name == name)


def warnings_about(caplog: pytest.LogCaptureFixture, name: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bridge.edge.polling" and r.levelno == level and r.getMessage().startswith(f"{name}: ")]


# ---------------------------------------------------------------------- what a bus is


def cfg(name: str, transport: dict[str, Any]) -> InstrumentConfig:
    return instrument(name, "serial_ascii", transport, 1.0, queries=[{"name": "t", "command": "T?"}])


def test_one_bus_per_port_per_modbus_tcp_endpoint_per_visa_resource(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch()
    link = tmp_path / "usb-FTDI-if00"
    link.symlink_to(device)
    assert bus_key(cfg("a", {"kind": "serial", "port": str(link)}).transport) == f"serial:{device}"
    rtu = instrument("b", "eurotherm", {"kind": "modbus_rtu", "port": str(device), "unit": 3}, 1.0, family="2400")
    assert bus_key(rtu.transport) == f"serial:{device}"  # serial and Modbus RTU on one wire: one bus
    tcp = [instrument(n, "eurotherm", {"kind": "modbus_tcp", "host": host, "port": 502, "unit": unit}, 1.0,
                      family="2400") for n, host, unit in (("c1", "Gateway", 1), ("c2", "gateway", 2))]
    assert {bus_key(c.transport) for c in tcp} == {"modbus_tcp:gateway:502"}
    assert (bus_key(cfg("v", {"kind": "visa", "resource": "tcpip::10.0.0.9::5025::socket"}).transport)
            == "visa:TCPIP::10.0.0.9::5025::SOCKET")
    assert bus_key(cfg("s", {"kind": "serial", "port": "socket://10.0.0.8:4001"}).transport) == (
        "serial:socket://10.0.0.8:4001")


def test_group_by_bus_keeps_config_order() -> None:
    configs = [cfg("a", {"kind": "serial", "port": "socket://h:1"}), cfg("b", {"kind": "serial", "port": "socket://h:2"}),
               cfg("c", {"kind": "serial", "port": "socket://h:1"})]
    groups = group_by_bus(configs)
    assert [[c.name for c in members] for members in groups.values()] == [["a", "c"], ["b"]]


def test_one_line_with_two_sets_of_settings_is_a_config_error() -> None:
    configs = [cfg("a", {"kind": "serial", "port": "/dev/ttyUSB7", "baudrate": 9600}),
               cfg("b", {"kind": "serial", "port": "/dev/ttyUSB7", "baudrate": 19200, "timeout": 3}),
               instrument("c", "eurotherm", {"kind": "modbus_rtu", "port": "/dev/ttyUSB7"}, 1.0, family="2400")]
    with pytest.raises(ConfigError) as info:
        group_by_bus(configs)
    problems = {p.path: p.message for p in info.value.problems}
    assert list(problems) == ["bridge.instruments[1].transport", "bridge.instruments[2].transport"]
    assert "baudrate 19200 vs 9600" in problems["bridge.instruments[1].transport"]
    assert "timeout" not in problems["bridge.instruments[1].transport"]  # may differ: the longest is used
    assert "kind 'modbus_rtu' vs 'serial'" in problems["bridge.instruments[2].transport"]


# ---------------------------------------------------------------------- a whole chamber

CHAMBER_INTERVALS = {"main_gauge": 0.05, "pyrometer": 0.1, "heater_psu": 0.1, "ion_gauge": 0.15,
                     "cell_ga": 0.2, "cell_al": 0.2}


@pytest.fixture
def chamber() -> Iterator[SimulatedChamber]:
    with SimulatedChamber(seed=1) as sim:
        yield sim


def chamber_instruments(sim: SimulatedChamber, timeout: float) -> list[InstrumentConfig]:
    configs = []
    for raw in sim.instrument_configs():
        raw["interval"] = CHAMBER_INTERVALS[raw["name"]]
        raw["transport"]["timeout"] = timeout
        if raw["driver"] in ("pfeiffer_tpg", "mks_937b", "impac"):
            raw["options"]["settle"] = 0.05
        configs.append(InstrumentConfig.model_validate(raw))
    return configs


def test_every_instrument_of_a_chamber_is_polled_once_per_interval(chamber: SimulatedChamber) -> None:
    collector = Collector()
    pollers = collector.pollers(chamber_instruments(chamber, timeout=1.0))
    # five buses: the two Eurotherm loops are one controller behind one Modbus TCP connection
    assert sorted(len(bus.names) for bus in pollers.buses) == [1, 1, 1, 1, 2]
    pollers.start()
    try:
        assert wait_until(lambda: all(collector.count(n) for n in CHAMBER_INTERVALS)), pollers.status()
        window = collector.window("main_gauge", 24)
    finally:
        assert pollers.stop()
    assert_counts(window, CHAMBER_INTERVALS, "main_gauge")
    assert all(s.available and s.failures == 0 for s in pollers.status()), pollers.status()
    assert not any(bus.alive or bus.transport.is_open for bus in pollers.buses)
    by_name = {(r.instrument, r.channel) for r in collector.readings}
    assert {("main_gauge", "pressure_1"), ("pyrometer", "temperature"), ("cell_al", "pv")} <= by_name


def test_a_silent_instrument_goes_unavailable_and_the_other_buses_keep_their_counts(
        chamber: SimulatedChamber, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bridge.edge.polling")
    collector = Collector()
    pollers = collector.pollers(chamber_instruments(chamber, timeout=0.3), failures_before_unavailable=3)
    healthy = {n: i for n, i in CHAMBER_INTERVALS.items() if n != "pyrometer"}
    pollers.start()
    try:
        assert wait_until(lambda: all(collector.count(n) for n in CHAMBER_INTERVALS))
        chamber.pyrometer.silent = True
        window = collector.window("main_gauge", 24)  # about 1.2 s: the pyrometer's failures fall in it
        assert wait_until(lambda: not status_of(pollers, "pyrometer").available)
        down = status_of(pollers, "pyrometer")
        assert down.consecutive_failures >= 3 and down.last_error is not None and "no reply" in down.last_error
        polls_while_down = collector.count("pyrometer")
        window_down = collector.window("main_gauge", 12)
        assert collector.count("pyrometer") == polls_while_down

        chamber.pyrometer.silent = False
        assert wait_until(lambda: status_of(pollers, "pyrometer").available)
        assert wait_until(lambda: collector.count("pyrometer") > polls_while_down + 2)
    finally:
        assert pollers.stop()
    assert_counts(window, healthy, "main_gauge")
    assert_counts(window_down, healthy, "main_gauge")
    assert collector.availability("pyrometer") == [True, False, True]
    assert [s.name for s in collector.changes if not s.available] == ["pyrometer"]
    warnings = warnings_about(caplog, "pyrometer")
    assert len(warnings) == 1 and "unavailable after 3 failures" in warnings[0] and "no reply" in warnings[0]
    assert len(warnings_about(caplog, "pyrometer", logging.INFO)) == 1


# ---------------------------------------------------------------------- a shared RS-485 line


@pytest.fixture
def line() -> Iterator[mks_937b.MKSLink]:
    """Two MKS 937B controllers, addresses 1 and 2, on one simulated RS-485 line behind one pty."""
    with mks_937b.serve("pty", mks_937b.make_sims([1, 2])) as link:
        yield link


def line_instruments(link: mks_937b.MKSLink, interval: float = 0.05) -> list[InstrumentConfig]:
    return [instrument(f"gauge_{sim.address}", "mks_937b", {"kind": "serial", "port": link.port, "timeout": 0.2},
                       interval, address=sim.address, channels=[1], settle=0.05) for sim in link.sims]


def test_two_controllers_on_one_line_share_one_transport_and_take_turns(line: mks_937b.MKSLink) -> None:
    collector = Collector()
    pollers = collector.pollers(line_instruments(line))
    [bus] = pollers.buses
    assert bus.names == ["gauge_1", "gauge_2"]
    pollers.start()
    try:
        assert wait_until(lambda: collector.count("gauge_2") > 0)
        window = collector.window("gauge_1", 16)
    finally:
        assert pollers.stop()
    assert_counts(window, {"gauge_1": 0.05, "gauge_2": 0.05}, "gauge_1")
    assert all(s.failures == 0 for s in pollers.status())
    # Every unit hears the whole line: it carried whole requests, one after the other.
    heard = b"".join(data for direction, data in line.sims[0].log if direction == "rx")
    requests = [r for r in heard.split(b";FF") if r]
    assert requests and all(r.startswith((b"@001", b"@002")) and r.count(b"@") == 1 for r in requests)
    assert {r[:4] for r in requests} == {b"@001", b"@002"}
    turns = sorted(collector.turns, key=lambda t: t.started)
    assert all(a.finished <= b.started for a, b in itertools.pairwise(turns))


def test_a_silent_controller_costs_its_neighbour_at_most_its_own_timeouts(
        line: mks_937b.MKSLink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bridge.edge.polling")
    interval = 0.05
    collector = Collector()
    pollers = collector.pollers(line_instruments(line, interval), failures_before_unavailable=3)
    pollers.start()
    try:
        assert wait_until(lambda: collector.count("gauge_2") > 0)
        line.sims[1].silent = True
        assert wait_until(lambda: not status_of(pollers, "gauge_2").available)
        collector.window("gauge_1", 10)  # gauge_2 retried with backoff meanwhile
        line.sims[1].silent = False
        assert wait_until(lambda: status_of(pollers, "gauge_2").available)
        assert pollers.stop()
    finally:
        pollers.stop()
    # Every deadline of gauge_1 was either polled or counted missed, and it missed no more than
    # gauge_2's failing turns held the line.
    turns = sorted(collector.turns, key=lambda t: t.started)
    mine = [t for t in turns if t.instrument == "gauge_1" and t.kind == "poll"]
    grid_points = round((mine[-1].deadline - mine[0].deadline) / interval) + 1
    missed = grid_points - len(mine)
    assert missed == status_of(pollers, "gauge_1").missed_deadlines
    held = sum(math.ceil((t.finished - t.started) / interval) for t in turns
               if t.instrument == "gauge_2" and not t.ok and mine[0].started <= t.started <= mine[-1].started)
    assert 0 < missed <= held
    assert status_of(pollers, "gauge_1").failures == 0
    assert collector.availability("gauge_2") == [True, False, True]
    assert len(warnings_about(caplog, "gauge_2")) == 1
    assert len(warnings_about(caplog, "gauge_2", logging.INFO)) == 1
    assert not warnings_about(caplog, "gauge_1")


# ---------------------------------------------------------------------- Modbus units on one line


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_modbus_controllers_at_their_own_unit_ids_on_one_connection(kind: str) -> None:
    sims = [EurothermSimulator("2400", unit, setpoint=100.0, seed=unit) for unit in (1, 2)]
    for sim, pv in zip(sims, (111.5, 222.5), strict=True):
        sim.set_pv(pv)
    with modbus_server.serve(sims, kind) as link:
        configs = [instrument(f"cell_{unit}", "eurotherm", link.transport_config(unit, timeout=0.5), 0.1,
                              family="2400") for unit in (1, 2)]
        collector = Collector()
        pollers = collector.pollers(configs)
        assert len(pollers.buses) == 1
        with pollers:
            assert wait_until(lambda: collector.count("cell_1") >= 3 and collector.count("cell_2") >= 3)
    pvs = {r.instrument: r.value for r in collector.readings if r.channel == "pv"}
    assert pvs == {"cell_1": 111.5, "cell_2": 222.5}
    assert {r.unit for r in link.server.requests} == {1, 2}


# ---------------------------------------------------------------------- lost links, late starts


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_dropped_tcp_link_is_reopened_and_polling_goes_on(tpg_tcp: TPGLink, reset: bool) -> None:
    collector = Collector()
    config = instrument("gauge", "pfeiffer_tpg", {"kind": "serial", "port": tpg_tcp.port, "timeout": 0.3}, 0.05,
                        settle=0.05)
    pollers = collector.pollers([config])
    with pollers:
        assert wait_until(lambda: collector.count("gauge") >= 3)
        tpg_tcp.server.drop_connections(reset=reset)
        dropped_at = collector.count("gauge")
        assert wait_until(lambda: collector.count("gauge") >= dropped_at + 5)
    status = status_of(pollers, "gauge")
    assert status.available and status.failures >= 1 and status.consecutive_failures == 0
    reconnects = [t for t in collector.turns if t.kind == "connect"]
    assert len(reconnects) == 2  # at start, and after the drop
    assert collector.availability("gauge") == [True]  # one failure is not an outage


def test_an_instrument_that_cannot_start_comes_up_when_its_device_appears(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bridge.edge.polling")
    port = free_port()
    late = instrument("late_gauge", "pfeiffer_tpg", {"kind": "serial", "port": f"socket://127.0.0.1:{port}",
                                                     "timeout": 0.3}, 0.05, settle=0.05)
    collector = Collector()
    with PtyServer(TextDevice()) as pty:
        pollers = collector.pollers([late, thermometer(pty.port)])
        with pollers:
            assert wait_until(lambda: collector.availability("late_gauge") == [False])
            down = status_of(pollers, "late_gauge")
            assert down.last_error is not None and "cannot open" in down.last_error
            assert wait_until(lambda: status_of(pollers, "late_gauge").failures >= 3)  # retried meanwhile
            polls = collector.count("thermometer")
            assert wait_until(lambda: collector.count("thermometer") >= polls + 5)  # the other one polls on
            with TcpServer(lambda: TPGSimulator("TPG362", seed=1), port=port):
                assert wait_until(lambda: collector.count("late_gauge") >= 3)
    assert collector.availability("late_gauge") == [False, True]
    assert collector.availability("thermometer") == [True]
    [warning] = warnings_about(caplog, "late_gauge")
    assert "cannot start" in warning and f"127.0.0.1:{port}" in warning


def test_stop_ends_a_bus_waiting_on_a_silent_instrument_and_closes_its_line() -> None:
    device = TextDevice()
    device.silent = True
    collector = Collector()
    with PtyServer(device) as pty:
        pollers = collector.pollers([thermometer(pty.port)])
        pollers.start()
        assert wait_until(lambda: status_of(pollers, "thermometer").failures >= 1)
        assert pollers.stop()  # joined within its default bound: the turn in progress, no more
    [bus] = pollers.buses
    assert not bus.alive and not bus.transport.is_open
    assert collector.count("thermometer") == 0


def test_a_failing_sink_or_callback_does_not_stop_the_bus(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bridge.edge.polling")
    collector = Collector()
    calls = Counter[str]()

    def flaky_sink(readings: list[Reading]) -> None:
        calls["sink"] += 1
        if calls["sink"] <= 3:
            raise OSError("disk full")
        collector.sink(readings)

    def bad_callback(status: InstrumentStatus) -> None:
        raise RuntimeError("publisher bug")

    with PtyServer(TextDevice()) as pty:
        pollers = Pollers([thermometer(pty.port)], flaky_sink, on_change=bad_callback)
        with pollers:
            assert wait_until(lambda: collector.count("thermometer") >= 3)
    assert status_of(pollers, "thermometer").reads == calls["sink"]
    errors = [r for r in caplog.records if r.name == "bridge.edge.polling" and r.levelno == logging.ERROR]
    assert [r.getMessage().split(";")[0] for r in errors] == [
        f"bus serial:{os.path.realpath(pty.port)}: the reading sink failed",
        "the poller's on_change callback raised"]

"""Automatic runs against the simulated chamber, with real processes: ``chamber-bridge poll`` and
``chamber-bridge upload`` on a private Mosquitto, the Eurotherm simulator's cell temperature driven
by the test (docs/runs.md, "Automatic runs").

The bridge's log is seen from outside through a tap on the data topic, so every check is on the
instruments' own timestamps and the log's order, never on how long the test waited: the run opens
at the first reading that finds the condition held for ``true_for`` (the reading before it had
not), a flicker shorter than ``true_for`` opens nothing, the pre-roll's readings are in the stored
run exactly once, and ``max_duration`` closes a run as abort.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.chamber.mbe import SimulatedChamber
from tests.helpers.ack_subscriber import AckingSubscriber
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.processes import BridgeProcess, UploaderProcess, write_config
from tests.helpers.uploader import assert_store_holds_run, manifest, wait_for

SITE = "sim-chamber"
CELL_INTERVAL = 0.2
TRUE_FOR, FALSE_FOR, PRE_ROLL, MAX_DURATION = 1.0, 1.0, 1.5, 12.0
PPC = 10
Entry = tuple[int, str, dict[str, Any]]


class Cell:
    """The cell_ga temperature the Eurotherm simulator reports: whatever the test sets."""

    def __init__(self, chamber: SimulatedChamber) -> None:
        self.value = 300.0
        self._lock = threading.Lock()
        chamber.cells.set_pv_source(self.read, 1)

    def read(self) -> float:
        with self._lock:
            return self.value

    def set(self, value: float) -> None:
        with self._lock:
            self.value = value


@pytest.fixture
def chamber() -> Iterator[SimulatedChamber]:
    with SimulatedChamber(seed=7) as chamber:
        yield chamber


AUTO = {"start_when": "cell_ga.pv > 500.0", "true_for": TRUE_FOR, "stop_when": "cell_ga.pv < 400.0",
        "false_for": FALSE_FOR, "pre_roll": PRE_ROLL, "max_duration": MAX_DURATION, "name": "{site}-{start:%H%M%S}",
        "tags": ["auto"]}


def config(chamber: SimulatedChamber, broker: MosquittoBroker, tmp: Path, *, also: str = "main_gauge",
           auto: dict[str, Any] = AUTO) -> dict[str, Any]:
    """cell_ga polled every CELL_INTERVAL and one more instrument (``also``) every 0.25 s."""
    instruments = {i["name"]: i for i in chamber.instrument_configs()}
    cell, other = instruments["cell_ga"], instruments[also]
    cell["interval"], other["interval"] = CELL_INTERVAL, 0.25
    other["transport"]["timeout"] = 0.3
    return {
        "site": SITE,
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "lab", "keepalive": 5},
        "bridge": {"state_dir": str(tmp / "bridge-state"), "instruments": [cell, other], "runs": {"auto": auto}},
        "uploader": {"state_dir": str(tmp / "uploader-state"), "points_per_chunk": PPC, "client_id": "auto-uploader",
                     "sink": {"kind": "local", "path": str(tmp / "store")}},
    }


class Log:
    """The bridge's log as the tap saw it: (seq, kind, body) in seq order."""

    def __init__(self, tap: AckingSubscriber) -> None:
        self.tap = tap

    def entries(self) -> list[Entry]:
        with self.tap.lock:
            return [(seq, e.kind, e.body) for seq, e in sorted(self.tap.entries.items())]

    def markers(self, kind: str) -> list[Entry]:
        return [e for e in self.entries() if e[1] == kind]

    def cell(self, after: int = 0) -> list[Entry]:
        """The cell's temperature readings (cell_ga.pv) after seq ``after``."""
        return [e for e in self.entries()
                if e[1] == "reading" and e[2]["i"] == "cell_ga" and e[2]["c"] == "pv" and e[0] > after]


class Services:
    """The uploader and the bridge as processes on ``path``, and a tap on the bridge's log."""

    def __init__(self, path: Path, broker: MosquittoBroker, tmp: Path) -> None:
        self.tap = AckingSubscriber(broker.host, broker.port, "lab", SITE, client_id="auto-tap")
        self.tap.acking = False
        self.log = Log(self.tap)
        self.uploader = UploaderProcess(path, tmp / "uploader.log")
        self.bridge: BridgeProcess | None = None
        wait_for(lambda: "uploader subscribed" in self.uploader.log_text() or self.uploader.died(), timeout=60,
                 what="the uploader to subscribe")
        bridge = self.bridge = BridgeProcess(path, tmp / "bridge.log")
        wait_for(lambda: len(self.log.cell()) >= 10 or bridge.died(), timeout=60, what="idle readings")

    def run_state(self) -> dict[str, Any]:
        """The retained run topic (docs/payload.md, "Run state"); empty before the bridge published it."""
        run = self.tap.retained.get(f"lab/{SITE}/run")
        state: dict[str, Any] = json.loads(run) if run else {}
        return state

    def auto_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.run_state().get("auto_state", {})
        return state

    def close(self) -> None:
        try:
            if self.bridge is not None:
                assert self.bridge.stop() == 0, self.bridge.log_tail()
        finally:
            self.uploader.stop()
            self.tap.client.loop_stop()
            self.tap.client.disconnect()


def held_since(readings: list[Entry], marker_seq: int, holds: Any) -> tuple[Entry, Entry, Entry]:
    """Around a marker: the first reading of the stretch that made it (every reading from it to the
    marker satisfies ``holds``), the reading that fired it (the last one before the marker), and
    the one before that."""
    before = [r for r in readings if r[0] < marker_seq]
    k = len(before) - 1
    while k > 0 and holds(before[k - 1][2]["v"]):
        k -= 1
    return before[k], before[-1], before[-2]


def test_a_run_opens_and_closes_on_the_cell_temperature_with_its_pre_roll_and_max_duration(
        chamber: SimulatedChamber, mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    cell = Cell(chamber)
    services = Services(write_config(config(chamber, mosquitto, tmp_path), tmp_path), mosquitto, tmp_path)
    log = services.log
    try:
        # a flicker: true for about half of true_for, then false again
        cell.set(600.0)
        flicker = wait_for(lambda: [r for r in log.cell() if r[2]["v"] > 500], what="the flicker to be read")
        cell.set(300.0)
        after_flicker = wait_for(lambda: [r for r in log.cell(flicker[-1][0]) if r[2]["v"] < 500],
                                 what="the flicker to end")[0][0]
        true_readings = [r for r in log.cell() if r[2]["v"] > 500]
        assert true_readings[-1][2]["t"] - true_readings[0][2]["t"] < TRUE_FOR
        assert log.markers("run_start") == []

        # held: the run opens at the first reading at which it has held true_for, not one poll later
        cell.set(600.0)
        ((start_seq, _, start),) = wait_for(lambda: log.markers("run_start"), what="the automatic start")
        first, fired, previous = held_since(log.cell(after_flicker), start_seq, lambda v: v > 500)
        assert previous[2]["t"] - first[2]["t"] < TRUE_FOR <= fired[2]["t"] - first[2]["t"]
        assert start["trigger"] == "auto" and start["tags"] == ["auto"] and start["stream_name"].startswith(SITE)
        assert start["why"] == {"expression": "cell_ga.pv > 500.0", "values": {"cell_ga.pv": fired[2]["v"]}}
        # the pre-roll: every reading (of either instrument) polled since PRE_ROLL before it first held
        since = first[2]["p"] - PRE_ROLL
        assert start["pre_roll_from"] == min(seq for seq, kind, body in log.entries()
                                             if kind == "reading" and seq < start_seq and body["p"] >= since)
        wait_for(services.auto_state, what="the run topic's auto_state")
        assert services.run_state()["auto"] is True

        cell.set(300.0)
        ((stop_seq, _, stop),) = wait_for(lambda: log.markers("run_stop"), what="the automatic stop")
        first, fired, previous = held_since(log.cell(start_seq), stop_seq, lambda v: v < 400)
        assert previous[2]["t"] - first[2]["t"] < FALSE_FOR <= fired[2]["t"] - first[2]["t"]
        assert stop["exit_status"] == "success" and stop["why"]["expression"] == "cell_ga.pv < 400.0"

        # the stored run: exactly the readings from the pre-roll's first to the stop, each once
        run_id = start["run_id"]
        wait_for(lambda: manifest(tmp_path / "store", run_id).get("finalized"), timeout=60, what="the run stored")
        readings = [body for seq, kind, body in log.entries()
                    if kind == "reading" and start["pre_roll_from"] <= seq < stop_seq]
        doc = assert_store_holds_run(tmp_path / "store", run_id, readings, PPC)
        assert doc["report"]["complete"] and doc["trigger"] == "auto"
        assert (doc["report"]["pre_roll_from"], doc["report"]["start_seq"]) == (start["pre_roll_from"], start_seq)
        assert doc["why"]["start"] == start["why"] and doc["why"]["stop"] == stop["why"]

        # max_duration: a run whose stop condition never comes is closed as abort, and not opened again
        cell.set(600.0)
        second = wait_for(lambda: log.markers("run_start")[1:], timeout=60, what="a second automatic run")[0]
        (_, _, aborted) = wait_for(lambda: log.markers("run_stop")[1:], timeout=60 + MAX_DURATION,
                                   what="max_duration to close it")[0]
        assert aborted["exit_status"] == "abort" and "max_duration" in aborted["reason"]
        wait_for(lambda: manifest(tmp_path / "store", second[2]["run_id"]).get("finalized"), timeout=60,
                 what="the aborted run stored")
        assert manifest(tmp_path / "store", second[2]["run_id"])["exit_status"] == "abort"
        seen = len(log.cell())
        wait_for(lambda: len(log.cell()) >= seen + 10, what="more readings while the condition still holds")
        assert len(log.markers("run_start")) == 2  # disarmed until the condition drops
    finally:
        services.close()


def test_a_bad_or_stale_channel_neither_starts_nor_stops_a_run(chamber: SimulatedChamber, mosquitto: MosquittoBroker,
                                                              tmp_path: Path) -> None:
    cell = Cell(chamber)
    chamber.pyrometer.set_temperature(450.0)
    chamber.pyrometer.special = 88880  # over range: readings of bad quality, no value
    auto = {"start_when": "cell_ga.pv > 500.0 && pyrometer.temperature > 300.0", "true_for": TRUE_FOR,
            "stop_when": "cell_ga.pv < 400.0 || pyrometer.temperature < 250.0", "false_for": FALSE_FOR}
    services = Services(write_config(config(chamber, mosquitto, tmp_path, also="pyrometer", auto=auto), tmp_path),
                        mosquitto, tmp_path)
    log = services.log
    try:
        cell.set(600.0)
        hot = wait_for(lambda: [r for r in log.cell() if r[2]["v"] > 500], what="the cell hot")[0]
        wait_for(lambda: log.cell()[-1][2]["t"] - hot[2]["t"] > 3 * TRUE_FOR, what="3 x true_for of hot readings")
        assert log.markers("run_start") == []  # the cell alone held, but the pyrometer's state is unknown
        state = wait_for(lambda: services.auto_state().get("unknown"), what="the unknown channels in the run topic")
        assert state == {"pyrometer.temperature": "over_range"}
        chamber.pyrometer.special = None
        ((start_seq, _, _),) = wait_for(lambda: log.markers("run_start"), what="the start once the pyrometer reads")

        chamber.pyrometer.silent = True  # no readings: stale after 3 intervals
        wait_for(lambda: services.auto_state().get("unknown") == {"pyrometer.temperature": "stale"},
                 what="the pyrometer stale in the run topic")
        cell.set(300.0)
        cold = wait_for(lambda: [r for r in log.cell(start_seq) if r[2]["v"] < 400], what="the cell cold")[0]
        wait_for(lambda: log.cell()[-1][2]["t"] - cold[2]["t"] > 3 * FALSE_FOR, what="3 x false_for of cold readings")
        assert log.markers("run_stop") == []  # the stop condition is unknown without the pyrometer
        chamber.pyrometer.silent = False
        ((_, _, stop),) = wait_for(lambda: log.markers("run_stop"), timeout=60, what="the stop once it reads again")
        assert stop["exit_status"] == "success"
        assert stop["why"]["values"]["pyrometer.temperature"] == pytest.approx(450.0, abs=1.0)
    finally:
        services.close()

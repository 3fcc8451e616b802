"""A growth run end to end with real processes: what a run records beside the numbers (issue 14).

The simulated MBE chamber runs in this process (every instrument on TCP); ``chamber-bridge poll``
and ``chamber-bridge upload`` run as processes of their own over a private Mosquitto; the run is
opened and closed with ``start-run`` and ``stop-run``; a tap on the data topic sees the bridge's
log as it was published. During the run the main gauge's head is switched off and on again, the
heater supply's output off and on, and two alarms of the Eurotherm come and go. Afterwards
``runs show``, ``runs export``, the reader (bridge.store) and the plot must all show the gauge's
``sensor_off`` stretch, the output state as a bool and the status word's named bits, and the
store must hold every reading the bridge logged, each once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.store.plot import panels
from bridge.store.reader import RunStore
from simulators.chamber.mbe import SimulatedChamber
from tests.helpers.ack_subscriber import AckingSubscriber
from tests.helpers.cli import run_cli
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.processes import BridgeProcess, UploaderProcess, write_config
from tests.helpers.uploader import assert_store_holds_run, manifest, wait_for

SITE = "chamber-q"
PPC = 5
ALARMS = 0b11  # alarm 1 and alarm 2 of the Eurotherm's status word
GAUGE = ("main_gauge", "pressure_1")
OUTPUT = ("heater_psu", "output_1")
STATUS = ("cell_ga", "status")


@pytest.fixture
def chamber() -> Iterator[SimulatedChamber]:
    with SimulatedChamber(seed=11) as chamber:
        yield chamber


def config(chamber: SimulatedChamber, broker: MosquittoBroker, tmp: Path) -> dict[str, Any]:
    raw = chamber.config(site=SITE)
    raw["mqtt"] = {"host": broker.host, "port": broker.port, "topic_prefix": "lab", "keepalive": 5}
    raw["bridge"]["state_dir"] = str(tmp / "bridge-state")
    for instrument in raw["bridge"]["instruments"]:
        instrument["interval"] = 0.25
    raw["uploader"] = {"state_dir": str(tmp / "uploader-state"), "points_per_chunk": PPC,
                       "client_id": "typed-uploader", "sink": {"kind": "local", "path": str(tmp / "store")}}
    return raw


class Log:
    """The bridge's log as the tap saw it: the run's readings as bodies, in seq order."""

    def __init__(self, tap: AckingSubscriber) -> None:
        self.tap = tap

    def entries(self) -> list[Any]:
        with self.tap.lock:
            return [self.tap.entries[seq] for seq in sorted(self.tap.entries)]

    def run(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The open or last run's id and its readings so far."""
        run_id, readings = None, []
        for entry in self.entries():
            if entry.kind == "run_start":
                run_id, readings = entry.body["run_id"], []
            elif entry.kind == "reading" and run_id is not None:
                readings.append(entry.body)
            elif entry.kind == "run_stop":
                return run_id, readings
        return run_id, readings

    def count(self, channel: tuple[str, str], where: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for r in self.run()[1] if (r["i"], r["c"]) == channel and where(r))

    def wait(self, channel: tuple[str, str], where: Callable[[dict[str, Any]], bool], at_least: int,
             what: str) -> None:
        wait_for(lambda: self.count(channel, where) >= at_least, timeout=60, what=what)


def off(r: dict[str, Any]) -> bool:
    return bool(r["q"] == "sensor_off")


def test_a_gauge_off_for_part_of_a_run_a_supply_output_and_status_bits_end_to_end(
        chamber: SimulatedChamber, mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    raw = config(chamber, mosquitto, tmp_path)
    path = write_config(raw, tmp_path)
    store = tmp_path / "store"
    tap = AckingSubscriber(mosquitto.host, mosquitto.port, "lab", SITE, client_id="typed-tap")
    tap.acking = False
    log = Log(tap)
    bridge = BridgeProcess(path, tmp_path / "bridge.log")
    uploader = UploaderProcess(path, tmp_path / "uploader.log")
    try:
        wait_for(lambda: uploader.died() or "uploader subscribed" in uploader.log_text(), timeout=60,
                 what="the uploader to subscribe")
        started = run_cli("start-run", str(path), "--name", "GaN-typed", "--timeout", "30")
        assert started.returncode == 0, started.stderr + bridge.log_tail()
        # before: the gauge reads, the supply's output is on, no alarm
        log.wait(GAUGE, lambda r: r["q"] == "ok", 4, "ok gauge readings")
        log.wait(OUTPUT, lambda r: r["v"] is True, 2, "the output on")
        chamber.tpg.set_gauge_on(1, False)      # the operator switches the head off ...
        chamber.psu.set_output(1, False)        # ... and the heater supply's output
        chamber.cells.status_bits = ALARMS      # two alarms of the cell controller
        log.wait(GAUGE, off, 4, "sensor_off readings")
        log.wait(OUTPUT, lambda r: r["v"] is False, 3, "the output off")
        log.wait(STATUS, lambda r: r["v"] == ALARMS, 3, "the alarms in the status word")
        chamber.tpg.set_gauge_on(1, True)
        chamber.psu.set_output(1, True)
        chamber.cells.status_bits = 0
        log.wait(GAUGE, lambda r: r["q"] == "ok", log.count(GAUGE, lambda r: r["q"] == "ok") + 4,
                 "the gauge reading again")
        log.wait(STATUS, lambda r: r["v"] == 0, log.count(STATUS, lambda r: r["v"] == 0) + 2, "the alarms gone")
        stopped = run_cli("stop-run", str(path), "--timeout", "30")
        assert stopped.returncode == 0, stopped.stderr
        run_id, readings = log.run()
        assert run_id is not None
        wait_for(lambda: manifest(store, run_id).get("finalized"), timeout=90, what="the run finalized")
    finally:
        for process in (bridge, uploader):
            process.stop()
        tap.close()

    # the store holds every reading the bridge logged for the run, each once, typed, with its quality
    gauge = [r for r in readings if (r["i"], r["c"]) == GAUGE]
    off_count = sum(map(off, gauge))
    assert off_count >= 4 and all(r["v"] is None for r in gauge if off(r))
    doc = assert_store_holds_run(store, run_id, readings, PPC)
    assert doc["v"] == 2 and doc["report"]["complete"]
    assert doc["channels"]["main_gauge/pressure_1"]["qualities"] == {"ok": len(gauge) - off_count,
                                                                    "sensor_off": off_count}
    assert doc["channels"]["heater_psu/output_1"]["type"] == "bool"
    assert doc["channels"]["cell_ga/status"]["type"] == "bits"

    # runs show: the gauge's sensor_off points counted beside its ok ones; the types named
    shown = run_cli("runs", "show", run_id[:8], "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    rows = {cells[0]: cells for cells in map(str.split, shown.stdout.splitlines()) if cells and "/" in cells[0]}
    chunks = doc["channels"]["main_gauge/pressure_1"]["chunks"]
    # channel, flow, units, type, points, ok, other qualities, chunks
    assert rows["main_gauge/pressure_1"][3:] == ["float", str(len(gauge)), str(len(gauge) - off_count),
                                                 "sensor_off", str(off_count), str(chunks)]
    assert rows["heater_psu/output_1"][3] == "bool" and rows["cell_ga/status"][3] == "bits"

    # runs export: one row per point, the gauge's stretch as sensor_off without a value
    out = tmp_path / "run.csv"
    exported = run_cli("runs", "export", run_id[:8], "--store", str(store), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    table = list(csv.DictReader(out.open(encoding="utf-8")))
    gauge_rows = [r for r in table if r["channel"] == "main_gauge/pressure_1"]
    assert [(r["quality"], r["value"] == "") for r in gauge_rows if r["quality"] != "ok"] == [
        ("sensor_off", True)] * off_count
    assert {r["value"] for r in table if r["channel"] == "heater_psu/output_1"} == {"true", "false"}
    alarm_rows = [r for r in table if r["channel"] == "cell_ga/status" and r["value"] == str(ALARMS)]
    assert len(alarm_rows) >= 3 and {(r["type"], r["detail"]) for r in alarm_rows} == {("bits", "alarm 1, alarm 2")}

    # the reader: one sensor_off stretch, the output as bools, the status word as an integer with its bits
    run = RunStore(store).load(run_id)
    assert run.problems == []
    series = run.series["main_gauge/pressure_1"]
    ((start, end, quality),) = series.not_ok_spans()
    first_off = min(r["t"] for r in gauge if off(r))
    assert (start, quality) == (first_off, "sensor_off") and end > start
    assert {type(v) for v in run.series["heater_psu/output_1"].values} == {bool}
    assert False in run.series["heater_psu/output_1"].values
    status = run.series["cell_ga/status"]
    assert ALARMS in status.values and {type(v) for v in status.values} == {int}
    assert "alarm 1, alarm 2" in status.details

    # the plot: the gauge's trace is shaded over that stretch, labelled sensor_off; the output is a state
    traces = {t.name: t for p in panels(run) for t in p.traces}
    assert traces["main_gauge/pressure_1"].spans == [(start, end, "sensor_off")]
    assert traces["heater_psu/output_1"].states.count(False) >= 3
    image = tmp_path / "run.png"
    plotted = run_cli("runs", "plot", run_id[:8], "--store", str(store), "--out", str(image))
    assert plotted.returncode == 0, plotted.stderr
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(run_cli("runs", "show", run_id[:8], "--json", "--store", str(store)).stdout)[
        "channels"]["main_gauge/pressure_1"]["qualities"]["sensor_off"] == off_count

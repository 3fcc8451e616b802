"""Each run's start and stop baselines on a real outbox: where they sit in the log, and what a stop waits for.

The baselines come from a stand-in of :class:`bridge.edge.baseline.Baselines` that answers on a
thread of its own, as a bus does, and can be held (a bus busy in a long turn) and released. The
real collection across real buses is tested in test_baselines.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.edge.outbox import Outbox
from bridge.edge.runs import Runs
from bridge.edge.triggers import AutoRuns
from bridge.model import Quality, Reading
from bridge.wire import contract

SNAPSHOT = {"identity": {"vendor": "Pfeiffer Vacuum", "serial": "44990000"},
            "configuration": {"unit": "mbar", "gauge_1": "PKR"}}


class Bus:
    """Answers collections on its own thread, in order; ``hold`` keeps it busy until ``release``."""

    timeout = 2.0

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = SNAPSHOT
        self.asked: list[str] = []
        self._queue: list[tuple[str, Callable[[dict[str, Any]], None]]] = []
        self._wake = threading.Condition()
        self._free = threading.Event()
        self._free.set()
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="poller test-bus", daemon=True)
        self.thread.start()

    def collect(self, when: str, done: Callable[[dict[str, Any]], None]) -> None:
        with self._wake:
            self.asked.append(when)
            self._queue.append((when, done))
            self._wake.notify()

    def on_a_bus_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def hold(self) -> None:
        self._free.clear()

    def release(self) -> None:
        self._free.set()

    def call(self, function: Callable[[], Any]) -> Any:
        """``function()`` on the bus thread (as the automatic trigger runs, fed by a bus's readings)."""
        result: list[Any] = []
        done = threading.Event()

        def job(_: dict[str, Any]) -> None:
            result.append(function())
            done.set()

        with self._wake:
            self._queue.append(("call", job))
            self._wake.notify()
        assert done.wait(5)
        return result[0]

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._free.set()
        self.thread.join(5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                when, done = self._queue.pop(0)
            if when != "call":
                self._free.wait()
            done({} if when == "call" else {"gauge": dict(self.snapshot)})


@pytest.fixture
def bus() -> Iterator[Bus]:
    bus = Bus()
    yield bus
    bus.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.sqlite") as box:
        yield box


def log(box: Outbox) -> list[tuple[str, dict[str, Any]]]:
    box.flush()
    return [(e.kind, e.body) for e in box.pending(0, 10_000)]


def wait_for(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(500):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not met within 5 s")


def runs_with(box: Outbox, bus: Bus) -> Runs:
    runs = Runs(box)
    runs.baselines = bus
    return runs


def test_a_run_holds_its_start_baseline_after_the_start_marker_and_its_stop_baseline_right_before_the_stop(
        outbox: Outbox, bus: Bus) -> None:
    runs = runs_with(outbox, bus)
    ok, _, start_seq = runs.start({"stream_name": "GaN-17"})
    assert ok and start_seq == 1
    run_id = runs.current["run_id"]  # type: ignore[index]
    wait_for(lambda: len(log(outbox)) == 2)
    outbox.append("reading", {"i": "gauge", "c": "p1", "v": 1e-7, "q": "ok", "t": 1.8e9, "u": "mbar"}, 1.8e9)
    bus.snapshot = {**SNAPSHOT, "configuration": {"unit": "Torr", "gauge_1": "PKR"}}
    ok, message, stop_seq = runs.stop({"exit_status": "success"}, wait=True)
    assert ok and message == f"run {run_id} stopped (success)"
    entries = log(outbox)
    assert [kind for kind, _ in entries] == ["run_start", "baseline", "reading", "baseline", "run_stop"]
    assert stop_seq == 5 and bus.asked == ["start", "stop"]
    start, stop = entries[1][1], entries[3][1]
    assert start == {"when": "start", "run_id": run_id, "instruments": {"gauge": SNAPSHOT}}
    assert stop["when"] == "stop" and stop["instruments"]["gauge"]["configuration"]["unit"] == "Torr"
    assert entries[4][1]["last_seq"] == 4  # the stop baseline is inside the run


def test_a_stop_asked_on_a_bus_thread_does_not_wait_and_the_run_counts_as_closed_until_its_marker(
        outbox: Outbox, bus: Bus) -> None:
    runs = runs_with(outbox, bus)
    runs.start({"stream_name": "auto-1"}, trigger="manual")
    wait_for(lambda: len(log(outbox)) == 2)
    bus.hold()  # the bus is busy: its answer to the stop will come later
    ok, message, seq = bus.call(lambda: runs.stop({"exit_status": "success"}, wait=True))
    assert ok and seq is None and "its stop marker follows its baseline" in message, "a bus thread never waits"
    assert runs.current is None, "a stopping run is not open for anyone to stop or extend"
    again = runs.stop({"exit_status": "abort"})
    assert again == (False, "no run is open", None)
    refused = runs.start({"stream_name": "next"})
    assert not refused[0] and "is stopping (its baseline is being read)" in refused[1]
    assert [kind for kind, _ in log(outbox)] == ["run_start", "baseline"]
    bus.release()
    wait_for(lambda: [kind for kind, _ in log(outbox)][-1:] == ["run_stop"])
    assert [kind for kind, _ in log(outbox)] == ["run_start", "baseline", "baseline", "run_stop"]
    assert runs.start({"stream_name": "next"})[0]


def test_a_run_stopped_before_its_start_baseline_came_holds_both_in_order(outbox: Outbox, bus: Bus) -> None:
    runs = runs_with(outbox, bus)
    bus.hold()
    runs.start({"stream_name": "short"})
    stopping = threading.Thread(target=runs.stop, args=({"exit_status": "abort"},))
    stopping.start()
    wait_for(lambda: bus.asked == ["start", "stop"])
    bus.release()
    stopping.join(5)
    wait_for(lambda: [kind for kind, _ in log(outbox)][-1:] == ["run_stop"])
    kinds = [(kind, body.get("when")) for kind, body in log(outbox)]
    assert kinds == [("run_start", None), ("baseline", "start"), ("baseline", "stop"), ("run_stop", None)]


def test_a_stop_whose_marker_cannot_be_logged_says_so_and_the_run_stays_open(outbox: Outbox, bus: Bus) -> None:
    runs = runs_with(outbox, bus)
    runs.start({"stream_name": "kept"})
    wait_for(lambda: len(log(outbox)) == 2)
    bus.snapshot = {"identity": {"vendor": "x\x1b[2J"}, "configuration": {}}  # refused by the contract
    ok, message, seq = runs.stop({"exit_status": "success"}, wait=True)
    assert not ok and seq is None and "could not be stopped" in message and "control characters" in message
    assert runs.current is not None
    bus.snapshot = SNAPSHOT
    ok, message, seq = runs.stop({"exit_status": "success"})  # not waiting: answered at once
    assert ok and seq is None and "stopping (success)" in message
    wait_for(lambda: runs.current is None and [kind for kind, _ in log(outbox)][-1:] == ["run_stop"])


def test_without_baselines_a_run_has_its_markers_only(outbox: Outbox) -> None:
    runs = Runs(outbox)
    runs.start({"stream_name": "plain"})
    runs.stop({"exit_status": "success"})
    assert [kind for kind, _ in log(outbox)] == ["run_start", "run_stop"]
    assert {"baseline"} <= contract.MARKERS


def test_the_automatic_trigger_stops_on_a_bus_thread_at_once_and_a_start_due_meanwhile_waits_for_the_marker(
        outbox: Outbox, bus: Bus) -> None:
    """The trigger is fed on a bus thread and holds its lock: its stop is answered at once, the stop marker
    follows the stop baseline, and a start condition that holds again in between opens the next run at the
    first reading after that marker, not never (a refused start would disarm it)."""
    config = parse_config({"site": "chamber-a", "bridge": {
        "instruments": [{"name": "cell_ga", "driver": "eurotherm", "interval": 1.0,
                         "transport": {"kind": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "unit": 1},
                         "options": {"family": "3500", "loop": 1}}],
        "runs": {"auto": {"start_when": "cell_ga.pv > 500.0"}}}})
    assert config.bridge.runs.auto is not None
    runs = Runs(outbox, auto_configured=True)
    runs.baselines = bus
    trigger = AutoRuns(config.bridge.runs.auto, "chamber-a", config.bridge.instruments, runs)
    t0 = 1_790_000_000.0

    def poll(t: float, pv: float) -> None:
        reading = Reading("cell_ga", "pv", pv, Quality.OK, t, "degC")
        trigger.observe([reading], [outbox.append("reading", {**contract.reading_body(reading), "p": t}, t)])

    bus.call(lambda: poll(t0, 550.0))
    first = runs.current
    assert first is not None and first["trigger"] == "auto"
    wait_for(lambda: [kind for kind, _ in log(outbox)][-1:] == ["baseline"])
    bus.hold()  # the stop baseline will take a while
    bus.call(lambda: poll(t0 + 1, 350.0))
    assert trigger.stopped == 1 and runs.current is None and runs.stopping
    poll(t0 + 2, 560.0)  # (from another bus) holds again while the stop waits: no start refused, none disarmed
    assert runs.current is None and trigger.status()["armed"]
    bus.release()
    wait_for(lambda: not runs.stopping)
    bus.call(lambda: poll(t0 + 3, 570.0))
    second = runs.current
    assert second is not None and second["run_id"] != first["run_id"] and trigger.started == 2
    kinds = [(kind, body.get("when") or body.get("source") or body.get("c")) for kind, body in log(outbox)]
    assert kinds[:9] == [("reading", "pv"), ("run_start", None), ("event", "auto"), ("baseline", "start"),
                         ("reading", "pv"), ("event", "auto"), ("reading", "pv"), ("baseline", "stop"),
                         ("run_stop", None)]
    stop = log(outbox)[8][1]
    assert stop["run_id"] == first["run_id"] and stop["why"]["expression"] == "!(cell_ga.pv > 500.0)"
    assert second["pre_roll_from"] == 7  # its condition first held at the reading logged while the stop waited

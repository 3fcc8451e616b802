"""The automatic-run trigger as a state machine: synthetic readings on synthetic instrument times,
a real outbox and real runs (bridge/edge/triggers.py, docs/runs.md "Automatic runs").

Every reading goes into the outbox as the service logs it and then to the trigger with its seq,
so the markers the trigger writes are checked where the uploader will read them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import AutoRunsConfig, Config, parse_config
from bridge.edge.outbox import Outbox
from bridge.edge.runs import Runs
from bridge.edge.service import BridgeService
from bridge.edge.triggers import AutoRuns
from bridge.model import Quality, Reading
from bridge.wire import contract

T0 = 1_765_000_000.0
CELL, PYRO = 1.0, 0.5  # poll intervals (s)


def config(**auto: Any) -> Config:
    return parse_config({
        "site": "chamber-a",
        "bridge": {"instruments": [
            {"name": "cell_ga", "driver": "eurotherm", "interval": CELL,
             "transport": {"kind": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "unit": 1},
             "options": {"family": "3500", "loop": 1}},
            {"name": "pyrometer", "driver": "impac", "interval": PYRO,
             "transport": {"kind": "serial", "port": "/dev/null", "baudrate": 19200, "parity": "E"},
             "options": {"address": 0}},
        ], "runs": {"auto": {"start_when": "cell_ga.pv > 500.0", "stop_when": "cell_ga.pv < 400.0", **auto}}},
    })


class Chamber:
    """A bridge's logging path without the pollers: readings into the outbox, then to the trigger."""

    def __init__(self, tmp: Path, clock: Callable[[], float] = time.time, **auto: Any) -> None:
        self.config = config(**auto)
        self.path = tmp / "outbox.sqlite"
        self.clock = clock
        assert self.config.bridge.runs.auto is not None
        self.auto: AutoRunsConfig = self.config.bridge.runs.auto
        self._open()

    def _open(self) -> None:
        self.outbox = Outbox(self.path)
        self.runs = Runs(self.outbox, auto_configured=True, clock=self.clock)
        self.runs.recover()
        self.trigger = AutoRuns(self.auto, self.config.site, self.config.bridge.instruments, self.runs)

    def restart(self) -> None:
        """The bridge stops and starts again on the same outbox, as after a crash or an upgrade."""
        self.outbox.close()
        self._open()

    def poll(self, instrument: str, t: float, **values: float | None) -> list[int]:
        """One poll at instrument time ``t``; a value of None is a reading of bad quality."""
        readings = [Reading(instrument, channel, value, Quality.OK if value is not None else Quality.SENSOR_ERROR,
                            t, "degC") for channel, value in values.items()]
        seqs = [self.outbox.append("reading", {**contract.reading_body(r), "p": t}, t) for r in readings]
        self.trigger.observe(readings, seqs)
        return [seq for seq in seqs if seq is not None]

    def cell(self, t: float, pv: float | None) -> int:
        return self.poll("cell_ga", t, pv=pv)[0]

    def markers(self) -> list[tuple[int, str, dict[str, Any]]]:
        """The run markers logged so far."""
        self.outbox.flush()
        return [(e.seq, e.kind, e.body) for e in self.outbox.pending(0, 100_000) if e.kind.startswith("run_")]

    def events(self) -> list[tuple[int, dict[str, Any]]]:
        """The events logged so far (the trigger's own notes)."""
        self.outbox.flush()
        return [(e.seq, e.body) for e in self.outbox.pending(0, 100_000) if e.kind == "event"]

    def close(self) -> None:
        self.outbox.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Chamber] = []

    def build(**auto: Any) -> Chamber:
        chamber = Chamber(tmp_path / str(len(made)), **auto)
        made.append(chamber)
        return chamber

    yield build
    for chamber in made:
        chamber.close()


def test_a_run_starts_once_the_condition_held_for_true_for_and_stops_after_false_for(make: Any) -> None:
    chamber = make(true_for=3.0, false_for=2.0, name="{site}-{start:%H%M%S}", tags=["auto", "GaAs"])
    chamber.cell(T0, 450.0)
    first_true = chamber.cell(T0 + 1, 520.0)
    chamber.cell(T0 + 2, 530.0)
    chamber.cell(T0 + 3, 540.0)
    assert chamber.runs.current is None  # held 2 s so far
    chamber.cell(T0 + 4, 550.0)  # held 3 s
    ((start_seq, kind, start),) = chamber.markers()
    assert kind == "run_start" and start_seq == chamber.outbox.last_seq - 1  # then the trigger's event
    assert start["trigger"] == "auto" and start["tags"] == ["auto", "GaAs"]
    assert start["stream_name"].startswith("chamber-a-")
    assert start["why"] == {"expression": "cell_ga.pv > 500.0", "values": {"cell_ga.pv": 550.0}}
    assert start["pre_roll_from"] == first_true  # the readings since it first held belong to the run
    assert chamber.runs.current is not None and chamber.runs.current["trigger"] == "auto"
    chamber.cell(T0 + 5, 390.0)
    chamber.cell(T0 + 6, 410.0)  # not below 400 any more: the count starts again
    chamber.cell(T0 + 7, 380.0)
    chamber.cell(T0 + 8, 370.0)
    assert chamber.runs.current is not None
    chamber.cell(T0 + 9, 360.0)  # below for 2 s
    assert chamber.runs.current is None
    stop = chamber.markers()[-1]
    assert stop[1] == "run_stop" and stop[2]["exit_status"] == "success"
    assert stop[2]["why"] == {"expression": "cell_ga.pv < 400.0", "values": {"cell_ga.pv": 360.0}}
    assert (chamber.trigger.started, chamber.trigger.stopped) == (1, 1)
    assert chamber.trigger.status()["armed"]  # the closing reading saw the start condition false
    # its own events, both in the run: right after its start marker, right before its stop marker
    run_id = start["run_id"]
    assert chamber.events() == [
        (start_seq + 1, {"text": "auto start: cell_ga.pv > 500.0 held 3 s", "tags": ["auto"], "source": "auto",
                         "run_id": run_id}),
        (stop[0] - 1, {"text": "auto stop: cell_ga.pv < 400.0 held 2 s", "tags": ["auto"], "source": "auto",
                       "run_id": run_id})]


def test_a_flicker_shorter_than_true_for_opens_nothing(make: Any) -> None:
    chamber = make(true_for=2.0)
    for k, pv in enumerate([600.0, 610.0, 300.0, 620.0, 630.0, 200.0, 640.0, 450.0]):
        chamber.cell(T0 + k, pv)
    assert chamber.markers() == [] and chamber.trigger.status()["start"] == "false"


def test_the_default_stop_is_the_negation_of_the_start(make: Any) -> None:
    chamber = make(stop_when=None)
    chamber.cell(T0, 600.0)
    assert chamber.runs.current is not None
    chamber.cell(T0 + 1, 501.0)
    assert chamber.runs.current is not None
    chamber.cell(T0 + 2, 499.0)
    assert chamber.runs.current is None
    assert chamber.markers()[-1][2]["why"]["expression"] == "!(cell_ga.pv > 500.0)"


def test_a_stale_or_bad_channel_leaves_the_state_unchanged(make: Any) -> None:
    chamber = make(start_when="cell_ga.pv > 500.0 && pyrometer.temperature > 300.0", true_for=2.0,
                   stop_when="cell_ga.pv < 400.0 || pyrometer.temperature < 250.0")
    chamber.poll("pyrometer", T0, temperature=350.0)
    chamber.cell(T0, 600.0)  # true from here
    chamber.poll("pyrometer", T0 + 0.5, temperature=None)  # bad quality: unknown
    chamber.cell(T0 + 1, 600.0)
    status = chamber.trigger.status()
    assert status["start"] == "unknown" and status["unknown"] == {"pyrometer.temperature": "sensor_error"}
    assert status["since"] == T0  # the count was not reset ...
    chamber.cell(T0 + 2.5, 600.0)
    assert chamber.runs.current is None  # ... and unknown started nothing, though 2.5 s have passed
    chamber.poll("pyrometer", T0 + 2.6, temperature=350.0)
    assert chamber.runs.current is not None  # true again, held since T0 (no false seen)
    # an open automatic run: a stale channel stops nothing
    chamber.cell(T0 + 10, 100.0)  # the pyrometer's last reading (T0 + 2.6) is older than 3 x 0.5 s
    assert chamber.trigger.status()["unknown"] == {"pyrometer.temperature": "stale"}
    assert chamber.runs.current is not None


def test_max_duration_closes_the_run_as_abort_and_it_does_not_open_again_at_once(make: Any) -> None:
    chamber = make(max_duration=10.0)
    chamber.cell(T0, 600.0)
    assert chamber.runs.current is not None
    chamber.cell(T0 + 9, 600.0)
    assert chamber.runs.current is not None
    chamber.cell(T0 + 10, 600.0)
    assert chamber.runs.current is None
    stop = chamber.markers()[-1][2]
    assert stop["exit_status"] == "abort" and "max_duration" in stop["reason"]
    chamber.cell(T0 + 11, 600.0)  # still true: disarmed until it has been seen false
    assert chamber.runs.current is None and chamber.trigger.status()["armed"] is False
    chamber.cell(T0 + 12, 450.0)
    chamber.cell(T0 + 13, 600.0)
    assert chamber.runs.current is not None and chamber.trigger.started == 2


def test_max_duration_closes_the_run_without_readings_on_the_timer(make: Any) -> None:
    chamber = make(max_duration=10.0)
    chamber.cell(T0, 600.0)
    chamber.trigger.tick(T0 + 5)
    assert chamber.runs.current is not None
    chamber.trigger.tick(T0 + 10.5)  # the instrument went silent
    assert chamber.runs.current is None and chamber.markers()[-1][2]["exit_status"] == "abort"


def test_a_resumed_automatic_run_counts_max_duration_from_its_real_start(tmp_path: Path) -> None:
    now = [T0]
    chamber = Chamber(tmp_path, clock=lambda: now[0], max_duration=10.0)
    try:
        chamber.cell(T0, 600.0)
        run = chamber.runs.current
        assert run is not None and run["started_at"] == T0
        chamber.cell(T0 + 4, 600.0)
        now[0] = T0 + 6
        chamber.restart()  # down 2 s: the run resumes, and the new trigger adopts it
        assert chamber.runs.current is not None and chamber.runs.current["run_id"] == run["run_id"]
        chamber.cell(T0 + 9, 600.0)
        assert chamber.runs.current is not None
        chamber.cell(T0 + 10, 600.0)  # 10 s after it really opened, not after the restart
        assert chamber.runs.current is None
        assert [kind for _, kind, _ in chamber.markers()] == ["run_start", "run_resume", "run_stop"]
        assert chamber.markers()[-1][2]["exit_status"] == "abort"
    finally:
        chamber.close()


def test_pre_roll_from_is_the_first_reading_of_the_pre_roll_before_the_condition_first_held(make: Any) -> None:
    chamber = make(true_for=2.0, pre_roll=3.0)
    seqs = {}
    for k in range(6):  # idle: cell at 0..5, pyrometer in between
        seqs[("cell", k)] = chamber.cell(T0 + k, 300.0)
        seqs[("pyro", k)] = chamber.poll("pyrometer", T0 + k + 0.5, temperature=200.0)[0]
    chamber.cell(T0 + 6, 600.0)  # first held at T0 + 6: the pre-roll begins at T0 + 3
    chamber.poll("pyrometer", T0 + 6.5, temperature=200.0)
    chamber.cell(T0 + 7, 600.0)
    chamber.cell(T0 + 8, 600.0)
    ((_, _, start),) = chamber.markers()
    assert start["pre_roll_from"] == seqs[("cell", 3)]


def test_a_manual_run_blocks_an_automatic_start_and_stop_run_closes_an_automatic_one(make: Any) -> None:
    chamber = make()
    assert chamber.runs.start({"stream_name": "by hand"})[0]
    chamber.cell(T0, 600.0)
    chamber.cell(T0 + 1, 300.0)  # stop_when does not close a manual run either
    assert chamber.runs.current is not None and chamber.runs.current["trigger"] == "manual"
    assert chamber.runs.stop({})[0]
    chamber.cell(T0 + 2, 600.0)
    assert chamber.runs.current is None  # after any run, the condition must be seen false first
    chamber.cell(T0 + 3, 450.0)
    chamber.cell(T0 + 4, 600.0)
    assert chamber.runs.current is not None and chamber.runs.current["trigger"] == "auto"
    assert chamber.runs.stop({})[0]  # the operator closes the automatic run while the condition holds
    chamber.cell(T0 + 5, 600.0)
    assert chamber.runs.current is None  # disarmed: it does not open again until the condition drops
    chamber.cell(T0 + 6, 450.0)
    chamber.cell(T0 + 7, 600.0)
    assert chamber.runs.current is not None


def test_auto_off_starts_and_stops_nothing(make: Any) -> None:
    chamber = make()
    chamber.runs.set_auto(False)
    chamber.cell(T0, 600.0)
    assert chamber.runs.current is None
    chamber.runs.set_auto(True)
    chamber.cell(T0 + 1, 600.0)
    assert chamber.runs.current is not None
    chamber.runs.set_auto(False)
    chamber.cell(T0 + 2, 100.0)
    assert chamber.runs.current is not None


def test_an_evaluation_error_is_unknown(make: Any) -> None:
    chamber = make(start_when="int(cell_ga.pv) / int(pyrometer.temperature) > 1")
    chamber.poll("pyrometer", T0, temperature=0.5)  # int(0.5) == 0: a division by zero
    chamber.cell(T0, 600.0)
    status = chamber.trigger.status()
    assert status["start"] == "unknown" and "division by zero" in status["error"]
    assert chamber.runs.current is None and chamber.trigger.start_when.errors == 1


def test_the_service_converts_each_poll_to_bridge_units_before_the_trigger_judges_it(tmp_path: Path) -> None:
    """A threshold in mbar holds whatever unit the controller is set to: 1.0 Torr is 1.33 mbar, above 1.2."""
    raw = {"site": "chamber-a", "bridge": {
        "state_dir": str(tmp_path), "units": {"pressure": "mbar"},
        "instruments": [{"name": "gauge", "driver": "pfeiffer_tpg", "interval": 1.0,
                         "transport": {"kind": "serial", "port": "/dev/null"}}],
        "runs": {"auto": {"start_when": "gauge.pressure_1 > 1.2"}}}}
    config_ = parse_config(raw)
    assert config_.bridge.runs.auto is not None
    service = BridgeService(config_)
    try:
        service.triggers = AutoRuns(config_.bridge.runs.auto, "chamber-a", config_.bridge.instruments, service.runs)
        service._store([Reading("gauge", "pressure_1", 1.0, Quality.OK, T0, "Torr")])
        service.outbox.flush()
        logged = [(e.kind, e.body) for e in service.outbox.pending(0, 100)]
        assert (logged[0][1]["u"], logged[0][1]["v"]) == ("mbar", pytest.approx(1.33322368))
        start = next(body for kind, body in logged if kind == "run_start")
        assert start["why"]["values"] == {"gauge.pressure_1": pytest.approx(1.33322368)}
    finally:
        service.outbox.close()


def test_an_instrument_read_only_with_the_baselines_is_never_fresh_for_an_expression(make: Any) -> None:
    """Config loading refuses such an expression (tests/config/test_auto_runs.py); were one built all the
    same, its channels would be unknown, never judged on a reading from a run's start or stop."""
    chamber = make()
    instruments = [inst.model_copy(update={"interval": "baseline"}) if inst.name == "cell_ga" else inst
                   for inst in chamber.config.bridge.instruments]
    trigger = AutoRuns(chamber.auto, "chamber-a", instruments, chamber.runs)
    trigger.observe([Reading("cell_ga", "pv", 600.0, Quality.OK, T0, "degC")], [1])
    assert trigger.status()["unknown"] == {"cell_ga.pv": "not polled (interval: baseline)"}
    assert chamber.runs.current is None

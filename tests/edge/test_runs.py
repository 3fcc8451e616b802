"""Runs on a real outbox: resume or abort at restart, manual and automatic starts, events, auto on|off, next-run.

Each test opens the outbox, acts, closes it and opens it again where a restart matters, so what
is checked is what a restarted bridge finds on disk. The clock the runs read is passed in, so
"down for 3 s" and "down past resume_within" need no sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.edge.outbox import Outbox
from bridge.edge.runs import Runs
from bridge.model import Quality, Reading
from bridge.wire import contract

T0 = 1_790_000_000.0
WHY = {"expression": "cell_ga.pv > 500.0", "values": {"cell_ga.pv": 512.5}}


def reading(t: float) -> dict[str, Any]:
    return contract.reading_body(Reading("cell_ga", "pv", 512.5, Quality.OK, t, "°C"))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entries(path: Path) -> list[contract.LogEntry]:
    with Outbox(path) as box:
        return box.pending(0, 100_000)


def bridge(path: Path, clock: Clock, **options: Any) -> tuple[Outbox, Runs]:
    box = Outbox(path)
    return box, Runs(box, clock=clock, **options)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


def crash_with_a_run_open(path: Path, clock: Clock, readings: int = 5) -> str:
    """A bridge opens a run, logs readings until ``clock.now``, and stops without closing it."""
    box, runs = bridge(path, clock)
    ok, _, _ = runs.start({"stream_name": "GaAs-042"})
    assert ok
    run = runs.current
    assert run is not None
    for n in range(readings):
        box.append("reading", reading(clock.now - readings + n + 1), clock.now - readings + n + 1)
    box.close()
    return str(run["run_id"])


# ---------------------------------------------------------------- resume across restarts


def test_a_restart_within_resume_within_logs_a_resume_marker_and_the_run_goes_on(path: Path) -> None:
    clock = Clock()
    run_id = crash_with_a_run_open(path, clock)
    last_logged = clock.now
    clock.now += 3.0
    box, runs = bridge(path, clock, resume_within=900)
    ok, message, seq = runs.recover() or (False, "", None)
    assert ok and "resumed after 3.0 s down" in message
    assert runs.current is not None and runs.current["run_id"] == run_id
    assert runs.stop({"exit_status": "success"})[0]
    box.close()
    kinds = [(e.kind, e.body.get("exit_status")) for e in entries(path) if e.kind != "reading"]
    assert kinds == [("run_start", None), ("run_resume", None), ("run_stop", "success")]
    resume = next(e for e in entries(path) if e.kind == "run_resume")
    assert resume.seq == seq
    assert resume.body == {"run_id": run_id, "down_from": last_logged, "down_to": last_logged + 3.0}
    assert contract.run_resume_body(resume.body) == resume.body


def test_a_restart_later_than_resume_within_closes_the_run_as_abort_at_its_last_entry(path: Path) -> None:
    clock = Clock()
    run_id = crash_with_a_run_open(path, clock)
    clock.now += 30.0
    box, runs = bridge(path, clock, resume_within=10)
    last = box.last_seq
    ok, message, _ = runs.recover() or (False, "", None)
    box.close()
    assert ok and "closed as abort" in message and "30 s after its last entry" in message
    stop = entries(path)[-1]
    assert stop.kind == "run_stop"
    assert stop.body["run_id"] == run_id and stop.body["exit_status"] == "abort" and stop.body["last_seq"] == last
    assert "bridge.runs.resume_within (10 s)" in stop.body["reason"]


def test_resume_within_0_never_resumes(path: Path) -> None:
    clock = Clock()
    crash_with_a_run_open(path, clock)
    box, runs = bridge(path, clock, resume_within=0)
    runs.recover()
    box.close()
    assert entries(path)[-1].body["exit_status"] == "abort"


def test_the_last_entry_time_survives_a_trim_of_every_entry(path: Path) -> None:
    """The uploader may have acknowledged everything before the crash: the time is kept beside last_seq."""
    clock = Clock()
    crash_with_a_run_open(path, clock)
    with Outbox(path) as box:
        box.acknowledge(box.epoch, box.last_seq or 0)
        assert box.pending(0, 10) == []
    clock.now += 5.0
    box, runs = bridge(path, clock, resume_within=900)
    assert box.last_entry_time == T0
    assert runs.recover() is not None
    box.close()
    assert entries(path)[-1].body["down_from"] == T0


def test_a_bridge_without_an_open_run_recovers_nothing(path: Path) -> None:
    box, runs = bridge(path, Clock())
    assert runs.recover() is None
    box.close()
    assert entries(path) == []


# ---------------------------------------------------------------- manual and automatic


def test_an_open_manual_run_blocks_an_automatic_start_and_stop_run_closes_an_automatic_one(path: Path) -> None:
    box, runs = bridge(path, Clock(), auto_configured=True)
    assert runs.start({"stream_name": "by-hand"})[0]
    ok, message, seq = runs.start({"stream_name": "auto"}, trigger="auto", why=WHY)
    assert not ok and seq is None and "(by-hand, manual) is still open" in message
    ok, message, _ = runs.stop({}, why=WHY, if_trigger="auto")
    assert not ok and "opened manual, not auto: left open" in message
    assert runs.stop({"exit_status": "success"})[0]
    ok, _, _ = runs.start({"stream_name": "auto"}, trigger="auto", why=WHY)
    assert ok and runs.current is not None and runs.current["trigger"] == "auto"
    ok, _, _ = runs.stop({"exit_status": "success", "reason": "operator"})  # stop-run: whatever is open
    assert ok
    box.close()
    starts = [e.body for e in entries(path) if e.kind == "run_start"]
    assert [(s["stream_name"], s["trigger"], s.get("why")) for s in starts] == [
        ("by-hand", "manual", None), ("auto", "auto", WHY)]


def test_an_automatic_start_and_stop_carry_why_and_pre_roll(path: Path) -> None:
    box, runs = bridge(path, Clock(), auto_configured=True)
    first = box.append("reading", reading(T0), T0)
    box.append("reading", reading(T0 + 1), T0 + 1)
    ok, _, seq = runs.start({"stream_name": "auto"}, trigger="auto", why=WHY, pre_roll_from=first)
    assert ok and seq == 3
    stop_why = {"expression": "cell_ga.pv < 400.0", "values": {"cell_ga.pv": 390.0}}
    assert runs.stop({}, why=stop_why, if_trigger="auto")[0]
    box.close()
    start, stop = (e for e in entries(path) if e.kind != "reading")
    assert start.body["pre_roll_from"] == 1 and start.body["why"] == WHY
    assert stop.body["why"] == stop_why
    assert contract.run_start_body(start.body, seq=start.seq) == start.body


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"why": {"expression": "x", "values": {"no_dot": 1.0}}}, "is not instrument.channel"),
    ({"why": {"expression": "x" * 1001}}, "at most 1000"),
    ({"why": {"expression": "a.b > 1", "values": {"a.b": float("nan")}}}, "finite number"),
    ({"pre_roll_from": 99}, "is not a seq logged before the start"),
])
def test_a_bad_why_or_pre_roll_is_refused_and_logs_nothing(path: Path, kwargs: dict[str, Any], message: str) -> None:
    box, runs = bridge(path, Clock(), auto_configured=True)
    ok, reason, seq = runs.start({"stream_name": "auto"}, trigger="auto", **kwargs)
    box.close()
    assert not ok and seq is None and message in reason
    assert entries(path) == []


# ---------------------------------------------------------------- events


def test_annotations_are_events_in_the_log_with_the_open_runs_id(path: Path) -> None:
    box, runs = bridge(path, Clock())
    ok, message, before = runs.annotate("bake-out done", ["bake"])
    assert ok and message == "event logged (no run open)"
    runs.start({"stream_name": "GaAs-042"})
    run_id = runs.current["run_id"] if runs.current else None
    ok, message, inside = runs.annotate("Ga shutter open", ["shutter"], source="cli")
    assert ok and message == f"event logged in run {run_id}"
    ok, reason, _ = runs.annotate("line\nforged", [])
    assert not ok and "control characters" in reason
    box.close()
    events = [(e.seq, e.body) for e in entries(path) if e.kind == "event"]
    assert events == [
        (before, {"text": "bake-out done", "tags": ["bake"], "source": "cli", "run_id": None}),
        (inside, {"text": "Ga shutter open", "tags": ["shutter"], "source": "cli", "run_id": run_id})]


def test_events_and_markers_are_accepted_by_a_full_outbox(path: Path) -> None:
    box = Outbox(path, max_entries=3)
    runs = Runs(box, clock=Clock())
    for n in range(5):
        box.append("reading", reading(T0 + n), T0 + n)
    assert box.overflow.refused == 2
    assert runs.annotate("still heard")[0]
    box.close()


# ---------------------------------------------------------------- auto on|off, next-run


def test_auto_is_on_by_default_when_configured_and_the_switch_survives_a_restart(path: Path) -> None:
    box, runs = bridge(path, Clock(), auto_configured=True)
    assert runs.auto_enabled and runs.state()["auto"] is True
    ok, message, seq = runs.set_auto(False)
    assert ok and message == "automatic runs switched off" and seq is not None
    assert runs.set_auto(False) == (True, "automatic runs are already off", None)
    box.close()
    box, runs = bridge(path, Clock(), auto_configured=True)
    assert not runs.auto_enabled
    box.close()
    [event] = [e.body for e in entries(path) if e.kind == "event"]
    assert event["text"] == "automatic runs switched off" and event["tags"] == ["auto"]


def test_an_automatic_start_is_refused_while_automatic_runs_are_off(path: Path) -> None:
    box, runs = bridge(path, Clock(), auto_configured=True)
    runs.set_auto(False)
    ok, message, _ = runs.start({"stream_name": "auto"}, trigger="auto", why=WHY)
    assert not ok and message == "automatic runs are switched off (chamber-bridge auto on)"
    assert runs.start({"stream_name": "by-hand"})[0]  # a manual start is not affected
    box.close()
    box, runs = bridge(path, Clock())
    runs.stop({})
    ok, message, _ = runs.start({"stream_name": "auto"}, trigger="auto")
    assert not ok and message == "automatic runs are not configured (bridge.runs.auto)"
    box.close()


def test_auto_cannot_be_switched_without_a_configured_trigger(path: Path) -> None:
    box, runs = bridge(path, Clock())
    ok, message, _ = runs.set_auto(True)
    box.close()
    assert not ok and "bridge.runs.auto" in message
    assert not runs.auto_configured


def test_next_run_metadata_is_used_once_by_the_next_start_of_either_trigger(path: Path) -> None:
    changes: list[str] = []
    box, runs = bridge(path, Clock(), auto_configured=True)
    runs.on_change.append(lambda: changes.append("changed"))
    ok, message, seq = runs.set_next_run({"physical_sample": "S-17", "tags": ["GaAs"], "stream_name": "GaAs-043"})
    assert ok and seq is None and "stream_name GaAs-043" in message
    box.close()
    box, runs = bridge(path, Clock(), auto_configured=True)  # kept across a restart
    assert runs.state()["next_run"] == {"stream_name": "GaAs-043", "physical_sample": "S-17", "tags": ["GaAs"]}
    # an automatic start: next-run's metadata wins over the name template's
    assert runs.start({"stream_name": "chamber-a-20261207-1000", "tags": ["auto"]}, trigger="auto")[0]
    assert runs.next_run is None
    runs.stop({})
    assert runs.set_next_run({"physical_sample": "S-18", "stream_name": "from-next-run"})[0]
    # a manual start: the command's own values win, next-run fills what it leaves out
    assert runs.start({"stream_name": "by-hand", "tags": ["manual"]})[0]
    runs.stop({})
    assert runs.start({"stream_name": "plain"})[0]
    box.close()
    starts = [e.body for e in entries(path) if e.kind == "run_start"]
    assert [(s["stream_name"], s["physical_sample"], s["tags"]) for s in starts] == [
        ("GaAs-043", "S-17", ["GaAs"]), ("by-hand", "S-18", ["manual"]), ("plain", None, [])]
    assert changes  # the run topic is republished


def test_next_run_with_nothing_clears_it(path: Path) -> None:
    box, runs = bridge(path, Clock())
    runs.set_next_run({"physical_sample": "S-1"})
    assert runs.set_next_run({}) == (True, "next-run metadata cleared", None)
    assert runs.next_run is None
    box.close()


def test_commands_reach_each_action(path: Path) -> None:
    box, runs = bridge(path, Clock(), auto_configured=True)

    def command(action: str, **params: Any) -> tuple[bool, str, int | None]:
        data = contract.encode_command("r", action, params)  # type: ignore[arg-type]
        return runs.handle(contract.decode_command(data))

    assert command("next_run", physical_sample="S-2")[0]
    assert command("start_run", stream_name="x")[0]
    assert command("annotate", text="shutter open", tags=["shutter"])[0]
    assert command("auto", enabled=False)[0]
    assert command("stop_run", exit_status="fail")[0]
    box.close()
    assert [e.kind for e in entries(path)] == ["run_start", "event", "event", "run_stop"]


def test_state_hooks_add_to_the_run_topic(path: Path) -> None:
    box, runs = bridge(path, Clock(), auto_configured=True)
    hook: Callable[[], dict[str, Any]] = lambda: {"auto_state": {"start": "unknown"}}  # noqa: E731
    runs.add_state_hook(hook)
    assert runs.state() == {"run": None, "auto": True, "next_run": None, "auto_state": {"start": "unknown"}}
    box.close()

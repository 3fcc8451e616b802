"""Growth runs: markers and events written into the ordered log (docs/design.md section 4, docs/runs.md).

A marker is an outbox entry like any reading, so it has a seq and the uploader knows exactly
which readings belong to the run. The open run is persisted with its marker in one
transaction. A bridge that died with a run open (a crash, a power cut, an upgrade) looks at
the time of the last entry it logged when it starts again: within ``bridge.runs.resume_within``
seconds the run goes on, and a ``run_resume`` marker tells the uploader the interval the bridge
was down (a gap of the report, not missing readings); past it the run is closed as ``abort``,
so no stream is left open forever.

Annotations (``chamber-bridge annotate``, and the triggers' own notes) are ``event`` entries
of the same log, so they reach the uploader exactly once and in order with the readings.

Runs open by hand (``start-run``) or by the automatic trigger (``trigger="auto"``); either way
one run at most is open, so an open manual run blocks an automatic start, and ``stop-run``
closes whichever is open. Whether automatic runs are switched on (``auto on|off``) and the
metadata ``next-run`` set for the next run are kept in the outbox beside the open run, so they
survive restarts.

Each run holds its instruments' identity and configuration twice (``baseline`` entries,
docs/payload.md): read right after its start marker and right before its stop marker, for manual
and automatic runs alike, through :class:`BaselineSource` (:class:`bridge.edge.baseline.Baselines`).
The buses read them on their own threads, so the start's is logged when they have answered, and
a stop's marker follows its snapshot: a command (``stop-run``) waits for it, a few seconds at
most; any other caller, the automatic trigger above all (it runs on a bus thread, or holds a lock
the bus threads need), is answered at once and the marker follows. While that stop is pending
the run counts as closed (:attr:`Runs.current` is None): nothing else stops it again, and a start
is refused until its marker is logged.

Run ids are the bridge's alone (:func:`bridge.names.new_run_id`): a run id becomes a folder of
the store and an id at the API, so one taken from a command (``../../../x``) could write
anywhere. Commands carry names and metadata only, checked by the wire contract
(:func:`bridge.wire.contract.command_params`) before they get here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from bridge.config import RESUME_WITHIN
from bridge.edge.outbox import Outbox
from bridge.names import new_run_id, printable
from bridge.wire import contract

log = logging.getLogger("bridge.edge.runs")

#: what every request answers: whether it was done, one line for the operator, the seq it logged (if any)
Outcome = tuple[bool, str, int | None]
#: the metadata keys ``next-run`` may set, in the order they are shown
NEXT_RUN_KEYS = ("stream_name", "physical_sample", "synth_source_id", "project_id", "tags")
#: seconds a stop waits for its marker beyond the baseline's own timeout
STOP_MARGIN = 2.0


class BaselineSource(Protocol):
    """What runs need of :class:`bridge.edge.baseline.Baselines`."""

    timeout: float

    def collect(self, when: str, done: Callable[[dict[str, Any]], None]) -> None: ...

    def on_a_bus_thread(self) -> bool: ...


class Runs:
    """The bridge's run state: the open run, automatic runs on or off, the next run's metadata.

    ``resume_within``: seconds (``bridge.runs.resume_within``); ``auto_configured``: whether
    ``bridge.runs.auto`` exists (automatic runs are on by default then); ``clock``: wall-clock
    seconds, the clock entries are stamped with.
    """

    def __init__(self, outbox: Outbox, *, resume_within: float = RESUME_WITHIN, auto_configured: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.resume_within = resume_within
        self.auto_configured = auto_configured
        self._clock = clock
        self._lock = threading.RLock()
        self._state_hooks: list[Callable[[], Mapping[str, Any]]] = []
        #: called after every change of the run state (the publisher republishes the run topic)
        self.on_change: list[Callable[[], None]] = []
        #: reads the instruments' baselines at each start and stop; None: runs without them (tests)
        self.baselines: BaselineSource | None = None
        #: the run whose stop waits for its baseline
        self._stopping: str | None = None

    # ------------------------------------------------------------ state

    @property
    def current(self) -> dict[str, Any] | None:
        """The open run's ``run_start`` body (with its ``trigger``) and ``started_at`` (Unix s), or None;
        None too while its stop waits for the stop baseline (it is closing: nothing may stop it again)."""
        run = self.outbox.open_run
        if run is not None:
            if self._stopping is not None and run.get("run_id") == self._stopping:
                return None
            run.setdefault("trigger", "manual")  # a run opened by a bridge before automatic runs
        return run

    @property
    def stopping(self) -> bool:
        """Whether a run's stop waits for its stop baseline: no run can start until its marker is logged."""
        return self._stopping is not None

    @property
    def auto_enabled(self) -> bool:
        """Whether automatic runs may open and close runs: configured, and not switched off by ``auto off``."""
        stored = self.outbox.state("auto")
        return self.auto_configured and (True if stored is None else bool(stored))

    @property
    def next_run(self) -> dict[str, Any] | None:
        """The metadata ``next-run`` set for the next run, or None."""
        value: dict[str, Any] | None = self.outbox.state("next_run")
        return value

    def add_state_hook(self, hook: Callable[[], Mapping[str, Any]]) -> None:
        """``hook()``'s keys are added to the retained run topic (the automatic trigger's ``auto_state``)."""
        self._state_hooks.append(hook)

    def state(self) -> dict[str, Any]:
        """The retained run topic's body (docs/payload.md, "Run state"), without ``v`` and ``site``."""
        state: dict[str, Any] = {"run": self.current, "auto": self.auto_enabled, "next_run": self.next_run}
        for hook in self._state_hooks:
            state.update(hook())
        return state

    def changed(self) -> None:
        """The run topic's content changed (here, or in a state hook's value): tell :attr:`on_change`."""
        for callback in self.on_change:
            callback()

    # ------------------------------------------------------------ restart

    def recover(self) -> Outcome | None:
        """At start: go on with a run a crash or restart left open, or close it (docs/runs.md, resume).

        The bridge was down from its last logged entry until now. Within ``resume_within`` a
        ``run_resume`` marker records that interval and the run goes on; otherwise the run is
        closed as ``abort``, its last seq the last entry logged before the restart. None when
        no run was open.
        """
        with self._lock:
            run = self.current
            if run is None:
                return None
            run_id = printable(run.get("run_id"), 80)
            last = self.outbox.last_entry_time
            now = self._clock()
            down = None if last is None else now - last
            if down is not None and last is not None and self.resume_within > 0 and down <= self.resume_within:
                seq = self.outbox.append_marker("run_resume", {"run_id": run.get("run_id"), "down_from": last,
                                                               "down_to": now}, time=now)
                log.warning("run %s resumed: the bridge was down for %.1f s (within bridge.runs.resume_within, "
                            "%g s); seq %d", run_id, down, self.resume_within, seq)
                message = f"run {run_id} resumed after {down:.1f} s down"
            else:
                if self.resume_within <= 0:
                    reason = "the bridge restarted while the run was open (bridge.runs.resume_within is 0)"
                elif down is None:
                    reason = "the bridge restarted while the run was open"
                else:
                    reason = (f"the bridge restarted {down:.0f} s after its last entry, later than "
                              f"bridge.runs.resume_within ({self.resume_within:g} s)")
                seq = self._stop(contract.StopRun("abort", reason))
                log.warning("run %s was left open by a crash, restart or power cut: closed as abort (%s); seq %s",
                            run_id, reason, seq)
                message = f"run {run_id} closed as abort: {reason}"
        self.changed()
        return True, message, seq

    # ------------------------------------------------------------ runs

    def start(self, params: contract.StartRun | Mapping[str, Any], *, trigger: str = "manual",
              why: Mapping[str, Any] | None = None, pre_roll_from: int | None = None) -> Outcome:
        """Open a run under a fresh run id; a mapping is checked as a command's params first.

        Refused while any run is open (a manual run blocks an automatic start), and an automatic
        start while automatic runs are switched off or not configured. The metadata of
        ``next-run`` is used and forgotten: for a manual start the command's own values win, for
        an automatic one ``next-run``'s win over the name template's. ``why`` (the expression
        and the values that opened it) and ``pre_roll_from`` (the first seq of the run, before
        the marker) come from the automatic trigger.
        """
        contract.check_trigger(trigger)
        try:
            start = params if isinstance(params, contract.StartRun) else contract.command_params("start_run", params)
        except contract.CommandError as exc:
            return False, exc.reason, None
        assert isinstance(start, contract.StartRun)
        with self._lock:
            if trigger == "auto" and not self.auto_enabled:
                return False, ("automatic runs are switched off (chamber-bridge auto on)" if self.auto_configured
                               else "automatic runs are not configured (bridge.runs.auto)"), None
            if self._stopping is not None:
                return False, (f"run {printable(self._stopping, 80)} is stopping (its baseline is being read); "
                               f"start again in a moment"), None
            current = self.current
            if current is not None:
                return False, (f"run {printable(current.get('run_id'), 80)} "
                               f"({printable(current.get('stream_name'), 80)}, {current.get('trigger')}) "
                               f"is still open"), None
            if pre_roll_from is not None and not 1 <= pre_roll_from <= self.outbox.handed_out:
                return False, (f"pre_roll_from {pre_roll_from} is not a seq logged before the start "
                               f"(1..{self.outbox.handed_out})"), None
            pending = self.next_run
            metadata = _merged(contract.params_map(start), pending or {}, pending_wins=trigger == "auto")
            run_id = new_run_id()
            body: dict[str, Any] = {**metadata, "run_id": run_id, "trigger": trigger}
            if why is not None:
                body["why"] = why
            if pre_roll_from is not None:
                body["pre_roll_from"] = pre_roll_from
            try:
                body = contract.run_start_body(body)
            except ValueError as exc:
                return False, str(exc), None
            # the open run remembers when it started, so a resumed automatic run's max_duration
            # counts from its real start, not from the restart (bridge/edge/triggers.py)
            seq = self.outbox.append_marker("run_start", body, open_run={**body, "started_at": self._clock()},
                                            state={"next_run": None} if pending is not None else None)
            if self.baselines is not None:  # asked under the lock: a stop cannot ask before it
                self.baselines.collect("start", lambda instruments: self._log_start_baseline(run_id, instruments))
        log.info("run %s (%s, %s) started at seq %d", run_id, printable(body["stream_name"]), trigger, seq)
        self.changed()
        return True, f"run {run_id} started", seq

    def stop(self, params: contract.StopRun | Mapping[str, Any], *, why: Mapping[str, Any] | None = None,
             if_trigger: str | None = None, wait: bool = False) -> Outcome:
        """Close the open run, whatever opened it; a mapping is checked as a command's params first.

        ``if_trigger`` closes it only if it was opened that way: an automatic stop condition
        must never close a run an operator started by hand.

        With baselines, the stop marker follows the stop baseline, read by the buses. ``wait``
        (a command: ``stop-run`` waits for its answer) waits for it, up to the baseline's timeout,
        unless the caller is a bus thread; otherwise the stop is answered at once and its marker
        follows (the automatic trigger may hold a lock the bus threads need for their readings).
        """
        try:
            stop = params if isinstance(params, contract.StopRun) else contract.command_params("stop_run", params)
        except contract.CommandError as exc:
            return False, exc.reason, None
        assert isinstance(stop, contract.StopRun)
        if why is not None:
            try:
                why = contract.why_body(why)
            except ValueError as exc:
                return False, str(exc), None
        with self._lock:
            current = self.current
            if current is None:
                return False, "no run is open", None
            run_id = printable(current.get("run_id"), 80)
            if if_trigger is not None and current.get("trigger") != if_trigger:
                return False, f"run {run_id} was opened {current.get('trigger')}, not {if_trigger}: left open", None
            baselines = self.baselines
            if baselines is None:
                seq = self._stop(stop, why)
            else:
                stopped = _Stopped()
                self._stopping = current.get("run_id")
                baselines.collect("stop", lambda instruments: self._stop_after_baseline(stop, why, instruments,
                                                                                         stopped))
        if baselines is None:
            log.info("run %s stopped (%s) at seq %d", run_id, stop.exit_status, seq)
            self.changed()
            return True, f"run {run_id} stopped ({stop.exit_status})", seq
        if not stopped.done.is_set() and (not wait or baselines.on_a_bus_thread()):
            return True, f"run {run_id} stopping ({stop.exit_status}): its stop marker follows its baseline", None
        if not stopped.done.wait(baselines.timeout + STOP_MARGIN):
            return False, f"run {run_id} is stopping, but its stop marker was not logged within " \
                          f"{baselines.timeout + STOP_MARGIN:g} s", None
        if stopped.error is not None:
            return False, f"run {run_id} could not be stopped: {stopped.error}", None
        return True, f"run {run_id} stopped ({stop.exit_status})", stopped.seq

    def _log_start_baseline(self, run_id: str, instruments: dict[str, Any]) -> None:
        """The snapshot read after ``run_id``'s start marker: logged if the run is still open."""
        with self._lock:
            run = self.outbox.open_run
            if run is None or run.get("run_id") != run_id:
                log.warning("run %s closed before its start baseline was read; that baseline is not logged",
                            printable(run_id, 80))
                return
            seq = self.outbox.append_marker("baseline", contract.baseline_body(
                {"when": "start", "run_id": run_id, "instruments": instruments}))
        log.info("run %s: baseline of %d instruments logged at seq %d", run_id, len(instruments), seq)

    def _stop_after_baseline(self, stop: contract.StopRun, why: Mapping[str, Any] | None,
                             instruments: dict[str, Any], stopped: _Stopped) -> None:
        """The stop baseline is read: log it, then the stop marker right after it."""
        run_id = printable(self._stopping, 80)
        try:
            with self._lock:
                try:
                    self.outbox.append_marker("baseline", contract.baseline_body(
                        {"when": "stop", "run_id": self._stopping, "instruments": instruments}))
                    stopped.seq = self._stop(stop, why)
                finally:
                    self._stopping = None
        except Exception as exc:  # the run stays open; the requester is told
            stopped.error = str(exc)
            log.exception("run %s: the stop could not be logged", run_id)
        else:
            log.info("run %s stopped (%s) at seq %d, after its baseline", run_id, stop.exit_status, stopped.seq)
        stopped.done.set()
        self.changed()

    def _stop(self, stop: contract.StopRun, why: Mapping[str, Any] | None = None) -> int:
        run = self.outbox.open_run or {}  # not self.current: None while this very stop is pending
        last = self.outbox.flush()
        body: dict[str, Any] = {"run_id": run.get("run_id"), "exit_status": stop.exit_status, "last_seq": last,
                                **({"reason": stop.reason} if stop.reason else {})}
        if why is not None:
            body["why"] = dict(why)
        return self.outbox.append_marker("run_stop", body, open_run=None)

    # ------------------------------------------------------------ events, auto, next run

    def annotate(self, text: str, tags: Sequence[str] = (), source: str = "cli") -> Outcome:
        """Log an event (an annotation) in the ordered log, with the open run's id if one is open."""
        with self._lock:
            run = self.current
            run_id = None if run is None else run.get("run_id")
            try:
                body = contract.event_body({"text": text, "tags": list(tags), "source": source, "run_id": run_id})
            except ValueError as exc:
                return False, str(exc), None
            seq = self.outbox.append_marker("event", body)
        where = f"in run {run_id}" if run_id else "(no run open)"
        log.info("event from %s at seq %d %s: %s", source, seq, where, printable(text, 200))
        return True, f"event logged {where}", seq

    def set_auto(self, enabled: bool) -> Outcome:
        """Switch automatic runs on or off (``chamber-bridge auto on|off``); kept across restarts.

        The switch is logged as an event, so the history shows who turned the triggers off and
        when. A run that is open stays open either way: ``stop-run`` closes it.
        """
        word = "on" if enabled else "off"
        with self._lock:
            if not self.auto_configured:
                return False, "automatic runs are not configured (bridge.runs.auto)", None
            if self.auto_enabled == enabled:
                return True, f"automatic runs are already {word}", None
            run = self.current
            body = contract.event_body({"text": f"automatic runs switched {word}", "tags": ["auto"],
                                        "source": "cli", "run_id": None if run is None else run.get("run_id")})
            seq = self.outbox.append_marker("event", body, state={"auto": enabled})
        log.info("automatic runs switched %s (seq %d)", word, seq)
        self.changed()
        return True, f"automatic runs switched {word}", seq

    def set_next_run(self, params: contract.NextRun | Mapping[str, Any]) -> Outcome:
        """Keep metadata for the next run, manual or automatic (``next-run``); empty params forget it."""
        try:
            pending = params if isinstance(params, contract.NextRun) else contract.command_params("next_run", params)
        except contract.CommandError as exc:
            return False, exc.reason, None
        assert isinstance(pending, contract.NextRun)
        value = {key: v for key, v in contract.params_map(pending).items() if v not in (None, [])} or None
        with self._lock:
            self.outbox.set_state(next_run=value)
        self.changed()
        if value is None:
            log.info("next-run metadata cleared")
            return True, "next-run metadata cleared", None
        shown = ", ".join(f"{key} {printable(_text(value[key]), 200)}" for key in NEXT_RUN_KEYS if key in value)
        log.info("next-run metadata set: %s", shown)
        return True, f"the next run will have {shown}", None

    def handle(self, command: contract.Command) -> Outcome:
        """A command from the broker, its params already checked by :func:`contract.decode_command`."""
        params = command.params
        if isinstance(params, contract.StartRun):
            return self.start(params)
        if isinstance(params, contract.StopRun):
            return self.stop(params, wait=True)
        if isinstance(params, contract.Annotate):
            return self.annotate(params.text, params.tags, "cli")
        if isinstance(params, contract.SetAuto):
            return self.set_auto(params.enabled)
        return self.set_next_run(params)


class _Stopped:
    """A stop waiting for its baseline: set once its marker is logged (or failed)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.seq: int | None = None
        self.error: str | None = None


def _text(value: object) -> str:
    """A metadata value as an operator reads it: tags joined with commas."""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _merged(given: Mapping[str, Any], pending: Mapping[str, Any], *, pending_wins: bool) -> dict[str, Any]:
    """The run's metadata from its start's params and ``next-run``'s: for each key, the winner's
    value where it has one (not None, not an empty tag list), else the other's."""
    first, second = (pending, given) if pending_wins else (given, pending)
    merged = dict(given)
    for key in NEXT_RUN_KEYS:
        value = first.get(key)
        merged[key] = value if value not in (None, []) else second.get(key, merged.get(key))
    merged["tags"] = list(merged.get("tags") or [])
    return merged

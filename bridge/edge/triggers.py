"""Automatic runs: a run opens when ``start_when`` has held for ``true_for`` and closes when ``stop_when`` has
held for ``false_for`` (``bridge.runs.auto``, docs/runs.md "Automatic runs").

Fed from the readings as they are logged (:meth:`AutoRuns.observe`, called by the service right
after a poll's readings got their seqs), and judged on the instruments' own timestamps: a
backlog is judged as it happened. The rules:

- **Debounce.** The start condition must be true at every evaluation for ``true_for`` seconds
  (from the first reading it was true at to the reading that finds it has held); one false
  evaluation starts the count again, so a flicker shorter than ``true_for`` opens nothing.
  The same for ``stop_when`` and ``false_for`` while an automatic run is open.
- **Unknown changes nothing.** An evaluation that is unknown (a channel stale, of bad quality,
  or an evaluation error: bridge/expressions/evaluate.py) neither starts, nor stops, nor resets
  a count; the status shows which channels made it so.
- **Manual and automatic.** Any open run blocks an automatic start; only automatic runs are
  closed by ``stop_when`` and ``max_duration`` (the latter as ``abort``). After any run closes
  the trigger is *disarmed* until the start condition has been seen false (the reading that
  closed the run counts): a run stopped by ``stop-run`` or by ``max_duration`` while the
  condition still holds does not open again at once.
- **Pre-roll.** The trigger remembers the first seq of every poll of the last ``pre_roll``
  seconds; the start marker's ``pre_roll_from`` is the first of those at or after the moment
  the condition first held minus ``pre_roll``, so the readings of the pre-roll and of the
  debounce belong to the run (the uploader puts them there, bridge/uploader/ledger.py).
- ``Runs.auto_enabled`` off (``chamber-bridge auto off``): no start and no stop by the
  condition; ``max_duration`` still closes an automatic run.
- **Baselines.** A stop waits for the instruments' stop baseline, read by the buses; the trigger
  (on a bus thread, holding its lock) never waits for it: :meth:`Runs.stop` answers at once and
  the run counts as closed while its stop marker follows. A start that comes due meanwhile
  waits too (:attr:`Runs.stopping`), its count kept, and opens at the first reading after.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from bridge.config import AutoRunsConfig, InstrumentConfig, catalog, render_name
from bridge.edge.runs import Outcome
from bridge.expressions import Expression, Latest, Result, compile_expression
from bridge.model import Reading
from bridge.names import printable
from bridge.wire import contract

log = logging.getLogger(__name__)


class RunControl(Protocol):
    """What the trigger needs of :class:`bridge.edge.runs.Runs`."""

    @property
    def current(self) -> dict[str, Any] | None: ...

    @property
    def auto_enabled(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def start(self, params: contract.StartRun | Mapping[str, Any], *, trigger: str = "manual",
              why: Mapping[str, Any] | None = None, pre_roll_from: int | None = None) -> Outcome: ...

    def stop(self, params: contract.StopRun | Mapping[str, Any], *, why: Mapping[str, Any] | None = None,
             if_trigger: str | None = None) -> Outcome: ...

    def annotate(self, text: str, tags: Sequence[str] = (), source: str = "cli") -> Outcome: ...


def _one_line(text: str) -> str:
    return " ".join(text.split())


class AutoRuns:
    """The trigger of ``bridge.runs.auto`` for one bridge. Thread-safe: every poller thread feeds it."""

    def __init__(self, config: AutoRunsConfig, site: str, instruments: Sequence[InstrumentConfig],
                 runs: RunControl, *, on_change: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.site = site
        self.runs = runs
        self.on_change = on_change
        channels = catalog(instruments)
        self.start_when: Expression = compile_expression(config.start_when, channels)
        self.stop_when: Expression = compile_expression(config.stop_when or f"!({config.start_when})", channels)
        self.latest = Latest({inst.name: inst.poll_interval for inst in instruments})
        self.watched = self.start_when.instruments | self.stop_when.instruments
        self._lock = threading.Lock()
        #: the latest instrument time seen: evaluations never go back in time
        self.now = 0.0
        self._armed = True
        self._true_since: float | None = None
        #: the first seq of the poll the start condition first held at (the run's data begins there at the latest)
        self._true_from: int | None = None
        self._false_since: float | None = None
        self._last: dict[str, Result] = {}
        #: the run open at the last look, and when an automatic one started (for max_duration)
        self._run_id: str | None = None
        self._run_started: float | None = None
        #: (poll time, first seq) of the polls logged lately: where a pre-roll begins
        self._polls: deque[tuple[float, int]] = deque()
        self.started = 0
        self.stopped = 0
        current = runs.current
        if current is not None:  # a run a restart left open and the bridge resumed
            self._adopt(current, None)

    # ------------------------------------------------------------ input

    def observe(self, readings: Sequence[Reading], seqs: Sequence[int | None]) -> None:
        """One poll of one instrument, as logged: its readings and their seqs (None: refused, not logged)."""
        if not readings:
            return
        with self._lock:
            poll = readings[0].timestamp
            first = next((seq for seq in seqs if seq is not None), None)
            if first is not None:
                self._polls.append((poll, first))
            self.now = max(self.now, poll)
            if readings[0].instrument in self.watched:
                for reading in readings:
                    self.latest.update(reading)
                self._step(self.now, first)
            self._prune()

    def tick(self, now: float) -> None:
        """A look without readings (the service's timer, on the bridge's clock): ``max_duration``, and the
        status of the conditions (a silent instrument turns them unknown). Starts and stops nothing else."""
        with self._lock:
            self._follow_run(now)
            if self._run_id is not None and self._is_auto() and self._past_max_duration(now):
                self._close_at_max_duration(now)
                return
            self._last["start"] = self.start_when.evaluate(self.latest, now)
            if self._run_id is not None:
                self._last["stop"] = self.stop_when.evaluate(self.latest, now)

    # ------------------------------------------------------------ the state machine (with _lock held)

    def _step(self, now: float, first_seq: int | None) -> None:
        self._follow_run(now)
        if self._run_id is not None:
            if self._is_auto():
                self._while_auto_run(now)
            return
        start = self._last["start"] = self.start_when.evaluate(self.latest, now)
        if not self.runs.auto_enabled:
            self._true_since = self._true_from = None
            return
        if start.value is None:
            return  # unknown changes nothing
        if start.value is False:
            self._armed = True
            self._true_since = self._true_from = None
            return
        if not self._armed:
            return
        if self._true_since is None:
            self._true_since, self._true_from = now, first_seq
            self.on_change()
        if self.runs.stopping:
            return  # the run before is closing (its stop baseline is read): open at the first reading after
        if now - self._true_since >= self.config.true_for:
            self._open(now, start)

    def _while_auto_run(self, now: float) -> None:
        if self._past_max_duration(now):
            self._close_at_max_duration(now)
            return
        stop = self._last["stop"] = self.stop_when.evaluate(self.latest, now)
        if not self.runs.auto_enabled or stop.value is None:
            return
        if stop.value is False:
            self._false_since = None
            return
        if self._false_since is None:
            self._false_since = now
            self.on_change()
        if now - self._false_since >= self.config.false_for:
            self._close(now, stop)

    def _follow_run(self, now: float) -> None:
        """Notice runs opened or closed by anyone (a command, this trigger, a restart)."""
        current = self.runs.current
        run_id = current.get("run_id") if current else None
        if run_id == self._run_id:
            return
        if self._run_id is not None:  # the run seen last is closed: wait for the condition to drop
            self._armed = False
            self._run_started = None
        self._true_since = self._false_since = self._true_from = None
        self._polls.clear()
        self._run_id = run_id if isinstance(run_id, str) else None
        if current is not None:
            self._adopt(current, now)
        self.on_change()

    def _adopt(self, current: Mapping[str, Any], now: float | None) -> None:
        self._run_id = current.get("run_id") if isinstance(current.get("run_id"), str) else None
        started = current.get("started_at")
        self._run_started = float(started) if isinstance(started, int | float) else now

    def _is_auto(self) -> bool:
        current = self.runs.current
        return bool(current and current.get("trigger") == "auto")

    def _past_max_duration(self, now: float) -> bool:
        limit = self.config.max_duration
        if limit is None:
            return False
        if self._run_started is None:
            self._run_started = now  # adopted without a start time: counted from the first look
        return now - self._run_started >= limit

    def _prune(self) -> None:
        """Forget polls no pre-roll can reach: before the start condition first held (or now) minus ``pre_roll``."""
        since = self._true_since if self._true_since is not None else self.now
        cutoff = since - self.config.pre_roll
        while self._polls and self._polls[0][0] < cutoff:
            self._polls.popleft()

    def _pre_roll_from(self) -> int | None:
        assert self._true_since is not None
        cutoff = self._true_since - self.config.pre_roll
        seqs = [seq for poll, seq in self._polls if poll >= cutoff]
        if self._true_from is not None:
            seqs.append(self._true_from)
        return min(seqs, default=None)

    # ------------------------------------------------------------ acting

    def _why(self, expression: Expression, result: Result) -> dict[str, Any]:
        return {"expression": _one_line(expression.text)[:contract.WHY_EXPRESSION_MAX],
                "values": dict(list(result.values.items())[:contract.WHY_VALUES_MAX])}

    def _open(self, now: float, start: Result) -> None:
        name = render_name(self.config.name, self.site, now)
        params = contract.StartRun(stream_name=name[:200], tags=tuple(self.config.tags))
        ok, message, seq = self.runs.start(params, trigger="auto", why=self._why(self.start_when, start),
                                           pre_roll_from=self._pre_roll_from())
        self._armed = False  # whatever happens to this run, the condition must drop before the next
        self._true_since = self._true_from = None
        if not ok:
            log.warning("automatic run not started: %s", message)
            return
        self.started += 1
        self._follow_run(now)
        self._run_started = now
        self._annotate(f"auto start: {_one_line(self.start_when.text)} held {self.config.true_for:g} s")
        log.info("automatic run %s started at seq %s: %s", name, seq, _one_line(self.start_when.text))

    def _close(self, now: float, stop: Result) -> None:
        # the event goes before the stop marker, so it is the run's (as the start's event is)
        event = f"auto stop: {_one_line(self.stop_when.text)} held {self.config.false_for:g} s"
        self._annotate(event)
        ok, message, _ = self.runs.stop(contract.StopRun("success"), why=self._why(self.stop_when, stop),
                                        if_trigger="auto")
        self._after_close(ok, message, now, event)

    def _close_at_max_duration(self, now: float) -> None:
        limit = self.config.max_duration
        event = f"auto stop: max_duration {limit:g} s reached (abort)"
        self._annotate(event)
        ok, message, _ = self.runs.stop(contract.StopRun("abort", f"open longer than max_duration ({limit:g} s)"),
                                        if_trigger="auto")
        self._after_close(ok, message, now, event)

    def _after_close(self, ok: bool, message: str, now: float, event: str) -> None:
        if not ok:
            log.warning("automatic run not stopped: %s", message)
            return
        self.stopped += 1
        self._follow_run(now)
        # the reading that closed it counts as a look at the start condition: false there re-arms
        if self.start_when.evaluate(self.latest, now).value is False:
            self._armed = True
        log.info("%s", event)

    def _annotate(self, text: str) -> None:
        """Log the trigger's own event (source ``auto``) in the ordered log, with the open run's id."""
        try:
            self.runs.annotate(printable(text, 200), ("auto",), source="auto")
        except Exception:  # an event that cannot be logged must not stop the trigger
            log.exception("could not log the trigger's event %r", text)

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """``auto_state`` of the retained run topic (docs/payload.md, "Run state"); whether the trigger is
        switched on is the topic's ``auto``."""
        with self._lock:
            def shown(result: Result | None) -> str:
                return "unknown" if result is None or result.value is None else str(result.value).lower()

            start, stop = self._last.get("start"), self._last.get("stop")
            running = self._run_id is not None
            watching = stop if running else start
            return {
                "start": shown(start),
                "stop": shown(stop) if running else None,
                "since": self._false_since if running else self._true_since,
                "armed": self._armed,
                "unknown": dict(watching.unknown) if watching is not None else {},
                "error": watching.error if watching is not None else None,
                "started": self.started, "stopped": self.stopped,
            }

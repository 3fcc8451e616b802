"""One thread per bus, reading every instrument on it in turn, each on its own drift-free schedule.

The thread always serves the instrument whose deadline (or, while it is unavailable, whose
retry) comes first, so a failing instrument costs the others on its bus only the time of its own
exchange (at most one timeout per attempt), and costs instruments on other buses nothing.

Recovery, in the order it is needed:

* a poll that fails (timeout, garbled or refused reply) is counted; the instrument is simply
  read again at its next deadline, where its driver resynchronises;
* after ``failures_before_unavailable`` consecutive failures it is unavailable: no longer read
  on its schedule but retried with capped exponential backoff; a retry connects the driver
  again (flush, stop a stream, identify) before reading; when nothing on the bus answers, the
  retry starts from a fresh connection, which also clears a half-open TCP link;
* a lost link (``TransportDisconnected``) closes the shared transport; the next turn, whoever's
  it is, reopens it (``bridge.transports.base.reopen``), and every driver on the bus connects
  again before its next read;
* an instrument that cannot connect at start is unavailable at once and retried the same way.

Baselines (identity and configuration, docs/payload.md ``baseline``) are read on this thread
too, never on the caller's, so they never talk to the bus while a poll does: after every
connect (handed to ``on_baseline``), and when :meth:`BusPoller.request_baseline` asks (a run's
start and stop), between two turns, for every instrument of the bus at once. An instrument with
``interval: baseline`` is not polled on a schedule: it is read at its first connect (and after a
recovery) and with every requested baseline, its readings delivered before the snapshot.

The thread owns the transport: it opens it at the first turn and closes it when it ends, so
``stop()`` never closes a link under a read in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from bridge.config import InstrumentConfig
from bridge.drivers.base import Driver
from bridge.drivers.common.baseline import Baseline
from bridge.drivers.registry import DriverRegistry
from bridge.edge.polling.availability import Availability, InstrumentStatus, State
from bridge.edge.polling.bus import assemble
from bridge.edge.polling.schedule import Backoff, Clock, Grid, spread
from bridge.errors import BridgeError, TransportDisconnected
from bridge.model import Reading
from bridge.names import printable
from bridge.transports.base import Transport, reopen

log = logging.getLogger("bridge.edge.polling")

ReadingSink = Callable[[list[Reading]], None]
OnChange = Callable[[InstrumentStatus], None]
#: one instrument's snapshot as a ``baseline`` body holds it (docs/payload.md)
Snapshot = dict[str, Any]
#: an instrument connected: its name and snapshot (the bridge logs it when it changed)
OnBaseline = Callable[[str, Snapshot], None]
#: a requested baseline, answered with every instrument of the bus: name -> snapshot
BaselineDone = Callable[[dict[str, Snapshot]], None]
#: the grid of an ``interval: baseline`` instrument: only its first deadline (its first read) is used
_UNSCHEDULED = 3600.0
TurnKind = Literal["poll", "connect", "retry"]
Phase = Literal["open", "connect", "read"]


@dataclass(frozen=True, slots=True)
class ReadTiming:
    """One turn on the bus, for benchmarks and diagnostics (clock times, seconds).

    ``kind``: ``poll`` on schedule, ``connect`` (a scheduled poll that first connected the
    driver, at start or after the link was reopened), ``retry`` (an unavailable instrument).
    ``deadline`` is the planned start: the served grid deadline, or the retry time.
    """

    instrument: str
    kind: TurnKind
    deadline: float
    started: float
    finished: float
    ok: bool

    @property
    def lateness(self) -> float:
        return self.started - self.deadline


Observer = Callable[[ReadTiming], None]


@dataclass
class _Member:
    config: InstrumentConfig
    driver: Driver[Any, Any]
    health: Availability
    grid: Grid
    #: the driver must connect() before its next read (at start, after the link was reopened)
    needs_connect: bool = True

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def scheduled(self) -> bool:
        """Polled on its grid; False for ``interval: baseline`` (read with the baselines only)."""
        return self.config.poll_interval is not None

    def due(self) -> float:
        if self.health.state is State.DOWN:
            return self.health.retry_at
        if not self.scheduled and self.health.state is State.UP:
            return float("inf")  # read once it is up; from then on only with the baselines
        return self.grid.deadline


@dataclass
class _Outcome:
    readings: list[Reading] | None
    error: BaseException | None
    phase: Phase
    connected: bool


class BusPoller:
    """Polls the instruments of one bus (see :func:`bridge.edge.polling.bus.group_by_bus`) in a thread.

    ``sink`` gets each successful poll's readings; ``on_change`` each status change worth
    publishing (available or not, or an instrument that could not start); ``observer`` every
    turn's timing. All three are called from the bus thread; an exception they raise is logged
    and the bus goes on. ``clock`` is the monotonic clock of the schedule (readings carry Unix
    time stamped by the drivers).
    """

    def __init__(self, instruments: Sequence[InstrumentConfig], sink: ReadingSink, *,
                 on_change: OnChange | None = None, observer: Observer | None = None,
                 on_baseline: OnBaseline | None = None,
                 registry: DriverRegistry | None = None, failures_before_unavailable: int = 3,
                 backoff: Backoff | None = None, clock: Clock = time.monotonic) -> None:
        bus = assemble(instruments, registry)
        self.key = bus.key
        self._owner = bus.owner
        self._bus_timeout = bus.config.timeout
        self.transport = bus.transport
        self._members = [
            _Member(inst, driver, Availability(inst.name, failures_before_unavailable, backoff),
                    Grid(0.0, grid_interval(inst)))
            for inst, driver in bus.drivers
        ]
        self._sink = sink
        self._on_change = on_change
        self._observer = observer
        self._on_baseline = on_baseline
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: set by a stop or a baseline request, so the thread does not sleep through them
        self._wake = threading.Event()
        self._baseline_requests: list[BaselineDone] = []
        self._thread: threading.Thread | None = None
        self._sink_failing = False

    # ---------------------------------------------------------- control

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._members]

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def on_this_thread(self) -> bool:
        """Whether the caller runs on this bus's thread (a reading sink, a trigger fed by it): such a
        caller must not wait for this bus to answer a request."""
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self, origin: float | None = None, offsets: Sequence[float] | None = None) -> None:
        """Start polling: instrument n's grid starts at ``origin`` (clock time, default now) plus
        ``offsets[n]`` (default: spread over the shortest interval, see :func:`spread`)."""
        if self._thread is not None:
            raise RuntimeError(f"bus {self.key} already started")
        origin = self._clock() if origin is None else origin
        if offsets is None:
            offsets = spread(spread_intervals([m.config for m in self._members]))
        if len(offsets) != len(self._members):
            raise ValueError(f"{len(offsets)} offsets for {len(self._members)} instruments")
        for m, offset in zip(self._members, offsets, strict=True):
            m.grid = Grid(origin + offset, grid_interval(m.config))
        self._thread = threading.Thread(target=self._run, name=f"poller {self.key}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end after the turn in progress (see :meth:`join`)."""
        self._stop.set()
        self._wake.set()

    def request_baseline(self, done: BaselineDone) -> None:
        """Read every instrument's baseline on the bus thread, after the turn in progress; ``done``
        gets them all (name -> snapshot), on the bus thread. A bus that is not running, or stops
        first, answers at once with every instrument ``not read``."""
        with self._lock:
            running = self._thread is not None and self._thread.is_alive() and not self._stop.is_set()
            if running:
                self._baseline_requests.append(done)
        if running:
            self._wake.set()
        else:
            _call_guarded(done, self._unread("the bus is not polling"), "baseline")

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end (it closes the transport); False if it is still in a turn
        after ``timeout`` (default: two transport timeouts and a second, well past one turn)."""
        thread = self._thread
        if thread is None:
            self.transport.close()
            return True
        thread.join(2 * self._bus_timeout + 1.0 if timeout is None else timeout)
        if thread.is_alive():
            log.warning("bus %s: still busy after stop; its transport closes when the turn ends", self.key)
            return False
        return True

    def stop(self, timeout: float | None = None) -> bool:
        self.request_stop()
        return self.join(timeout)

    def status(self) -> list[InstrumentStatus]:
        with self._lock:
            return [m.health.status(m.grid.missed) for m in self._members]

    # ---------------------------------------------------------- the thread

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._serve_baselines()
                member = min(self._members, key=_Member.due)  # first of equals: config order
                wait = member.due() - self._clock()
                if wait > 0:
                    self._wake.wait(None if wait == float("inf") else wait)
                    self._wake.clear()
                    continue
                self._turn(member)
        except Exception:  # a bug of the poller itself: say so loudly, the thread is gone
            log.exception("bus %s: poller thread failed; its instruments are no longer read", self.key)
        finally:
            with self._lock:
                pending, self._baseline_requests = self._baseline_requests, []
            for done in pending:  # nobody waits for an answer that will not come
                _call_guarded(done, self._unread("the bridge is stopping"), "baseline")
            _close_quietly(self.transport)

    # ---------------------------------------------------------- baselines

    def _serve_baselines(self) -> None:
        """Answer the baseline requests made since the last turn: one snapshot of each instrument for all."""
        with self._lock:
            requests, self._baseline_requests = self._baseline_requests, []
        if not requests:
            return
        snapshots = {m.name: self._snapshot(m) for m in self._members}
        for done in requests:
            _call_guarded(done, snapshots, "baseline")

    def _snapshot(self, m: _Member) -> Snapshot:
        """``m``'s baseline read now (and, for ``interval: baseline``, its channels, delivered first)."""
        if m.health.state is State.DOWN:
            return _failed(f"unavailable: {_describe(m.name, self._owner, m.health.last_error or 'down')}")
        at = time.time()
        try:
            if not self.transport.is_open:
                for member in self._members:
                    member.needs_connect = True
                reopen(self.transport)
            connected = m.needs_connect
            if connected:
                m.driver.connect()
                m.needs_connect = False
            body = self._read_baseline(m).body()
            if connected and self._on_baseline is not None:  # its connect baseline, read once for both
                _call_guarded(partial(self._on_baseline, m.name), {**body, "t": at}, "on_baseline")
            if not m.scheduled:
                self._poll_with_baseline(m)
        except TransportDisconnected as exc:
            self._drop_link()
            return _failed(_describe(m.name, self._owner, exc))
        except Exception as exc:  # a driver bug or a device error costs this snapshot, not the bus
            return _failed(_describe(m.name, self._owner, exc))
        body["t"] = at
        return body

    def _read_baseline(self, m: _Member) -> Baseline:
        return m.driver.baseline().with_identity(m.config.identity)

    def _poll_with_baseline(self, m: _Member) -> None:
        """An ``interval: baseline`` instrument's channels, read with its snapshot; its health follows."""
        try:
            readings = m.driver.read()
        except BridgeError as exc:
            with self._lock:
                changed = m.health.failed(_describe(m.name, self._owner, exc), self._clock())
                status = m.health.status(m.grid.missed) if changed else None
            if status is not None and self._on_change is not None:
                _call_guarded(self._on_change, status, "on_change")
            raise
        with self._lock:
            changed = m.health.succeeded(max((r.timestamp for r in readings), default=None))
            status = m.health.status(m.grid.missed) if changed else None
        if readings:
            self._deliver(readings)
        if status is not None and self._on_change is not None:
            _call_guarded(self._on_change, status, "on_change")

    def _connected(self, m: _Member) -> None:
        """Right after ``m`` connected: its baseline to ``on_baseline`` (the bridge logs it when it changed)."""
        if self._on_baseline is None:
            return
        try:
            body = self._read_baseline(m).body()
        except TransportDisconnected:
            raise
        except Exception as exc:  # the instrument connected; its identity can wait for the next baseline
            log.debug("%s: baseline after connecting failed: %s", m.name, exc)
            return
        body["t"] = time.time()
        _call_guarded(partial(self._on_baseline, m.name), body, "on_baseline")

    def _unread(self, why: str) -> dict[str, Snapshot]:
        return {m.name: _failed(why) for m in self._members}

    def _turn(self, m: _Member) -> None:
        retry = m.health.state is State.DOWN
        if retry:
            deadline = m.health.retry_at
            if not any(other.health.available for other in self._members):
                self._drop_link()  # nothing on this bus answers: start from a fresh connection
        else:
            with self._lock:  # an instrument about to connect was not due: nothing missed
                m.grid.catch_up(self._clock(), count=not m.needs_connect)
            deadline = m.grid.deadline
        started = self._clock()
        outcome = self._exchange(m, connect=retry)
        finished = self._clock()
        kind: TurnKind = "retry" if retry else "connect" if outcome.connected else "poll"

        with self._lock:
            if outcome.readings is not None:
                changed = m.health.succeeded(max((r.timestamp for r in outcome.readings), default=None))
            else:
                error = outcome.error
                assert error is not None
                at_start = m.health.state is State.STARTING and outcome.phase != "read"
                changed = m.health.failed(_describe(m.name, self._owner, error), finished,
                                          connecting=at_start)
            if m.health.state is not State.DOWN:
                # After a retry or a (re)connect the grid points passed were not due: not missed.
                m.grid.advance(finished, count=kind == "poll")
            status = m.health.status(m.grid.missed) if changed else None

        if outcome.readings:
            self._deliver(outcome.readings)
        if status is not None and self._on_change is not None:
            _call_guarded(self._on_change, status, "on_change")
        if self._observer is not None:
            _call_guarded(self._observer, ReadTiming(m.name, kind, deadline, started, finished,
                                                     outcome.readings is not None), "observer")

    def _exchange(self, m: _Member, *, connect: bool) -> _Outcome:
        phase: Phase = "open"
        connected = False
        try:
            if not self.transport.is_open:
                for member in self._members:
                    member.needs_connect = True
                reopen(self.transport)
            phase = "connect"
            if connect or m.needs_connect:
                m.needs_connect = True
                connected = True
                m.driver.connect()
                m.needs_connect = False
                self._connected(m)
            phase = "read"
            return _Outcome(m.driver.read(), None, phase, connected)
        except TransportDisconnected as exc:
            self._drop_link()
            return _Outcome(None, exc, phase, connected)
        except BridgeError as exc:
            return _Outcome(None, exc, phase, connected)
        except Exception as exc:  # a driver bug must cost its instrument, not the bus
            log.debug("%s: unexpected error in %s", m.name, phase, exc_info=True)
            return _Outcome(None, exc, phase, connected)

    def _drop_link(self) -> None:
        """Close the shared transport; the next turn reopens it and every driver reconnects."""
        _close_quietly(self.transport)
        for member in self._members:
            member.needs_connect = True

    def _deliver(self, readings: list[Reading]) -> None:
        try:
            self._sink(readings)
        except Exception:
            if not self._sink_failing:
                log.exception("bus %s: the reading sink failed; readings of this bus are lost until it works",
                              self.key)
            self._sink_failing = True
            return
        if self._sink_failing:
            log.info("bus %s: the reading sink works again", self.key)
            self._sink_failing = False


def grid_interval(config: InstrumentConfig) -> float:
    """The interval a grid is built with: the poll interval, or a long one for ``interval: baseline``
    (whose grid only gives its first read, spread like the others)."""
    interval = config.poll_interval
    return _UNSCHEDULED if interval is None else interval


def spread_intervals(configs: Sequence[InstrumentConfig]) -> list[float]:
    """The intervals first deadlines are spread over: an ``interval: baseline`` instrument counts as the
    shortest polled one (its first read comes with the others', not an hour later)."""
    polled = [c.poll_interval for c in configs if c.poll_interval is not None]
    shortest = min(polled, default=1.0)
    return [shortest if c.poll_interval is None else c.poll_interval for c in configs]


def _failed(why: str) -> Snapshot:
    """The snapshot of an instrument that could not be read: nothing known, and why."""
    return {"identity": {}, "configuration": {}, "error": printable(why, 200)}


def _describe(name: str, owner: str, error: BaseException | str) -> str:
    """The error as the status shows it: without the instrument's or the transport's name in
    front (the status is the instrument's already); library bugs keep their type name."""
    text = str(error)
    for prefix in (f"{name}: ", f"{owner}: "):
        text = text.removeprefix(prefix)
    if not isinstance(error, BridgeError | str):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text


def _close_quietly(transport: Transport) -> None:
    try:
        transport.close()
    except Exception:  # closing a broken link may fail in any library-specific way
        log.debug("closing %s failed", transport.describe(), exc_info=True)


def _call_guarded(callback: Callable[[Any], None], argument: object, what: str) -> None:
    try:
        callback(argument)
    except Exception:
        log.exception("the poller's %s callback raised; polling goes on", what)

"""Baselines: every instrument's identity and configuration, logged in the ordered log (docs/payload.md).

A run must say which instruments produced it and how they were set: a pressure is read against
the controller's unit, a pyrometer temperature against its emissivity. So the bridge logs a
``baseline`` entry

* when an instrument connects (at start, after a reconnect), if its snapshot differs from the
  last one this process logged for it: a controller swapped for another shows up at once;
* right after every run's start marker and right before its stop marker (:mod:`bridge.edge.runs`
  asks through :meth:`Baselines.collect`), so each run holds a ``start`` and a ``stop`` snapshot,
  and ``runs show`` flags what changed in between.

Each bus reads its own instruments on its own thread (:meth:`BusPoller.request_baseline`), so a
baseline never talks to a bus another thread is using. A collection is answered when every bus
has answered, or after ``timeout`` with the instruments of a busy bus marked ``not read``; the
caller is never the one waiting on a bus, since the trigger of automatic runs asks from a bus
thread (:meth:`Baselines.on_a_bus_thread`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

from bridge.edge.outbox import Outbox
from bridge.edge.polling.pollers import BusPoller, Pollers, Snapshot
from bridge.names import printable
from bridge.wire import contract

log = logging.getLogger(__name__)

#: seconds a collection waits for the buses; a bus is busy at most for one turn (a few timeouts)
BASELINE_TIMEOUT: Final = 5.0

#: what a collection hands back: instrument name -> snapshot, in config order
Instruments = dict[str, Snapshot]


class Baselines:
    """Reads baselines through the bus pollers and logs the ``connect`` ones.

    ``run_id()`` names the run open now (a ``connect`` baseline carries it). Snapshots compare
    without their read time ``t``.
    """

    def __init__(self, pollers: Pollers, outbox: Outbox, run_id: Callable[[], str | None], *,
                 timeout: float = BASELINE_TIMEOUT) -> None:
        self.pollers = pollers
        self.outbox = outbox
        self.timeout = timeout
        self._run_id = run_id
        self._lock = threading.Lock()
        self._logged: dict[str, Snapshot] = {}

    def collect(self, when: str, done: Callable[[Instruments], None]) -> None:
        """Ask every bus for its instruments' snapshots; ``done(instruments)`` runs once, on the thread
        that completes the collection (the last bus to answer, or the timer after ``timeout``)."""
        collection = _Collection(when, self.pollers.names, {bus.key: bus for bus in self.pollers.buses}, done,
                                 self.timeout)
        collection.start()

    def on_a_bus_thread(self) -> bool:
        return self.pollers.on_a_bus_thread()

    def connected(self, instrument: str, snapshot: Snapshot) -> None:
        """An instrument connected (on its bus thread): log its snapshot when it is news."""
        compared = _without_time(snapshot)
        with self._lock:
            if self._logged.get(instrument) == compared:
                return
            self._logged[instrument] = compared
        body = {"when": "connect", "run_id": self._run_id(), "instruments": {instrument: snapshot}}
        try:
            seq = self.outbox.append_marker("baseline", contract.baseline_body(body))
        except Exception:  # the readings go on; the next connect or run start logs it again
            with self._lock:
                self._logged.pop(instrument, None)
            log.exception("%s: could not log its baseline after connecting", instrument)
            return
        identity = ", ".join(printable(v, 60) for v in snapshot.get("identity", {}).values()) or "no identity"
        log.info("%s: connected (%s); baseline logged at seq %d", instrument, identity, seq)


class _Collection:
    """One collection across the buses: answered once, by the last bus or by the timer."""

    def __init__(self, when: str, names: list[str], buses: Mapping[str, BusPoller],
                 done: Callable[[Instruments], None], timeout: float) -> None:
        self.when = when
        self.names = names
        self.buses = buses
        self.done = done
        self.timeout = timeout
        self._lock = threading.Lock()
        self._waiting = set(buses)
        self._snapshots: dict[str, Snapshot] = {}
        self._finished = False
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if not self.buses:
            self._finish()
            return
        self._timer = threading.Timer(self.timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()
        for key, bus in self.buses.items():
            bus.request_baseline(partial(self._answer, key))

    def _answer(self, key: str, snapshots: Mapping[str, Snapshot]) -> None:
        with self._lock:
            if self._finished:
                return
            self._snapshots.update(snapshots)
            self._waiting.discard(key)
            last = not self._waiting
        if last:
            self._finish()

    def _expire(self) -> None:
        with self._lock:
            late = sorted(self._waiting)
        if late:
            log.warning("baseline at %s: bus %s did not answer within %g s; its instruments are marked not read",
                        self.when, ", ".join(late), self.timeout)
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            snapshots = dict(self._snapshots)
        if self._timer is not None:
            self._timer.cancel()
        why = f"not read within {self.timeout:g} s (its bus was busy)"
        instruments = {name: snapshots.get(name) or {"identity": {}, "configuration": {}, "error": why}
                       for name in self.names}
        try:
            self.done(instruments)
        except Exception:
            log.exception("baseline at %s: logging it failed", self.when)


def _without_time(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in snapshot.items() if key != "t"}

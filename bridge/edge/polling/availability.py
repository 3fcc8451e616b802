"""Whether an instrument is available: failure counting, backoff, and logging once per change.

A pure state machine driven by the bus thread with the times it observed, so the rules (when an
instrument is marked unavailable, when it is retried, what is logged) are tested without a bus.

States: ``starting`` (never read yet), ``up`` (its last read, or one of its last few, worked) and
``down`` (unavailable: retried with backoff instead of on its schedule). Only the changes are
logged: once at warning when it goes down (with the error), once at info when it comes back;
single failures below the threshold go to debug, since the status counts them anyway and a
gauge that times out once an hour must not fill the log of a Pi.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from bridge.edge.polling.schedule import Backoff

log = logging.getLogger("bridge.edge.polling")


class State(StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class InstrumentStatus:
    """A snapshot of one instrument's health, for the status topic and the CLI.

    ``reads`` and ``failures`` count polls (one read of every channel), not readings;
    ``missed_deadlines`` counts scheduled polls skipped because the bus was busy or the previous
    poll overran (not polls skipped while unavailable); ``last_reading_at`` is the Unix time of
    the newest reading.
    """

    name: str
    available: bool
    last_error: str | None
    consecutive_failures: int
    reads: int
    failures: int
    missed_deadlines: int
    last_reading_at: float | None


class Availability:
    """One instrument's availability; every method returns True when ``available`` changed or
    the instrument first failed to come up (the moments the status is worth publishing)."""

    def __init__(self, name: str, failures_before_unavailable: int = 3, backoff: Backoff | None = None) -> None:
        if failures_before_unavailable < 1:
            raise ValueError(f"failures_before_unavailable must be at least 1, not {failures_before_unavailable}")
        self.name = name
        self.failures_before_unavailable = failures_before_unavailable
        self.backoff = backoff or Backoff()
        self.state = State.STARTING
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self.reads = 0
        self.failures = 0
        self.last_reading_at: float | None = None
        #: retries made since the instrument went down
        self.retries = 0
        #: when the next retry is due (monotonic), while down
        self.retry_at = 0.0

    @property
    def available(self) -> bool:
        return self.state is State.UP

    def status(self, missed_deadlines: int) -> InstrumentStatus:
        return InstrumentStatus(self.name, self.available, self.last_error, self.consecutive_failures,
                                self.reads, self.failures, missed_deadlines, self.last_reading_at)

    def succeeded(self, last_reading_at: float | None) -> bool:
        """A poll worked; ``last_reading_at`` is the newest reading's timestamp (None: no channels)."""
        self.reads += 1
        if last_reading_at is not None:
            self.last_reading_at = last_reading_at
        previous, failed = self.state, self.consecutive_failures
        self.state = State.UP
        self.consecutive_failures = 0
        self.retries = 0
        if previous is State.DOWN:
            log.info("%s: available again after %d failed attempt%s", self.name, failed, "" if failed == 1 else "s")
            self.last_error = None
        elif previous is State.STARTING:
            log.debug("%s: first reading", self.name)
        return previous is not State.UP

    def failed(self, error: str, now: float, *, connecting: bool = False) -> bool:
        """A poll (or a connect) failed at ``now``. An instrument that cannot even connect at
        start goes down at once: counting attempts first would only delay saying so."""
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        if self.state is State.DOWN:
            self.retries += 1
            self.retry_at = now + self.backoff.delay(self.retries + 1)
            log.debug("%s: retry %d failed: %s", self.name, self.retries, error)
            return False
        starting = self.state is State.STARTING and connecting
        if not starting and self.consecutive_failures < self.failures_before_unavailable:
            log.debug("%s: poll failed (%d of %d before unavailable): %s", self.name,
                      self.consecutive_failures, self.failures_before_unavailable, error)
            return False
        self.state = State.DOWN
        self.retries = 0
        self.retry_at = now + self.backoff.delay(1)
        if starting:
            log.warning("%s: cannot start: %s; retrying with backoff", self.name, error)
        else:
            log.warning("%s: unavailable after %d failures: %s; retrying with backoff", self.name,
                        self.consecutive_failures, error)
        return True

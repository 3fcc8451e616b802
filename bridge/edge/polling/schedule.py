"""When to read: a drift-free grid of deadlines per instrument, and the backoff of a failing one.

Pure arithmetic on times handed in by the caller (``now``, ``finished``), no clock and no
threads, so every rule here is unit-tested with plain numbers.

The grid: deadline k is ``origin + k * interval``, computed from k and never accumulated, so
an instrument read every 0.1 s for a day is still on the grid it started on (``sleep(interval)``
after each read drifts by the read time, every time). Two rules keep it from bunching:

* **late, not skipped**: a deadline that passes while the instrument waits for its turn on the
  bus is served late. Only when its successor has passed too (the wait was a whole interval or
  more) are the passed deadlines skipped and counted as missed, and the latest one is served.
* **no catching up after a long read**: after a read the next deadline is the first one at or
  after the read's end; the ones the read overran are missed and counted, never fired back to
  back to make up for it.

Grid points passed while an instrument was connecting or unavailable are not "missed" (the
callers pass ``count=False``): the instrument was not due to be read then; its status says why.
Resuming keeps the grid, and so the phase it shares with every instrument started at the same
origin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: the schedule's clock: monotonic seconds (``time.monotonic``; a fake one in tests)
Clock = Callable[[], float]

#: grid positions within this fraction of an interval of a deadline count as on it, so that
#: float rounding (0.3 / 0.1 = 2.9999999999999996) never moves a boundary by a whole interval
EPSILON = 1e-9


@dataclass
class Grid:
    """The deadlines of one instrument: ``origin + index * interval``."""

    origin: float
    interval: float
    index: int = 0
    #: deadlines skipped because the bus or the instrument's own read overran them
    missed: int = 0

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval must be positive, not {self.interval}")

    @property
    def deadline(self) -> float:
        """The deadline to serve next."""
        return self.origin + self.index * self.interval

    def position(self, t: float) -> float:
        """``t`` in grid units: 2.5 is halfway between deadlines 2 and 3."""
        return (t - self.origin) / self.interval

    def catch_up(self, now: float, *, count: bool = True) -> int:
        """At the start of a read at ``now``: skip the deadlines whose successor has passed too,
        so the latest passed one is served. Returns how many were skipped; they are counted as
        missed unless ``count`` is False (the instrument was not due: it is about to connect)."""
        skipped = max(0, math.floor(self.position(now) - self.index + EPSILON))
        self.index += skipped
        if count:
            self.missed += skipped
        return skipped

    def advance(self, finished: float, *, count: bool = True) -> int:
        """After serving the deadline: move to the first deadline at or after ``finished``
        (at least the next one). Returns how many were skipped in between; they are counted as
        missed unless ``count`` is False (the read included a connect, or was a retry)."""
        following = max(self.index + 1, _first_at_or_after(self.position(finished)))
        skipped = following - self.index - 1
        self.index = following
        if count:
            self.missed += skipped
        return skipped



def _first_at_or_after(position: float) -> int:
    return math.ceil(position - EPSILON)


def spread(intervals: Sequence[float]) -> list[float]:
    """Phase offsets for instruments started together: evenly over the shortest interval.

    Grids that all start on one instant make every bus thread wake at once at the common
    multiples of their intervals; the threads then take turns on the GIL and the last one reads
    late by everyone else's CPU time (measured: 10 buses at 10 Hz, p99 lateness 3.1 ms aligned,
    see benchmarks/schedule_jitter.py). Spread, each wakes alone. Instruments sharing a bus are
    spread too, so they do not queue behind each other at every deadline.
    """
    if not intervals:
        return []
    step = min(intervals) / len(intervals)
    return [n * step for n in range(len(intervals))]


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff between retries of an unavailable instrument.

    No random jitter: a bus thread retries one instrument at a time anyway, so retries cannot
    arrive in a herd, and fixed delays make the retry times predictable in a log.
    """

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {self.initial} and {self.maximum}")
        if self.factor < 1:
            raise ValueError(f"backoff factor must be at least 1, not {self.factor}")

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1 for the first retry)."""
        if attempt < 1:
            raise ValueError(f"retry attempts count from 1, not {attempt}")
        if self.factor == 1:
            return self.initial
        # Compare exponents rather than compute factor ** attempt, which overflows in a long outage.
        if attempt - 1 >= math.log(self.maximum / self.initial, self.factor):
            return self.maximum
        return min(self.maximum, self.initial * self.factor ** (attempt - 1))

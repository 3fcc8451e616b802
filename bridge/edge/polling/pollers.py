"""Polling every instrument of a config: one thread per bus (docs/design.md section 2, "poller").

:class:`Pollers` groups the instruments by bus (:func:`group_by_bus`), runs one
:class:`BusPoller` per bus, hands every poll's readings to one ``sink`` and availability changes
to one ``on_change``, and reports every instrument's :class:`InstrumentStatus`. All buses start
on one clock origin, the instruments' first deadlines spread evenly over the shortest interval
(:func:`bridge.edge.polling.schedule.spread`), so bus threads do not all wake at the same instant.
How a bus schedules and recovers: :mod:`bridge.edge.polling.bus_poller`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from bridge.config import InstrumentConfig, group_by_bus
from bridge.drivers.registry import DriverRegistry
from bridge.edge.polling.availability import InstrumentStatus
from bridge.edge.polling.bus_poller import (
    BaselineDone,
    BusPoller,
    Observer,
    OnBaseline,
    OnChange,
    ReadingSink,
    ReadTiming,
    Snapshot,
    spread_intervals,
)
from bridge.edge.polling.schedule import Backoff, Clock, spread

__all__ = [
    "Backoff",
    "BaselineDone",
    "BusPoller",
    "InstrumentStatus",
    "OnBaseline",
    "Pollers",
    "ReadTiming",
    "Snapshot",
]


class Pollers:
    """Every bus of ``instruments``, polled from :meth:`start` to :meth:`stop`.

    Building it does no I/O: a driver name or options that do not fit fail here, before any
    thread runs; a transport that cannot be opened is a runtime failure of its instruments
    (retried with backoff), never of the others.
    """

    def __init__(self, instruments: Sequence[InstrumentConfig], sink: ReadingSink, *,
                 on_change: OnChange | None = None, observer: Observer | None = None,
                 on_baseline: OnBaseline | None = None,
                 registry: DriverRegistry | None = None, failures_before_unavailable: int = 3,
                 backoff: Backoff | None = None, clock: Clock = time.monotonic) -> None:
        self._instruments = list(instruments)
        self._order = {inst.name: i for i, inst in enumerate(instruments)}
        self._clock = clock
        self.buses = [
            BusPoller(members, sink, on_change=on_change, observer=observer, on_baseline=on_baseline,
                      registry=registry, failures_before_unavailable=failures_before_unavailable, backoff=backoff,
                      clock=clock)
            for members in group_by_bus(instruments).values()
        ]

    def start(self) -> None:
        """Start every bus on one origin, instruments spread over the shortest interval."""
        phases = spread(spread_intervals(self._instruments))
        offsets = {inst.name: phase for inst, phase in zip(self._instruments, phases, strict=True)}
        origin = self._clock()
        for bus in self.buses:
            bus.start(origin, [offsets[name] for name in bus.names])

    def stop(self, timeout: float | None = None) -> bool:
        """Stop every bus (all at once, so it takes one turn, not one per bus) and close the
        transports; False if a bus was still in a turn after ``timeout``."""
        for bus in self.buses:
            bus.request_stop()
        return all([bus.join(timeout) for bus in self.buses])

    @property
    def names(self) -> list[str]:
        """Every instrument, in config order."""
        return [inst.name for inst in self._instruments]

    def on_a_bus_thread(self) -> bool:
        """Whether the caller runs on one of the bus threads (see :attr:`BusPoller.on_this_thread`)."""
        return any(bus.on_this_thread for bus in self.buses)

    def status(self) -> list[InstrumentStatus]:
        """Every instrument's status, in config order."""
        statuses = [status for bus in self.buses for status in bus.status()]
        return sorted(statuses, key=lambda s: self._order[s.name])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

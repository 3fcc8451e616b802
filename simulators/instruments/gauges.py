"""Pressure channels shared by the gauge controller simulators (Pfeiffer TPG, MKS 937B).

Every channel's pressure (mbar, as every simulator's pressure hook) comes, first match wins, from
a pin (:meth:`SimulatedGaugeController.set_pressure`: exact, no noise), a source
(:meth:`SimulatedGaugeController.set_pressure_source`: a chamber model), else a pump-down curve from
``start_mbar`` to ``base_mbar`` (log-linear decay with time constant ``tau``) with
:attr:`SimulatedGaugeController.noise`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulators.serving.byte_device import SimulatedByteDevice
from simulators.serving.link import Clock

PressureSource = Callable[[], float]


@dataclass
class PumpDownChannel:
    """Where one channel's pressure comes from; protocol modules add the gauge and its state."""

    start_mbar: float
    base_mbar: float
    tau: float
    pinned: float | None = None
    source: PressureSource | None = None


class SimulatedGaugeController(SimulatedByteDevice):
    """A byte-stream gauge controller whose channels are :class:`PumpDownChannel` s.

    Subclasses build the channels and implement :meth:`_channel` (1-based, ValueError outside).
    """

    def __init__(self, *, clock: Clock = time.monotonic, seed: int | None = None) -> None:
        super().__init__(clock=clock, seed=seed)
        self._t0 = clock()
        #: Relative standard deviation of the noise on pump-down readings.
        self.noise = 0.01

    def _channel(self, channel: int) -> PumpDownChannel:
        raise NotImplementedError

    def set_pressure(self, channel: int, mbar: float | None) -> None:
        """Pin a channel at exactly ``mbar`` (no noise, no drift); None releases the pin."""
        with self._lock:
            self._channel(channel).pinned = mbar

    def set_pressure_source(self, channel: int, source: PressureSource | None) -> None:
        """Let ``source()`` (mbar) drive a channel, e.g. a chamber model; clears any pin."""
        with self._lock:
            ch = self._channel(channel)
            ch.pinned = None
            ch.source = source

    def pressure(self, channel: int) -> float:
        """The true pressure at a channel in mbar (what the gauge would read in range, status OK)."""
        with self._lock:
            return self._pressure(self._channel(channel))

    def _pressure(self, ch: PumpDownChannel) -> float:
        if ch.pinned is not None:
            return ch.pinned
        if ch.source is not None:
            return ch.source()
        elapsed = max(0.0, self._clock() - self._t0)
        log_base = math.log10(ch.base_mbar)
        log_p = log_base + (math.log10(ch.start_mbar) - log_base) * math.exp(-elapsed / ch.tau)
        return float(10**log_p * (1.0 + self._rng.gauss(0.0, self.noise)))

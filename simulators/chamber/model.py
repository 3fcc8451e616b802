"""The physics that couples the simulated instruments, so a simulated growth looks like one.

Deliberately simple, first-order, and deterministic apart from its seeded noise:

- substrate heater power (the heater supply's V x I) drives the substrate temperature, which the
  pyrometer sees; radiation makes the hot end slower to climb than the cold end;
- each effusion cell's heater output (the Eurotherm's output %) drives the cell temperature,
  which the Eurotherm reads back as its PV;
- chamber pressure is a base pressure plus the cells' vapour (Arrhenius in cell temperature,
  most of it only while the shutter is open) plus outgassing of the hot substrate; the gauges
  see it.

The model integrates on demand (``advance(now)``) from whichever simulator asks first, so it
needs no thread of its own and gives every instrument the same instant's state.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]

AMBIENT_C = 25.0
KELVIN = 273.15


@dataclass
class Cell:
    """An effusion cell: heater output (0-100 %) in, temperature out."""

    name: str
    #: temperature reached at 100 % output, in degC (a Ga cell tops out near 1200 degC)
    max_c: float = 1200.0
    #: thermal time constant in seconds (real cells: minutes; the demo wants seconds)
    tau: float = 20.0
    #: vapour-pressure scale: mbar at the reference temperature with the shutter open
    flux_mbar: float = 3e-7
    reference_c: float = 950.0
    #: activation temperature E/k in kelvin of the vapour-pressure curve
    activation_k: float = 30000.0
    output_percent: float = 0.0
    temperature_c: float = AMBIENT_C
    shutter_open: bool = False

    def step(self, dt: float) -> None:
        target = AMBIENT_C + (self.max_c - AMBIENT_C) * (max(0.0, min(100.0, self.output_percent)) / 100.0) ** 0.7
        self.temperature_c += (target - self.temperature_c) * (1 - math.exp(-dt / self.tau))

    def vapour_mbar(self) -> float:
        t = self.temperature_c + KELVIN
        ref = self.reference_c + KELVIN
        pressure = self.flux_mbar * math.exp(-self.activation_k * (1 / t - 1 / ref))
        return pressure if self.shutter_open else pressure * 0.02


@dataclass
class ChamberModel:
    """One chamber: a substrate heater, cells, and the pressure they make together."""

    base_mbar: float = 2e-9
    #: substrate temperature per watt at equilibrium, low-power end (degC/W)
    substrate_c_per_w: float = 9.0
    substrate_tau: float = 15.0
    noise: float = 0.005
    seed: int | None = None
    clock: Clock = time.monotonic
    cells: dict[str, Cell] = field(default_factory=dict)
    heater_power_w: float = 0.0
    substrate_c: float = AMBIENT_C

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.RLock()
        self._last = self.clock()

    # ---------------------------------------------------------- inputs

    def add_cell(self, name: str, **kwargs: float) -> Cell:
        with self._lock:
            cell = Cell(name, **kwargs)  # type: ignore[arg-type]
            self.cells[name] = cell
            return cell

    def set_heater_power(self, watts: float) -> None:
        with self._lock:
            self.advance()
            self.heater_power_w = max(0.0, watts)

    def set_cell_output(self, name: str, percent: float) -> None:
        with self._lock:
            self.advance()
            self.cells[name].output_percent = percent

    def set_shutter(self, name: str, open_: bool) -> None:
        with self._lock:
            self.advance()
            self.cells[name].shutter_open = open_

    # ---------------------------------------------------------- dynamics

    def advance(self, now: float | None = None) -> None:
        """Integrate up to ``now`` in steps of at most 0.1 s (stable for the time constants)."""
        with self._lock:
            now = self.clock() if now is None else now
            remaining = now - self._last
            if remaining <= 0:
                return
            self._last = now
            while remaining > 0:
                dt = min(0.1, remaining)
                remaining -= dt
                for cell in self.cells.values():
                    cell.step(dt)
                # Radiation losses grow as T^4: equilibrium flattens at high power.
                target = AMBIENT_C + self.substrate_c_per_w * self.heater_power_w / (
                    1 + self.heater_power_w / 150.0) ** 0.5
                self.substrate_c += (target - self.substrate_c) * (1 - math.exp(-dt / self.substrate_tau))

    def _noisy(self, value: float) -> float:
        return value * (1 + self._rng.gauss(0, self.noise))

    # ---------------------------------------------------------- outputs (what instruments see)

    def substrate_temperature(self) -> float:
        with self._lock:
            self.advance()
            return self.substrate_c + self._rng.gauss(0, 0.2)

    def cell_temperature(self, name: str) -> float:
        with self._lock:
            self.advance()
            return self.cells[name].temperature_c + self._rng.gauss(0, 0.05)

    def pressure_mbar(self) -> float:
        with self._lock:
            self.advance()
            vapour = sum(cell.vapour_mbar() for cell in self.cells.values())
            outgassing = 1e-10 * math.exp((self.substrate_c - AMBIENT_C) / 150.0)
            return self._noisy(self.base_mbar + vapour + outgassing)

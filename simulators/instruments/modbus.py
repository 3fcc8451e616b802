"""The ``modbus`` driver's simulator: a device whose registers hold named values from a register map.

:class:`MappedDevice` encodes each value exactly as the driver decodes it; :data:`DEMO_CHANNELS`
is the map of ``configs/examples/modbus.yaml`` (what ``simulate modbus`` serves by default) and
:func:`device_for` fills a device from any ``modbus`` instrument's options.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.drivers.common.modbus_codec import RegisterSpec
from bridge.drivers.modbus.driver import ModbusOptions
from simulators.serving.register_device import TABLES, Clock, RegisterDevice, Source

log = logging.getLogger("simulators.modbus")


@dataclass
class Point:
    """One named value of a :class:`MappedDevice`."""

    name: str
    spec: RegisterSpec
    value: float
    source: Source | None = None


class MappedDevice(RegisterDevice):
    """A device whose registers hold named values from a register map (``RegisterSpec`` each).

    Values are encoded exactly as the ``modbus`` driver decodes them (type, word and byte order,
    scale, offset). Addresses between points are absent (exception 0x02) unless the hole is at
    most ``fill_gaps`` long. With ``wander`` > 0 numbers drift by that relative amplitude (a slow sine,
    period ``period`` seconds) so a standalone simulator looks alive; :meth:`set_source` lets a
    chamber model drive a value instead.
    """

    def __init__(self, points: Sequence[tuple[str, RegisterSpec, float]], unit: int = 1, *,
                 wander: float = 0.0, period: float = 60.0, fill_gaps: int = 0,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(unit, clock=clock)
        self.wander = wander
        self.period = period
        self._t0 = clock()
        self._points: dict[str, Point] = {}
        for name, spec, value in points:
            if name in self._points:
                raise ValueError(f"point {name!r} is defined twice")
            self._points[name] = Point(name, spec, value)
            self.define(spec.table, spec.address, spec.encode(value))
        # Spare addresses reading 0 in holes of up to ``fill_gaps`` between points, as in a
        # PLC's contiguous register block (so a driver's max_gap can read across them).
        for table in TABLES:
            used = self.defined(table)
            for low, high in itertools.pairwise(used):
                if 1 < high - low <= fill_gaps + 1:
                    self.define(table, low + 1, [0] * (high - low - 1))

    @property
    def names(self) -> list[str]:
        return list(self._points)

    def spec(self, name: str) -> RegisterSpec:
        return self._point(name).spec

    def set_value(self, name: str, value: float) -> None:
        """Hold ``name`` at ``value`` (engineering units, exact); ValueError if it does not fit."""
        with self._lock:
            point = self._point(name)
            registers = point.spec.encode(value)  # refuses what the type cannot hold
            point.value, point.source = value, None
            self.set(point.spec.table, point.spec.address, registers)

    def set_source(self, name: str, source: Source | None) -> None:
        """Let ``source()`` give the value of ``name`` at every request (None: back to held)."""
        with self._lock:
            self._point(name).source = source

    def value(self, name: str) -> float:
        """The engineering value the registers of ``name`` hold now."""
        with self._lock:
            self.update(self._clock())
            point = self._point(name)
            return float(point.spec.measurement(self.get(point.spec.table, point.spec.address,
                                                          point.spec.count)).value or 0.0)

    def update(self, now: float) -> None:
        factor = 1.0 + self.wander * math.sin(2 * math.pi * (now - self._t0) / self.period)
        for point in self._points.values():
            if point.source is not None:
                value = point.source()
            elif point.spec.type != "bool" and self.wander:
                value = point.value * factor
            else:
                continue
            try:
                self.set(point.spec.table, point.spec.address, point.spec.encode(value))
            except ValueError:
                log.warning("%s: %r does not fit %s; register unchanged", point.name, value, point.spec.type)

    def _point(self, name: str) -> Point:
        try:
            return self._points[name]
        except KeyError:
            raise KeyError(f"no point {name!r} (known: {', '.join(self._points)})") from None


#: A chamber PLC (the example config's map): every type, both word orders, scaled values, bits, and
#: the typed channels (an integer counter, a pump mode as an enum, an alarm word of named bits).
DEMO_CHANNELS: list[dict[str, Any]] = [
    {"name": "chamber_pressure", "table": "input", "address": 0, "type": "float32", "units": "mbar"},
    {"name": "cooling_flow", "table": "input", "address": 2, "type": "uint16", "scale": 0.1, "units": "l/min"},
    {"name": "water_temperature", "table": "input", "address": 3, "type": "int16", "scale": 0.1, "units": "degC"},
    {"name": "rotation_count", "table": "holding", "address": 10, "type": "uint32", "word_order": "little",
     "channel_type": "int"},
    {"name": "heater_setpoint", "table": "holding", "address": 20, "type": "float32", "word_order": "little",
     "units": "degC"},
    {"name": "valve_position", "table": "holding", "address": 22, "type": "int16", "byte_order": "little",
     "scale": 0.01, "units": "%"},
    {"name": "gas_flow", "table": "holding", "address": 24, "type": "float64", "units": "sccm"},
    {"name": "stage_offset", "table": "holding", "address": 28, "type": "int32", "scale": 0.001,
     "offset": -10.0, "units": "mm"},
    {"name": "pump_mode", "table": "holding", "address": 30, "type": "uint16",
     "map": {0: "off", 1: "standby", 2: "running"}},
    {"name": "alarms", "table": "holding", "address": 31, "type": "uint16",
     "bits": {0: "overtemperature", 1: "door open", 2: "water flow low"}},
    {"name": "shutter_open", "table": "coil", "address": 0, "type": "bool"},
    {"name": "interlock_ok", "table": "discrete", "address": 0, "type": "bool"},
]
DEMO_VALUES: dict[str, float] = {
    "chamber_pressure": 2.5e-7, "cooling_flow": 12.3, "water_temperature": 18.7, "rotation_count": 123456,
    "heater_setpoint": 650.0, "valve_position": 42.5, "gas_flow": 20.5, "stage_offset": -2.5,
    "pump_mode": 2, "alarms": 0b010, "shutter_open": 0, "interlock_ok": 1,
}
DEMO_OPTIONS: dict[str, Any] = {"channels": DEMO_CHANNELS, "max_gap": 8}


def demo_device(unit: int = 1, *, wander: float = 0.0) -> MappedDevice:
    """The demo map with its values (what ``simulate modbus`` serves by default)."""
    return device_for(ModbusOptions.model_validate(DEMO_OPTIONS), DEMO_VALUES, unit, wander=wander)


def device_for(options: ModbusOptions, values: dict[str, float], unit: int, *, wander: float = 0.0,
               strict: bool = False) -> MappedDevice:
    """A device holding every channel of ``options``: ``values`` where given, else a number
    that fits the channel's type (1, 2, 3... by position; bits 0; the first raw value of a
    ``map``, so an enum reads as one of its words). ``strict``: a given value
    that the channel's type cannot hold is a ValueError, not replaced. Holes up to the
    options' ``max_gap`` read as spare registers, so the planned reads succeed."""
    points = []
    for i, channel in enumerate(options.channels):
        spec = channel.spec
        default = next(iter(channel.map)) if channel.map else 0.0 if spec.type == "bool" else float(i + 1)
        value = values.get(channel.name, default)
        try:
            spec.encode(value)
        except ValueError:
            if strict and channel.name in values:
                raise ValueError(f"{channel.name}: {value:g} does not fit {spec.type}") from None
            value = spec.offset  # raw 0 fits every type
        points.append((channel.name, spec, value))
    return MappedDevice(points, unit, wander=wander, fill_gaps=options.max_gap)

"""``bridge.units``: every pressure and temperature converted to one unit before it is logged (docs/units.md).

A gauge controller switched from mbar to Torr in the middle of a run would otherwise give a run
whose values jump by a factor of 0.75 with nothing but the unit to say why. With
``bridge.units: {pressure: mbar}`` the bridge converts each reading at the edge, once, with the
vocabulary's table (:func:`bridge.units.convert`); the instrument's own unit stays in its
configuration snapshot (the ``baseline`` entries), so the record says what the controller showed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from bridge import units
from bridge.model import Reading, ValueType


class UnitConversion:
    """Converts readings whose unit is of a kind in ``targets`` (kind -> symbol); others pass as they are."""

    def __init__(self, targets: Mapping[str, str]) -> None:
        self.targets = dict(targets)

    def __bool__(self) -> bool:
        return bool(self.targets)

    def apply(self, reading: Reading) -> Reading:
        """``reading`` in the target unit of its kind; a reading without a value gets the unit only.

        Only float channels are magnitudes: a typed channel (a count, a state, a set of bits,
        docs/payload.md "Value types") keeps its value and its unit, whatever the unit says."""
        if reading.type is not ValueType.FLOAT:
            return reading
        unit = units.lookup(reading.units)
        if unit is None:
            return reading
        target = self.targets.get(unit.kind)
        if target is None or target == unit.symbol:
            return reading
        value = reading.value
        if value is None:
            return replace(reading, units=target)
        return replace(reading, value=units.convert(float(value), unit.symbol, target), units=target)

    def apply_all(self, readings: list[Reading]) -> list[Reading]:
        return [self.apply(r) for r in readings] if self.targets else readings

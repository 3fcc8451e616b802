"""``bridge.units`` at the edge (bridge/edge/conversion.py): the readings a bridge logs, converted."""

from __future__ import annotations

import pytest

from bridge.config import UnitsConfig
from bridge.edge.conversion import UnitConversion
from bridge.model import Quality, Reading, ValueType

T = 1_790_000_000.0


def r(value: float | None, units: str, quality: Quality = Quality.OK) -> Reading:
    return Reading("gauge", "pressure_1", value, quality, T, units, "" if value is not None else "gauge off")


def test_pressures_and_temperatures_go_to_the_configured_units() -> None:
    conversion = UnitConversion(UnitsConfig(pressure="mbar", temperature="degC").targets())
    torr = conversion.apply(r(1.0, "Torr"))
    assert (torr.value, torr.units, torr.channel, torr.timestamp) == (pytest.approx(1.33322368421), "mbar",
                                                                       "pressure_1", T)
    assert conversion.apply(r(212.0, "degF")).value == pytest.approx(100.0)
    assert conversion.apply(r(300.0, "K")).value == pytest.approx(26.85)
    assert conversion.apply(r(20.0, "mTorr")).value == pytest.approx(0.0266644736842)
    same = r(1e-7, "mbar")
    assert conversion.apply(same) is same


def test_what_it_cannot_convert_passes_unchanged_and_a_status_keeps_no_value() -> None:
    conversion = UnitConversion({"pressure": "Pa"})
    off = conversion.apply(r(None, "Torr", Quality.SENSOR_OFF))
    assert (off.value, off.units, off.quality, off.detail) == (None, "Pa", Quality.SENSOR_OFF, "gauge off")
    for unchanged in (r(2.5, "V"), r(25.0, "degC"), r(3.0, "arb"), r(1.0, "")):
        assert conversion.apply(unchanged) is unchanged
    assert conversion.apply(r(1.0, "°C")).units == "°C"  # a kind not configured keeps even its spelling
    nothing = UnitConversion({})
    readings = [r(1.0, "Torr")]
    assert not nothing and nothing.apply_all(readings) is readings


def test_typed_channels_are_never_converted_whatever_their_unit_says() -> None:
    """Only a float is a magnitude: an int, a bool or a set of bits keeps its value and unit, bad or ok."""
    conversion = UnitConversion({"pressure": "mbar", "temperature": "degC"})
    typed = [Reading("plc", "setpoint_step", 3, Quality.OK, T, "Torr", type=ValueType.INT),
             Reading("plc", "overtemp", True, Quality.OK, T, "degF", type=ValueType.BOOL),
             Reading("plc", "interlocks", 5, Quality.OK, T, "K", "door, water", ValueType.BITS),
             Reading("plc", "setpoint_step", None, Quality.INVALID, T, "Torr", "refused", ValueType.INT)]
    assert [conversion.apply(reading) for reading in typed] == typed
    assert conversion.apply(r(760.0, "Torr")).value == pytest.approx(1013.25)  # the float beside them is

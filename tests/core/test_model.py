"""Readings, their quality and their types (bridge/model.py), and how a driver's declared type is
enforced on every reading it makes (bridge/drivers/base.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from bridge.drivers.base import Channel, Driver, DriverOptions
from bridge.errors import ProtocolError
from bridge.model import (
    BOOL,
    FLOAT,
    INT,
    INT_LIMIT,
    ChannelType,
    Measurement,
    Quality,
    Reading,
    ValueType,
    bits_type,
    enum_type,
    string_type,
    value_fits,
)

STATUS = bits_type({0: "alarm 1", 5: "sensor break", 10: "PV out of range"})


@pytest.mark.parametrize(("kind", "good", "bad"), [
    (ValueType.FLOAT, [0.0, -1.5e-9, 1e300], [1, True, "1", float("nan"), float("inf"), None]),
    (ValueType.INT, [0, -5, INT_LIMIT, -INT_LIMIT], [1.0, True, INT_LIMIT + 1, "3"]),
    (ValueType.BITS, [0, 33, INT_LIMIT], [-1, 1.0, False, INT_LIMIT + 1]),
    (ValueType.BOOL, [True, False], [0, 1, 1.0, "ON"]),
    (ValueType.ENUM, ["CV", ""], [1, True, None]),
    (ValueType.STRING, ["GaN", "x" * 1000], [1.5, b"x"]),
])
def test_each_type_holds_exactly_its_python_type(kind: ValueType, good: list[Any], bad: list[Any]) -> None:
    assert all(value_fits(v, kind) for v in good), good
    assert not any(value_fits(v, kind) for v in bad), bad


def test_a_declared_type_checks_what_a_driver_read() -> None:
    assert FLOAT.check(5) == 5.0 and type(FLOAT.check(5)) is float  # a reply of "5" is a number
    assert INT.check(5) == 5 and BOOL.check(True) is True
    assert enum_type("CV", "CC").check("CC") == "CC"
    with pytest.raises(ValueError, match=r"'UR' is not one of the declared choices CV, CC"):
        enum_type("CV", "CC").check("UR")
    with pytest.raises(ValueError, match=r"1.0 is not of type bool"):
        BOOL.check(1.0)
    with pytest.raises(ValueError, match=r"is not of type int within \+-2\*\*53"):
        INT.check(2**60)
    with pytest.raises(ValueError, match=r"a string value must be printable text of at most 4 characters"):
        string_type(4).check("GaN-17")
    with pytest.raises(ValueError, match=r"printable"):
        string_type().check("a\x1b[2J")


def test_bits_name_their_set_bits_low_bit_first() -> None:
    assert STATUS.set_bits(0) == []
    assert STATUS.set_bits(1 << 0 | 1 << 5 | 1 << 11) == ["alarm 1", "sensor break", "bit 11"]
    assert STATUS.describe() == "bits (0 alarm 1, 5 sensor break, 10 PV out of range)"
    assert enum_type("CV", "CC").describe() == "enum (CV, CC)"
    assert string_type(64).describe() == "string (at most 64)"
    assert (FLOAT.describe(), INT.describe(), BOOL.describe()) == ("float", "int", "bool")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ChannelType(ValueType.ENUM), "needs its choices"),
    (lambda: enum_type("a", "a"), "lists a choice twice"),
    (lambda: ChannelType(ValueType.INT, choices=("a",)), "choices belong to an enum"),
    (lambda: ChannelType(ValueType.FLOAT, bits=((0, "a"),)), "named bits belong to a bits channel"),
    (lambda: bits_type({53: "x"}), r"bit 53: bits are numbered 0 \(the lowest\) to 52"),
    (lambda: bits_type({0: "x" * 41}), "the name of bit 0 must be printable text of at most 40"),
    (lambda: string_type(0), "max_length must be 1..256"),
    (lambda: enum_type("a\nb"), "an enum choice must be printable"),
])
def test_a_declaration_that_means_nothing_is_refused(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_reading_carries_its_type_and_a_value_of_it() -> None:
    on = Reading("psu", "output_1", True, Quality.OK, 1.0, "", type=ValueType.BOOL)
    assert on.to_dict()["type"] == "bool" and "type" not in Reading("g", "p", 1e-7, Quality.OK, 1.0, "mbar").to_dict()
    assert Reading("g", "p", 5, Quality.OK, 1.0, "V").value == 5.0  # an int read as a number is a float
    off = Reading("psu", "mode", None, Quality.INVALID, 1.0, "", "not in the map", ValueType.ENUM)
    assert off.type is ValueType.ENUM and off.value is None
    with pytest.raises(ValueError, match=r"a reading of type bool cannot carry 1\.0"):
        Reading("psu", "output_1", 1.0, Quality.OK, 1.0, "", type=ValueType.BOOL)
    with pytest.raises(ValueError, match="must not carry a value"):
        Reading("psu", "output_1", False, Quality.SENSOR_OFF, 1.0, "", type=ValueType.BOOL)


# ---------------------------------------------------------------- the driver base enforces the declaration


class Fixed(Driver[None, DriverOptions]):
    """A driver whose channels return what the test put in :data:`ANSWERS`."""

    ANSWERS: ClassVar[dict[str, Measurement]] = {}

    @classmethod
    def channel_table(cls, options: Any) -> Sequence[Channel[Any]]:
        return [Channel("status", "", lambda d: cls.ANSWERS["status"], "", STATUS),
                Channel("output", "", lambda d: cls.ANSWERS["output"], "", BOOL),
                Channel("volts", "V", lambda d: cls.ANSWERS["volts"])]


def read(**answers: Measurement) -> dict[str, Reading]:
    Fixed.ANSWERS = answers
    return {r.channel: r for r in Fixed(None, DriverOptions(), "dev").read()}


def test_the_driver_base_types_each_reading_and_names_the_set_bits() -> None:
    readings = read(status=Measurement(33), output=Measurement(False), volts=Measurement(12))
    assert (readings["status"].type, readings["status"].value, readings["status"].detail) == (
        ValueType.BITS, 33, "alarm 1, sensor break")
    assert (readings["output"].type, readings["output"].value) == (ValueType.BOOL, False)
    assert (readings["volts"].type, readings["volts"].value, type(readings["volts"].value)) == (
        ValueType.FLOAT, 12.0, float)
    # a detail the driver gave is kept; a status without a value keeps its type
    readings = read(status=Measurement(1, detail="from the front panel"),
                    output=Measurement.status(Quality.NOT_READY), volts=Measurement(1.5))
    assert readings["status"].detail == "from the front panel"
    assert (readings["output"].value, readings["output"].type) == (None, ValueType.BOOL)


@pytest.mark.parametrize(("answers", "message"), [
    ({"output": Measurement(1.0)}, r"^dev: output: 1.0 is not of type bool"),
    ({"status": Measurement(-1)}, r"^dev: status: -1 is not of type bits"),
    ({"volts": Measurement("12 V")}, r"^dev: volts: '12 V' is not of type float"),
    ({"volts": Measurement(float("nan"))}, r"^dev: volts: a reading of type float cannot carry nan"),
])
def test_a_value_that_does_not_fit_the_declaration_is_a_protocol_error_naming_the_channel(
        answers: dict[str, Measurement], message: str) -> None:
    fine = {"status": Measurement(0), "output": Measurement(True), "volts": Measurement(1.0)}
    with pytest.raises(ProtocolError, match=message):
        read(**{**fine, **answers})

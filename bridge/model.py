"""Readings, their quality and the type of their values.

A reading whose quality is not ``ok`` never carries a value: a gauge that is off has no
pressure, and publishing its filler value (or 0, or the last value) would put a fake point
into a growth record.

Most channels are numbers (``float``, the default); some are not, and forcing them into a
float loses what they mean: a supply's output is on or off (``bool``), a controller's status
word is a set of named bits (``bits``), an operating mode is one of a few words (``enum``), a
counter is an integer (``int``), a recipe name is text (``string``). The driver declares a
channel's type next to its unit (:class:`ChannelType`); each reading carries the type's name
(:class:`ValueType`) so every stage after the driver keeps the value as it was read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final


class Quality(StrEnum):
    """What the instrument says about a value, in one vocabulary for gauges and pyrometers."""

    OK = "ok"
    UNDER_RANGE = "under_range"
    OVER_RANGE = "over_range"
    SENSOR_OFF = "sensor_off"
    SENSOR_ERROR = "sensor_error"
    NO_SENSOR = "no_sensor"
    ID_ERROR = "id_error"
    NOT_READY = "not_ready"
    AIMING_LIGHT = "aiming_light"
    INVALID = "invalid"


class ValueType(StrEnum):
    """What kind of value a channel holds; ``float`` unless its driver says otherwise."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    ENUM = "enum"
    STRING = "string"
    BITS = "bits"


#: what an ok reading holds: a number, an integer (``int``, ``bits``), a truth value, a text
Value = float | int | bool | str

#: integers (``int`` and ``bits``) lie within +-2**53: every stage that holds numbers as doubles
#: (the spool's REAL column, JSON, a Parquet float column, a plot) keeps them exact
INT_LIMIT: Final = 2**53
#: the longest text an ``enum`` member or a ``string`` value may be, in characters
STRING_MAX: Final = 256
#: the longest ``detail`` a reading may carry, in characters (the wire contract refuses longer ones)
DETAIL_MAX: Final = 500
#: the longest name of one bit of a ``bits`` channel
BIT_NAME_MAX: Final = 40

#: the Python type each value type holds (a bool is not an int here, nor an int a float)
_PYTHON_TYPES: Final[dict[ValueType, type]] = {
    ValueType.FLOAT: float, ValueType.INT: int, ValueType.BOOL: bool, ValueType.ENUM: str,
    ValueType.STRING: str, ValueType.BITS: int,
}


def value_fits(value: object, kind: ValueType) -> bool:
    """Whether ``value`` is of the Python type ``kind`` holds (exactly: a bool is no int, an int no float)."""
    if type(value) is not _PYTHON_TYPES[kind]:
        return False
    if kind is ValueType.INT:
        return -INT_LIMIT <= value <= INT_LIMIT  # type: ignore[operator]  # an int, checked above
    if kind is ValueType.BITS:
        return 0 <= value <= INT_LIMIT  # type: ignore[operator]
    if kind is ValueType.FLOAT:
        return math.isfinite(value)  # type: ignore[arg-type]  # a float, checked above
    return True


@dataclass(frozen=True, slots=True)
class ChannelType:
    """A channel's declared type: the kind, and what the kind needs to mean something.

    ``choices`` are the members of an ``enum`` (the only values it takes); ``bits`` names the
    bits of a ``bits`` channel (bit number, low bit 0, and its name); ``max_length`` bounds a
    ``string``. :meth:`check` turns what a driver read into the value a reading carries, or says
    why it does not fit.
    """

    kind: ValueType = ValueType.FLOAT
    choices: tuple[str, ...] = ()
    bits: tuple[tuple[int, str], ...] = ()
    max_length: int = STRING_MAX

    def __post_init__(self) -> None:
        if self.choices and self.kind is not ValueType.ENUM:
            raise ValueError(f"choices belong to an enum channel, not to a {self.kind} one")
        if self.kind is ValueType.ENUM:
            if not self.choices:
                raise ValueError("an enum channel needs its choices (the values it may take)")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"an enum lists a choice twice: {list(self.choices)}")
            for choice in self.choices:
                _check_text(choice, STRING_MAX, "an enum choice")
        if self.bits and self.kind is not ValueType.BITS:
            raise ValueError(f"named bits belong to a bits channel, not to a {self.kind} one")
        numbers = [bit for bit, _ in self.bits]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"a bit is named twice: {sorted(numbers)}")
        for bit, name in self.bits:
            if type(bit) is not int or not 0 <= bit <= 52:
                raise ValueError(f"bit {bit!r}: bits are numbered 0 (the lowest) to 52")
            _check_text(name, BIT_NAME_MAX, f"the name of bit {bit}")
        if not 1 <= self.max_length <= STRING_MAX:
            raise ValueError(f"max_length must be 1..{STRING_MAX}, got {self.max_length}")

    def check(self, value: object) -> Value:
        """``value`` as this channel holds it; ValueError saying why it does not fit.

        An integer is taken for a ``float`` (a reply of ``5`` is 5.0); nothing else is converted:
        a driver that reads a bool where an int is declared has a bug worth hearing about.
        """
        kind = self.kind
        if kind is ValueType.FLOAT and type(value) is int and not isinstance(value, bool):
            value = float(value)
        if not value_fits(value, kind):
            raise ValueError(f"{value!r:.80} is not of type {kind}" + (
                " within +-2**53" if kind is ValueType.INT and type(value) is int else
                " within 0..2**53" if kind is ValueType.BITS and type(value) is int else ""))
        if kind is ValueType.ENUM and value not in self.choices:
            raise ValueError(f"{value!r:.80} is not one of the declared choices {', '.join(self.choices)}")
        if kind is ValueType.STRING:
            _check_text(value, self.max_length, "a string value")
        return value  # type: ignore[return-value]  # value_fits checked its type

    def set_bits(self, word: int) -> list[str]:
        """The names of the bits set in ``word``, low bit first (``bit 11`` for a bit without a name)."""
        names = dict(self.bits)
        return [names.get(bit, f"bit {bit}") for bit in range(word.bit_length()) if word >> bit & 1]

    def describe(self) -> str:
        """``float``, ``enum (CV, CC)``, ``bits (0 alarm 1, 5 sensor break)``, ``string (at most 64)``."""
        if self.kind is ValueType.ENUM:
            return f"enum ({', '.join(self.choices)})"
        if self.kind is ValueType.BITS and self.bits:
            return f"bits ({', '.join(f'{bit} {name}' for bit, name in self.bits)})"
        if self.kind is ValueType.STRING:
            return f"string (at most {self.max_length})"
        return self.kind.value


def enum_type(*choices: str) -> ChannelType:
    return ChannelType(ValueType.ENUM, choices=tuple(choices))


def bits_type(names: Mapping[int, str]) -> ChannelType:
    return ChannelType(ValueType.BITS, bits=tuple(sorted(names.items())))


def string_type(max_length: int = STRING_MAX) -> ChannelType:
    return ChannelType(ValueType.STRING, max_length=max_length)


FLOAT: Final = ChannelType()
INT: Final = ChannelType(ValueType.INT)
BOOL: Final = ChannelType(ValueType.BOOL)


def _check_text(text: object, max_length: int, what: str) -> None:
    if not isinstance(text, str) or not text.isprintable() or len(text) > max_length:
        raise ValueError(f"{what} must be printable text of at most {max_length} characters, got {text!r:.80}")


def _check_value_matches_quality(value: Value | None, quality: Quality) -> None:
    if quality is Quality.OK and value is None:
        raise ValueError("a value of quality ok needs a value")
    if quality is not Quality.OK and value is not None:
        raise ValueError(f"a value of quality {quality} must not carry a value")


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a driver extracts from one exchange: a value or a status, and the unit it is in.

    The value is of the type the channel declares (a float unless it says otherwise); the
    driver base checks it against the declaration when it makes the reading."""

    value: Value | None
    quality: Quality = Quality.OK
    units: str = ""
    detail: str = ""
    #: when the instrument produced it, if the driver knows better than the channel read
    #: (one exchange answering for several channels); None = stamp at the channel's read
    at: float | None = None

    def __post_init__(self) -> None:
        _check_value_matches_quality(self.value, self.quality)

    @classmethod
    def status(cls, quality: Quality, units: str = "", detail: str = "") -> Measurement:
        return cls(None, quality, units, detail)


@dataclass(frozen=True, slots=True)
class Reading:
    """One channel of one instrument at one instant (Unix seconds, taken at the exchange).

    ``type`` is the channel's value type; the value, when there is one, is of it."""

    instrument: str
    channel: str
    value: Value | None
    quality: Quality
    timestamp: float
    units: str
    detail: str = ""
    type: ValueType = ValueType.FLOAT

    def __post_init__(self) -> None:
        _check_value_matches_quality(self.value, self.quality)
        if self.type is ValueType.FLOAT and type(self.value) is int:  # 5 read as a number is 5.0
            object.__setattr__(self, "value", float(self.value))
        if self.value is not None and not value_fits(self.value, self.type):
            raise ValueError(f"a reading of type {self.type} cannot carry {self.value!r:.80}")

    @classmethod
    def of(cls, instrument: str, channel: str, m: Measurement, timestamp: float,
           kind: ValueType = ValueType.FLOAT) -> Reading:
        stamp = timestamp if m.at is None else m.at
        return cls(instrument, channel, m.value, m.quality, stamp, m.units, m.detail, kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "channel": self.channel,
            "value": self.value,
            "quality": str(self.quality),
            "timestamp": self.timestamp,
            "units": self.units,
            **({"detail": self.detail} if self.detail else {}),
            **({"type": self.type.value} if self.type is not ValueType.FLOAT else {}),
        }

"""Readings and their quality.

A reading whose quality is not ``ok`` never carries a number: a gauge that is off has no
pressure, and publishing its filler value (or 0, or the last value) would put a fake point
into a growth record.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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


def _check_value_matches_quality(value: float | None, quality: Quality) -> None:
    if quality is Quality.OK and value is None:
        raise ValueError("a value of quality ok needs a number")
    if quality is not Quality.OK and value is not None:
        raise ValueError(f"a value of quality {quality} must not carry a number")


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a driver extracts from one exchange: a value or a status, and the unit it is in."""

    value: float | None
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
    """One channel of one instrument at one instant (Unix seconds, taken at the exchange)."""

    instrument: str
    channel: str
    value: float | None
    quality: Quality
    timestamp: float
    units: str
    detail: str = ""

    def __post_init__(self) -> None:
        _check_value_matches_quality(self.value, self.quality)

    @classmethod
    def of(cls, instrument: str, channel: str, m: Measurement, timestamp: float) -> Reading:
        stamp = timestamp if m.at is None else m.at
        return cls(instrument, channel, m.value, m.quality, stamp, m.units, m.detail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "channel": self.channel,
            "value": self.value,
            "quality": str(self.quality),
            "timestamp": self.timestamp,
            "units": self.units,
            **({"detail": self.detail} if self.detail else {}),
        }

"""Text replies in, values out: the rules shared by every line-based instrument.

Pure functions only, so each rule is tested with exact strings and bytes. Used by the ``scpi``
and ``serial_ascii`` drivers (one query table, parsed the same way whatever the transport:
:mod:`bridge.drivers.common.query_table`) and by ``scpi_psu`` for its numbers.
"""

from __future__ import annotations

import math
import re

from bridge.errors import ProtocolError
from bridge.model import Measurement, Quality

#: A decimal number as instruments write it: optional sign, digits with an optional point,
#: optional exponent (SCPI NR1/NR2/NR3 and the plain forms of simple serial devices).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[Ee][+-]?\d+)?")

#: SCPI-99 (vol. 1, 7.2.1): +9.9E37 is "infinity" (over range), -9.9E37 minus infinity,
#: 9.91E37 "not a number". A meter in overload answers these instead of a reading.
SCPI_INFINITY = 9.9e37
SCPI_NAN = 9.91e37


def printable(frame: bytes) -> str:
    """The frame's text without control characters or non-ASCII noise from the line."""
    return "".join(chr(b) for b in frame if 0x20 <= b < 0x7F)


def encode_command(command: str, terminator: bytes) -> bytes:
    """``"T?"``, ``b"\\r"`` -> ``b"T?\\r"``; the command must be ASCII, as the wire is."""
    return command.encode("ascii") + terminator


def decode_reply(frame: bytes) -> str:
    """One received frame (terminator included) -> its text, trimmed of blanks and noise."""
    return printable(frame).strip()


def parse_number(text: str) -> float:
    """``"+1.23400000E+01"`` -> 12.34. The whole text must be one number (blanks aside)."""
    stripped = text.strip()
    if not _NUMBER.fullmatch(stripped):
        raise ProtocolError(f"not a number: {text!r}")
    return float(stripped)


def number_measurement(number: float, units: str, *, scale: float = 1.0, offset: float = 0.0) -> Measurement:
    """A parsed number as a measurement; SCPI's overload and not-a-number codes carry no value.

    The codes are recognised before scaling: they are markers, not magnitudes.
    """
    if math.isclose(abs(number), SCPI_NAN, rel_tol=1e-6):
        return Measurement.status(Quality.INVALID, units, "not a number (9.91E37)")
    if math.isclose(number, SCPI_INFINITY, rel_tol=1e-6):
        return Measurement.status(Quality.OVER_RANGE, units, "overload (+9.9E37)")
    if math.isclose(number, -SCPI_INFINITY, rel_tol=1e-6):
        return Measurement.status(Quality.UNDER_RANGE, units, "overload (-9.9E37)")
    return Measurement(number * scale + offset, Quality.OK, units)


#: an integer as instruments write it: decimal with an optional sign, or 0x / #H hexadecimal (SCPI)
_INTEGER = re.compile(r"[+-]?\d+|0[xX][0-9A-Fa-f]+|#[hH][0-9A-Fa-f]+")
#: SCPI booleans and the usual spellings of on and off (compared case-insensitively)
BOOLEANS: dict[str, bool] = {"0": False, "1": True, "+0": False, "+1": True, "OFF": False, "ON": True,
                             "FALSE": False, "TRUE": True}


def parse_integer(text: str) -> int:
    """``"+42"`` -> 42, ``"0x1F"`` and ``"#H1F"`` (SCPI hex) -> 31. The whole text must be one integer."""
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise ProtocolError(f"not an integer: {text!r}")
    if stripped[:2] in ("#h", "#H"):
        return int(stripped[2:], 16)
    return int(stripped, 16) if stripped[:2] in ("0x", "0X") else int(stripped)


def parse_bool(text: str) -> bool:
    """``0|1|ON|OFF|TRUE|FALSE`` (any case) -> False / True."""
    state = BOOLEANS.get(text.strip().upper())
    if state is None:
        raise ProtocolError(f"not a boolean (0|1|ON|OFF|TRUE|FALSE): {text!r}")
    return state


def extract(reply: str, pattern: re.Pattern[str]) -> str:
    """The text of the pattern's single group in ``reply`` (searched, not anchored)."""
    match = pattern.search(reply)
    if match is None:
        raise ProtocolError(f"reply {reply!r} does not match {pattern.pattern!r}")
    group = match.group(1)
    if group is None:
        raise ProtocolError(f"reply {reply!r} matches {pattern.pattern!r} but its group captured nothing")
    return group


def parse_reply(
    reply: str,
    *,
    pattern: re.Pattern[str] | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    units: str = "",
) -> Measurement:
    """A reply to a query as a measurement: the whole reply is the number, or the regex group is.

    Every failure quotes the reply, so a log line shows what the instrument really said.
    """
    text = reply if pattern is None else extract(reply, pattern)
    try:
        number = parse_number(text)
    except ProtocolError:
        if pattern is None:
            raise ProtocolError(f"reply {reply!r} is not a number") from None
        raise ProtocolError(f"captured {text!r} of reply {reply!r} is not a number") from None
    return number_measurement(number, units, scale=scale, offset=offset)


def regex_group_count(pattern: str) -> int:
    """Groups in a pattern; raises ValueError (for the config check) if it does not compile."""
    try:
        return re.compile(pattern).groups
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc

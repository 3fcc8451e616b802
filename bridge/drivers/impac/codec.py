"""IMPAC UPP ("Universal Pyrometer Protocol"), bytes in and values out (docs/protocols.md section 5.1).

Pure functions only, so every rule is tested with byte-exact frames. The transport, the
address and the recovery after a failed exchange live in ``driver.py``.

A request is ``AA`` (two-digit address) + two lowercase letters + an optional parameter + CR;
a reply is the data + CR and carries no address, so nothing in a frame tells which pyrometer
on a shared RS-485 line sent it: the driver must keep exchanges strictly one at a time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bridge.errors import ProtocolError
from bridge.model import Measurement, Quality

CR = b"\r"

#: highest address of a single pyrometer; 98 = global without reply, 99 = global with reply
MAX_ADDRESS = 97
GLOBAL_NO_REPLY = 98
GLOBAL_WITH_REPLY = 99

#: the unit vocabulary's symbols (docs/units.md): what the pyrometer calls °C and °F
CELSIUS = "degC"
FAHRENHEIT = "degF"

#: what newer firmware answers to an invalid command or parameter (older firmware: nothing)
REFUSAL = "no"
#: what a pure setting command answers (one manual shows an echo of the request instead [U])
ACCEPTED = "ok"

#: Special values of ``AAms``/``AAek`` (instead of a temperature). Their meanings differ by
#: model [M]; the detail says what they may mean so nobody reads them as a temperature.
SPECIAL_VALUES: dict[int, tuple[Quality, str]] = {
    77770: (Quality.NOT_READY,
            "77770: not ready - warm-up, sensor heating failed or internal temperature too high "
            "(the meaning varies per model, see its manual)"),
    88880: (Quality.OVER_RANGE, "88880: above the basic range or the set subrange"),
    80000: (Quality.AIMING_LIGHT, "80000: aiming laser on, no measurement (ISR 12-LO/GS)"),
    75550: (Quality.SENSOR_ERROR, "75550: measuring head too hot (Series 600)"),
    74440: (Quality.SENSOR_ERROR, "74440: measuring head too cold (Series 600)"),
}
#: from here on a raw value is a status code, never a temperature (NICOS: > 77769 is invalid)
FIRST_STATUS_CODE = 77770

#: ``AAez`` code -> t90 in seconds. Code 0 is the model's intrinsic response time (no number
#: given) and the rest of the table differs per model [U]: configurable in the driver options.
DEFAULT_EXPOSURE_TIMES: dict[int, float] = {1: 0.01, 2: 0.05, 3: 0.25, 4: 1.0, 5: 3.0, 6: 10.0}

#: ``AAfh`` answers: the code form is assumed (0 = °C, 1 = °F), the letter form tolerated [U]
_UNITS = {"0": CELSIUS, "C": CELSIUS, "1": FAHRENHEIT, "F": FAHRENHEIT}

_COMMAND = re.compile(r"[a-z]{2}")
_TEMPERATURE = re.compile(r"\d{5}")
#: two 5-digit fields, run together or with one separator (the layout is not documented [U])
_RATIO = re.compile(r"(\d{5})[ ,;]?(\d{5})")
_EMISSIVITY = re.compile(r"\d{4}")
_EXPOSURE = re.compile(r"\d{1,2}")
#: ``AAmb``: start and end of the basic range, 4 hex digits each [M]; in °C [U]
_RANGE = re.compile(r"([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})")

_LINE_HINT = " (line noise, or a baud/parity mismatch: IMPAC pyrometers talk 8E1)"


def _is_printable(byte: int) -> bool:
    return 0x20 <= byte < 0x7F


def encode_command(address: int, command: str, param: str = "") -> bytes:
    """``(1, "ms")`` -> ``b"01ms\\r"``; ``(0, "em", "0853")`` -> ``b"00em0853\\r"``."""
    if not 0 <= address <= GLOBAL_WITH_REPLY:
        raise ValueError(f"IMPAC address {address} outside 00-99")
    if not _COMMAND.fullmatch(command):
        raise ValueError(f"IMPAC command {command!r} is not two lowercase letters")
    if not all(_is_printable(ord(c)) for c in param):
        raise ValueError(f"IMPAC parameter {param!r} must be printable ASCII")
    return f"{address:02d}{command}{param}".encode("ascii") + CR


def show(request: bytes) -> str:
    """A request as it reads in messages: ``b"01ms\\r"`` -> ``01ms``."""
    return request.rstrip(CR).decode("ascii", errors="replace")


def _bad(frame: bytes, why: str) -> ProtocolError:
    """A ProtocolError quoting the frame; bytes outside printable ASCII hint at the line."""
    noisy = any(not _is_printable(b) for b in frame.rstrip(CR))
    return ProtocolError(f"{why} in IMPAC reply {frame!r}" + (_LINE_HINT if noisy else ""))


def reply_text(frame: bytes) -> str:
    """The data of a reply: CR removed, line noise *before* the data dropped.

    Noise after the first printable byte is an error, not something to skip: skipping bytes
    inside a reply could join two fragments into a number nobody sent.
    """
    body = frame.removesuffix(CR)
    start = 0
    while start < len(body) and not _is_printable(body[start]):
        start += 1
    body = body[start:]
    if not all(_is_printable(b) for b in body):
        raise _bad(frame, "non-ASCII bytes")
    return body.decode("ascii")


def _printable(frame: bytes) -> str:
    return "".join(chr(b) for b in frame if _is_printable(b))


def is_refusal(frame: bytes) -> bool:
    """``b"no\\r"``: newer firmware refusing a command or parameter."""
    return _printable(frame).strip().lower() == REFUSAL


def is_echo(frame: bytes, request: bytes) -> bool:
    """The request itself coming back: a 2-wire RS-485 adapter's local echo (or an echo-form reply)."""
    return _printable(frame) == _printable(request)


def setting_accepted(frame: bytes, request: bytes) -> bool:
    """``ok`` or the echo of the setting request: models differ in which they send [U]."""
    return _printable(frame).strip().lower() == ACCEPTED or is_echo(frame, request)


def decode_temperature(raw: int, units: str) -> Measurement:
    """A raw 5-digit value: tenths of a degree, or a special value that is no temperature."""
    if raw in SPECIAL_VALUES:
        quality, detail = SPECIAL_VALUES[raw]
        return Measurement.status(quality, units, detail)
    if raw >= FIRST_STATUS_CODE:
        return Measurement.status(Quality.INVALID, units, f"{raw}: unknown special value")
    return Measurement(raw / 10, Quality.OK, units)


def parse_temperature(frame: bytes, units: str) -> Measurement:
    """``AAms``: ``b"02563\\r"`` -> 256.3 in ``units``; ``b"88880\\r"`` -> over_range, no value."""
    text = reply_text(frame)
    if not _TEMPERATURE.fullmatch(text):
        raise _bad(frame, "expected 5 digits of temperature")
    return decode_temperature(int(text), units)


def parse_ratio(frame: bytes, units: str) -> tuple[Measurement, Measurement]:
    """``AAek``: ``b"0256302570\\r"`` -> (one-channel 256.3, ratio 257.0)."""
    match = _RATIO.fullmatch(reply_text(frame))
    if match is None:
        raise _bad(frame, "expected two 5-digit temperatures (one-channel, ratio)")
    one_channel, ratio = (decode_temperature(int(group), units) for group in match.groups())
    return one_channel, ratio


def parse_emissivity(frame: bytes) -> Measurement:
    """``AAem``: ``b"0970\\r"`` -> 0.970 (per mille on the wire)."""
    text = reply_text(frame)
    if not _EMISSIVITY.fullmatch(text):
        raise _bad(frame, "expected 4 digits of emissivity")
    per_mille = int(text)
    if per_mille > 1000:
        raise _bad(frame, f"emissivity {per_mille} per mille above 1000")
    return Measurement(per_mille / 1000, Quality.OK, "1")


def encode_emissivity(emissivity: float) -> str:
    """0.853 -> ``"0853"``, the parameter of ``AAem``."""
    per_mille = round(emissivity * 1000)
    if not 0 < per_mille <= 1000:
        raise ValueError(f"emissivity {emissivity} outside 0.001-1.000")
    return f"{per_mille:04d}"


def parse_exposure_code(frame: bytes) -> int:
    """``AAez``: ``b"3\\r"`` -> 3 (a code; what it means in seconds depends on the model)."""
    text = reply_text(frame)
    if not _EXPOSURE.fullmatch(text):
        raise _bad(frame, "expected an exposure time code")
    return int(text)


def exposure_time(code: int, table: Mapping[int, float]) -> Measurement:
    """The t90 of a code from the model's table; a code the table lacks has no number."""
    if code not in table:
        known = ", ".join(str(c) for c in sorted(table)) or "none"
        what = "the model's intrinsic response time" if code == 0 else "not in the table"
        return Measurement.status(
            Quality.INVALID, "s",
            f"exposure code {code} ({what}); codes with seconds: {known} - the table differs per model")
    return Measurement(table[code], Quality.OK, "s")


def parse_unit(frame: bytes) -> str:
    """``AAfh``: ``b"0\\r"`` -> ``degC``, ``b"1\\r"`` -> ``degF`` (letters C/F also accepted)."""
    text = reply_text(frame).strip().upper()
    if text not in _UNITS:
        raise _bad(frame, "unknown temperature unit code")
    return _UNITS[text]


def parse_range(frame: bytes) -> tuple[int, int]:
    """``AAmb``: ``b"00FA09C4\\r"`` -> (250, 2500), the basic range's start and end (taken as °C [U])."""
    match = _RANGE.fullmatch(reply_text(frame).strip())
    if match is None:
        raise _bad(frame, "expected 8 hex digits (range start, end)")
    low, high = (int(group, 16) for group in match.groups())
    return low, high


def parse_identity_text(frame: bytes) -> str:
    """``AAna``, ``AAsn``, ``AAve``: the text as sent; an empty reply is a protocol error."""
    text = reply_text(frame).strip()
    if not text:
        raise _bad(frame, "empty reply")
    return text

"""Pfeiffer TPG mnemonic protocol, bytes in and values out (docs/protocols.md section 1).

Pure functions only, so every rule is tested with byte-exact conversations. The transport and
the ACK/ENQ dialogue live in ``driver.py``.
"""

from __future__ import annotations

import re

from bridge.errors import ProtocolError
from bridge.model import Measurement, Quality

ETX = b"\x03"
ENQ = b"\x05"
ACK = b"\x06"
NAK = b"\x15"
LINE_END = b"\r\n"

#: status digit of PRn/PRX (manual BG 5195 BEN); anything but 0 means the number is filler
STATUS_QUALITY: dict[int, tuple[Quality, str]] = {
    0: (Quality.OK, ""),
    1: (Quality.UNDER_RANGE, "underrange"),
    2: (Quality.OVER_RANGE, "overrange"),
    3: (Quality.SENSOR_ERROR, "sensor error"),
    4: (Quality.SENSOR_OFF, "sensor off"),
    5: (Quality.NO_SENSOR, "no sensor"),
    6: (Quality.ID_ERROR, "identification error"),
}

#: ``UNI`` codes (0-2 on every TPG, 3-5 on the TPG 36x only) as the unit vocabulary's symbols
#: (docs/units.md): the 36x's "Micron" is a millitorr
UNITS: dict[int, str] = {0: "mbar", 1: "Torr", 2: "Pa", 3: "mTorr", 4: "hPa", 5: "V"}

#: ERROR word flags by position (the word is "0000" when all is well)
ERROR_FLAGS = ("controller error", "no hardware", "inadmissible parameter", "syntax error")

#: ``AYT`` fields of a TPG 36x, in order [C: the Krauth driver's names; values not captured]
AYT_FIELDS = ("model", "part_number", "serial", "firmware", "hardware")

_ERROR_WORD = re.compile(r"^[01]{4}$")
_NUMBER = re.compile(r"^[+\- ]?\d+(\.\d*)?([Ee][+\- ]?\d+)?$")


def encode_command(mnemonic: str, *params: int | str) -> bytes:
    """``PR1`` -> ``b"PR1\\r"``. CR only: LF is optional and garbles a TPG 36x RS-485 bus."""
    text = ",".join([mnemonic, *(str(p) for p in params)])
    return text.encode("ascii") + b"\r"


def printable(frame: bytes) -> str:
    """The frame's text without line end and without non-ASCII noise from the line."""
    return "".join(chr(b) for b in frame if 0x20 <= b < 0x7F)


def handshake(frame: bytes) -> bytes | None:
    """ACK or NAK if the frame is a handshake line, else None (a stale data line).

    Only the byte before the line end counts: a data line never ends in a control character,
    while noise or the tail of a half-received stream line may stand before a real ACK.
    """
    last = frame.rstrip(b"\r\n")[-1:]
    return last if last in (ACK, NAK) else None


def is_error_word(frame: bytes) -> bool:
    return bool(_ERROR_WORD.match(printable(frame)))


def decode_error_word(frame: bytes) -> list[str]:
    """``b"0001\\r\\n"`` -> ``["syntax error"]``; ``0000`` -> ``[]``."""
    word = printable(frame)
    if not _ERROR_WORD.match(word):
        raise ProtocolError(f"not a TPG error word: {frame!r}")
    return [flag for flag, bit in zip(ERROR_FLAGS, word, strict=True) if bit == "1"]


def describe_error_word(frame: bytes) -> str:
    flags = decode_error_word(frame)
    return ", ".join(flags) if flags else "no error flagged"


def _number(text: str, frame: bytes) -> float:
    text = text.strip()
    if not _NUMBER.match(text):
        raise ProtocolError(f"not a TPG number {text!r} in frame {frame!r}")
    return float(text.replace(" ", ""))


def _pair(status_text: str, number_text: str, units: str, frame: bytes) -> Measurement:
    status_text = status_text.strip()
    if len(status_text) != 1 or not status_text.isdigit() or int(status_text) not in STATUS_QUALITY:
        raise ProtocolError(f"unknown TPG status {status_text!r} in frame {frame!r}")
    quality, detail = STATUS_QUALITY[int(status_text)]
    if quality is not Quality.OK:
        # The number is filler or a limit: never publish it (docs/protocols.md 1.4).
        return Measurement.status(quality, units, detail)
    return Measurement(_number(number_text, frame), Quality.OK, units)


def parse_pressure(frame: bytes, units: str) -> Measurement:
    """``b"0,+1.2300E-07\\r\\n"`` -> 1.23e-7 in ``units`` (the controller's current unit)."""
    fields = printable(frame).split(",")
    if len(fields) != 2:
        raise ProtocolError(f"expected 'status,pressure', got {frame!r}")
    return _pair(fields[0], fields[1], units, frame)


def parse_all_pressures(frame: bytes, units: str) -> list[Measurement]:
    """PRX: ``x,sx.xxxxEsxx,y,sy.yyyyEsyy[,...]`` -> one measurement per channel."""
    fields = printable(frame).split(",")
    if len(fields) < 2 or len(fields) % 2:
        raise ProtocolError(f"expected status,pressure pairs, got {frame!r}")
    return [_pair(fields[i], fields[i + 1], units, frame) for i in range(0, len(fields), 2)]


def parse_unit(frame: bytes) -> str:
    """``b"1\\r\\n"`` -> ``"Torr"``."""
    text = printable(frame).strip()
    if not text.isdigit() or int(text) not in UNITS:
        raise ProtocolError(f"unknown TPG unit code in frame {frame!r}")
    return UNITS[int(text)]


def parse_ayt(frame: bytes) -> dict[str, str]:
    """``AYT`` (TPG 36x): ``b"TPG362,PTG28290,44990000,010100,010000\\r\\n"`` -> model, part number,
    serial, firmware, hardware. Fewer fields are kept as far as they go [C]; more are an error."""
    fields = [f.strip() for f in printable(frame).split(",")]
    if not fields[0] or len(fields) > len(AYT_FIELDS):
        raise ProtocolError(f"expected up to {len(AYT_FIELDS)} AYT fields (type, part number, serial, firmware, "
                            f"hardware), got {frame!r}")
    return {name: value for name, value in zip(AYT_FIELDS, fields, strict=False) if value}


def parse_firmware(frame: bytes) -> str:
    """``PNR``: the firmware number as the controller writes it (``b"BG5160-A\\r\\n"``)."""
    text = printable(frame).strip()
    if not text:
        raise ProtocolError(f"empty PNR reply {frame!r}")
    return text


def parse_gauge_ids(frame: bytes) -> list[str]:
    """``TID``: ``b"PKR,TPR\\r\\n"`` -> the gauge type per channel (``noSEn``: none, ``noid``: not identified)."""
    ids = [f.strip() for f in printable(frame).split(",")]
    if not all(ids):
        raise ProtocolError(f"expected gauge ids separated by commas, got {frame!r}")
    return ids

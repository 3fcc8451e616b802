"""TDK-Lambda Genesys GEN language, bytes in and values out (docs/protocols.md section 7.3).

Pure functions only: how a command goes on the wire (CR, the optional ``$XX`` checksum), how a
received frame is cleaned (SRQ bytes of a multi-drop line and LF dropped, the checksum checked)
and classified (a value, ``OK``, an error code, an SRQ message), and how each query's reply
decodes. The dialogue (``ADR n``, waiting, resynchronising) lives in ``driver.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from bridge.drivers.common.text_codec import parse_number
from bridge.errors import ProtocolError
from bridge.model import Measurement, Quality

CR = b"\r"
LF = 0x0A
#: addresses a supply can be given on its front panel
MIN_ADDRESS, MAX_ADDRESS = 0, 30
#: the acknowledgement of every setting, ``ADR n`` included, and of a lone CR
OK = "OK"
#: longest command the supply takes: a numeric argument may have 12 characters [M]
MAX_COMMAND = 24

#: unsolicited service-request bytes of a supply in multi-drop mode: ``100x xxxx`` (0x80 + address)
SRQ_FIRST, SRQ_LAST = 0x80, 0x9F
#: an SRQ sent as text outside multi-drop mode: ``!nn`` (GEN 750W manual) or ``Inn`` (GENH manual) [U]
_SRQ_TEXT = re.compile(r"[!I]\d{2}")
_CHECKSUM = re.compile(r"(.*)\$([0-9A-Fa-f]{2})", re.DOTALL)
_ERROR = re.compile(r"([CE])(\d{2})")

#: command errors (``Cnn``) and execution errors (``Enn``) as the manuals describe them [M]
ERRORS: dict[str, str] = {
    "C01": "illegal command or query",
    "C02": "missing parameter",
    "C03": "illegal parameter",
    "C04": "checksum error",
    "C05": "setting out of range",
    "E01": "voltage programmed above the rating or 95 % of the OVP",
    "E02": "voltage programmed below the UVL",
    "E04": "OVP programmed below the output voltage",
    "E06": "UVL programmed above the output voltage",
    "E07": "output ON refused during a fault shutdown",
}

#: Status Condition Register (``STAT?``, the ``SR`` of ``STT?``); bit 6 is spare [M]
STATUS_BITS: dict[int, str] = {
    0: "constant voltage (CV)",
    1: "constant current (CC)",
    2: "no fault (NFLT)",
    3: "fault (FLT)",
    4: "auto restart (AST)",
    5: "foldback enabled (FDE)",
    7: "local mode (LCL)",
}

#: Fault Condition Register (``FLT?``, the ``FR`` of ``STT?``); bit 0 is spare [M]
FAULT_BITS: dict[int, str] = {
    1: "AC fail (AC)",
    2: "over temperature (OTP)",
    3: "foldback tripped (FLD)",
    4: "over voltage (OVP)",
    5: "shut off by rear panel (SO)",
    6: "output off by front panel (OFF)",
    7: "enable open (ENA)",
}

MODES = ("CV", "CC", "OFF")
#: ``OUT?`` answers ON|OFF; 1|0 is accepted too [U]
_OUTPUT_STATES: dict[str, bool] = {"ON": True, "OFF": False, "1": True, "0": False}


class Quantity(StrEnum):
    """What the driver reads; the value is the channel name."""

    VOLTAGE = "voltage"
    CURRENT = "current"
    VOLTAGE_SETPOINT = "voltage_setpoint"
    CURRENT_SETPOINT = "current_setpoint"
    OVP = "ovp"
    UVL = "uvl"
    OUTPUT = "output"
    MODE = "mode"
    STATUS = "status"
    FAULT = "fault"


#: the query of each quantity when it is read on its own [M]
QUERIES: dict[Quantity, str] = {
    Quantity.VOLTAGE: "MV?",
    Quantity.CURRENT: "MC?",
    Quantity.VOLTAGE_SETPOINT: "PV?",
    Quantity.CURRENT_SETPOINT: "PC?",
    Quantity.OVP: "OVP?",
    Quantity.UVL: "UVL?",
    Quantity.OUTPUT: "OUT?",
    Quantity.MODE: "MODE?",
    Quantity.STATUS: "STAT?",
    Quantity.FAULT: "FLT?",
}

#: unit of each quantity; ``1`` for the dimensionless ones
UNITS: dict[Quantity, str] = {
    Quantity.VOLTAGE: "V", Quantity.CURRENT: "A", Quantity.VOLTAGE_SETPOINT: "V",
    Quantity.CURRENT_SETPOINT: "A", Quantity.OVP: "V", Quantity.UVL: "V",
    Quantity.OUTPUT: "1", Quantity.MODE: "1", Quantity.STATUS: "1", Quantity.FAULT: "1",
}

STATUS_QUERY = "STT?"
DISPLAY_QUERY = "DVC?"
#: what the two combined queries answer, field by field [M]
STATUS_FIELDS = (Quantity.VOLTAGE, Quantity.VOLTAGE_SETPOINT, Quantity.CURRENT, Quantity.CURRENT_SETPOINT,
                 Quantity.STATUS, Quantity.FAULT)
DISPLAY_FIELDS = (Quantity.VOLTAGE, Quantity.VOLTAGE_SETPOINT, Quantity.CURRENT, Quantity.CURRENT_SETPOINT,
                  Quantity.OVP, Quantity.UVL)
IDENTITY_QUERY = "IDN?"

#: ``MV(45.201),PV(45),MC(4.3257),PC(10),SR(30),FR(00)``, the manual's example
_STT = re.compile(r"\s*MV\((?P<mv>[^)]*)\)\s*,\s*PV\((?P<pv>[^)]*)\)\s*,\s*MC\((?P<mc>[^)]*)\)\s*,"
                  r"\s*PC\((?P<pc>[^)]*)\)\s*,\s*SR\((?P<sr>[^)]*)\)\s*,\s*FR\((?P<fr>[^)]*)\)\s*")
_HEX_BYTE = re.compile(r"[0-9A-Fa-f]{1,2}")


# ---------------------------------------------------------------- framing


def checksum(text: str) -> str:
    """Two upper-case hex digits, the low byte of the sum of the characters: ``STT?`` -> ``3A``."""
    return f"{sum(text.encode('ascii')) & 0xFF:02X}"


def encode(command: str, *, with_checksum: bool = False) -> bytes:
    """``"MV?"`` -> ``b"MV?\\r"``; with the checksum ``b"MV?$D8\\r"`` (nothing between ``$XX`` and CR)."""
    if not command or len(command) > MAX_COMMAND or not command.isascii() or not command.isprintable() \
            or "$" in command:
        raise ValueError(f"not a GEN command: {command!r}")
    text = f"{command}${checksum(command)}" if with_checksum else command
    return text.encode("ascii") + CR


def address_command(address: int) -> str:
    """``6`` -> ``"ADR 6"``, which selects one supply of the line until another ``ADR``."""
    if not MIN_ADDRESS <= address <= MAX_ADDRESS:
        raise ValueError(f"address {address} outside {MIN_ADDRESS}..{MAX_ADDRESS}")
    return f"ADR {address}"


def is_srq_byte(byte: int) -> bool:
    return SRQ_FIRST <= byte <= SRQ_LAST


class Kind(StrEnum):
    VALUE = "value"
    OK = "ok"
    ERROR = "error"
    SRQ = "srq"


@dataclass(frozen=True)
class Reply:
    """One received frame, cleaned: what it is and its text (checksum removed)."""

    kind: Kind
    text: str
    #: SRQ bytes found in the frame (multi-drop supplies asking for service), for the log
    srq: bytes = b""

    @property
    def error_code(self) -> str:
        """``"C01"`` of an error reply."""
        return self.text if self.kind is Kind.ERROR else ""


def decode(frame: bytes, *, with_checksum: bool = False) -> Reply:
    """A frame as read up to CR -> a :class:`Reply`.

    SRQ bytes (0x80-0x9F) and LF are dropped wherever they are: a multi-drop supply may send its
    SRQ in the middle of another's reply, and LF is ignored by the protocol. Noise around the
    text (other non-ASCII bytes) is dropped; noise inside it makes the reply garbled
    (ProtocolError), since a character lost from a number would change its value. With
    ``with_checksum`` a value or ``OK`` must carry a matching ``$XX``; an error code is accepted
    without one [U].
    """
    body = frame.removesuffix(CR)
    srq = bytes(b for b in body if is_srq_byte(b))
    kept = bytes(b for b in body if not is_srq_byte(b) and b != LF)
    text = _strip_noise(kept)
    if not all(0x20 <= b < 0x7F for b in text):
        raise ProtocolError(f"garbled reply {frame!r}")
    reply = text.decode("ascii").strip()
    match = _CHECKSUM.fullmatch(reply)
    if match is not None:
        body_text, received = match.groups()
        if received.upper() != checksum(body_text):
            raise ProtocolError(f"checksum ${received} does not match reply {body_text!r} "
                                f"(${checksum(body_text)} expected): {frame!r}")
        reply = body_text
    elif with_checksum and not _ERROR.fullmatch(reply) and not _SRQ_TEXT.fullmatch(reply):
        raise ProtocolError(f"reply without checksum in checksum mode: {frame!r}")
    return Reply(_kind(reply), reply, srq)


def _strip_noise(data: bytes) -> bytes:
    start, end = 0, len(data)
    while start < end and not 0x20 <= data[start] < 0x7F:
        start += 1
    while end > start and not 0x20 <= data[end - 1] < 0x7F:
        end -= 1
    return data[start:end]


def _kind(text: str) -> Kind:
    if text == OK:
        return Kind.OK
    if _ERROR.fullmatch(text):
        return Kind.ERROR
    if _SRQ_TEXT.fullmatch(text):
        return Kind.SRQ
    return Kind.VALUE


def error_reason(code: str) -> str:
    """``"C01"`` -> ``"C01 illegal command or query"``; codes not in the table are named as such."""
    return f"{code} {ERRORS.get(code, 'unknown error code')}"


# ---------------------------------------------------------------- values


def parse_output(text: str) -> bool:
    """``ON`` / ``OFF`` (``1`` / ``0`` accepted) -> True / False."""
    state = _OUTPUT_STATES.get(text.strip().upper())
    if state is None:
        raise ProtocolError(f"not an output state (ON|OFF): {text!r}")
    return state


def parse_mode(text: str) -> str:
    """``CV``, ``CC`` or ``OFF`` (output off or a fault shutdown)."""
    mode = text.strip().upper()
    if mode not in MODES:
        raise ProtocolError(f"not an operation mode (CV|CC|OFF): {text!r}")
    return mode


def parse_register(text: str) -> int:
    """A register as two hex digits: ``"30"`` -> 0x30 (48)."""
    stripped = text.strip()
    if not _HEX_BYTE.fullmatch(stripped):
        raise ProtocolError(f"not a register (two hex digits): {text!r}")
    return int(stripped, 16)


def parse_value(quantity: Quantity, text: str) -> Measurement:
    """The reply to ``quantity``'s query (or its field of a combined one) as a measurement."""
    units = UNITS[quantity]
    value: float | bool | str | int
    if quantity is Quantity.OUTPUT:
        value = parse_output(text)
    elif quantity is Quantity.MODE:
        value = parse_mode(text)
    elif quantity in (Quantity.STATUS, Quantity.FAULT):
        value = parse_register(text)
    else:
        try:
            value = parse_number(text)
        except ProtocolError:
            raise ProtocolError(f"{quantity.value} reply {text!r} is not a number") from None
    return Measurement(value, Quality.OK, units)


def parse_status(text: str) -> dict[Quantity, Measurement]:
    """``STT?``: ``MV(45.201),PV(45),MC(4.3257),PC(10),SR(30),FR(00)`` -> six measurements."""
    match = _STT.fullmatch(text)
    if match is None:
        raise ProtocolError(f"not an STT? reply (MV(..),PV(..),MC(..),PC(..),SR(..),FR(..)): {text!r}")
    return _fields(STATUS_FIELDS, match.group("mv", "pv", "mc", "pc", "sr", "fr"))


def parse_display(text: str) -> dict[Quantity, Measurement]:
    """``DVC?``: ``MV,PV,MC,PC,OVP,UVL``, six numbers -> six measurements."""
    fields = text.split(",")
    if len(fields) != len(DISPLAY_FIELDS):
        raise ProtocolError(f"not a DVC? reply (six numbers MV,PV,MC,PC,OVP,UVL): {text!r}")
    return _fields(DISPLAY_FIELDS, fields)


def _fields(quantities: tuple[Quantity, ...], texts: tuple[str, ...] | list[str]) -> dict[Quantity, Measurement]:
    return {q: parse_value(q, t) for q, t in zip(quantities, texts, strict=True)}


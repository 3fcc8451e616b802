"""MKS 937B (and 900-series) ``@aaa...;FF`` protocol, bytes in and values out (docs/protocols.md section 3).

Pure functions only, so every rule is tested with byte-exact conversations. The transport and the
dialogue (resync, retries, echo skipping) live in ``driver.py``.

The wire format: ``@<aaa><CMD>?;FF`` (query) or ``@<aaa><CMD>!<param>;FF`` (set), answered by
``@<aaa>ACK<resp>;FF`` or ``@<aaa>NAK<code>;FF``. There is no CR/LF; the three characters ``;FF``
end every message. Incoming frames are judged from their *last* ``@`` because the first characters
of a reply are lost on RS-485 without turnaround delay, and line noise may stand before a frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from bridge.errors import ProtocolError
from bridge.model import Measurement, Quality

TERMINATOR = b";FF"
#: 254 is "universal with reply" (any unit answers, from its own address); 255 is broadcast (no reply)
UNIVERSAL = 254
BROADCAST = 255

#: NAK codes as printed for the MKS 9xx family (946 manual; pymeasure confirms 152/160 for the 937B).
#: Which subset the 937B emits is not confirmed [U]; an unlisted code is reported by number.
NAK_CODES: dict[int, str] = {
    150: "WRONG_GAUGE",
    151: "NO_GAUGE",
    152: "NOT_IONGAUGE",
    153: "NOT_HOTCATHODE",
    154: "NOT_COLDCATHODE",
    155: "NOT_CAPACITANCE_MANOMETER",
    156: "NOT_PIRANI_OR_CTP",
    157: "NOT_PR_OR_CM",
    160: "UNRECOGNIZED_MSG",
    161: "SET_CMD_LOCK",
    162: "RLY_DIR_FIX_FOR_ION",
    163: "INVALID_CHANNEL",
    169: "INVALID_ARGUMENT",
    172: "VALUE_OUT_OF_RANGE",
    175: "CMD_QUERY_BYTE_INVALID",
    176: "NO_GAS_TYPE",
    177: "NOT_485",
    178: "CAL_DISABLED",
    179: "SET_POINT_NOT_ENABLED",
    181: "COMBINATION_DISABLED",
    182: "INTERNATIONAL_UNIT_ONLY",
    183: "GAS_TYPE_DEFINED",
    199: "PRESSURE_TOO_HIGH_FOR_DEGAS",
}

#: Status strings a pressure query returns instead of a number (EPICS aSub code, pychron,
#: PyExpLabSys). ``NOGAUGE`` (EPICS) and ``NO_GAUGE`` (pychron) disagree [U]: both are accepted.
STATUS_STRINGS: dict[str, Quality] = {
    "LO<E-11": Quality.UNDER_RANGE,
    "LO<E-04": Quality.UNDER_RANGE,
    "LO<E-03": Quality.UNDER_RANGE,
    "ATM": Quality.OVER_RANGE,
    "OFF": Quality.SENSOR_OFF,
    "RP_OFF": Quality.SENSOR_OFF,
    "CTRL_OFF": Quality.SENSOR_OFF,
    "PROT_OFF": Quality.SENSOR_OFF,
    "WAIT": Quality.NOT_READY,
    "MISCONN": Quality.SENSOR_ERROR,
    "NOGAUGE": Quality.NO_SENSOR,
    "NO_GAUGE": Quality.NO_SENSOR,
}

#: ``U?`` answers, case-insensitive (older pymeasure maps ``mBAR``; ``PA`` tolerated for 900-series).
#: ``U?`` answers as the unit vocabulary's symbols (docs/units.md): a "micron" is a millitorr
UNITS: dict[str, str] = {"TORR": "Torr", "MBAR": "mbar", "PASCAL": "Pa", "PA": "Pa", "MICRON": "mTorr"}

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([Ee][+-]?\d+)?$")
#: What may stand in a status field: printable, no separators (PRZ fields are blank-separated).
_STATUS_TOKEN = re.compile(r"^[A-Za-z<>_][!-~]*$")
_FRAME = re.compile(r"^@(?P<address>\d{3})(?P<kind>ACK|NAK)(?P<body>[ -~]*);FF$")
_NAK_BODY = re.compile(r"^\d*$")


def encode(address: int, command: str, param: str | None = None) -> bytes:
    """``(253, "PR1")`` -> ``b"@253PR1?;FF"``; ``(253, "U", "TORR")`` -> ``b"@253U!TORR;FF"``."""
    if not 1 <= address <= BROADCAST:
        raise ValueError(f"address {address} outside 1..255")
    if not re.fullmatch(r"[A-Z]+[0-9]*", command):
        raise ValueError(f"not an MKS command mnemonic: {command!r}")
    tail = "?" if param is None else f"!{param}"
    return f"@{address:03d}{command}{tail}".encode("ascii") + TERMINATOR


def printable(frame: bytes) -> str:
    """The frame's text without non-ASCII noise from the line."""
    return "".join(chr(b) for b in frame if 0x20 <= b < 0x7F)


def last_message(frame: bytes) -> bytes | None:
    """The frame from its last ``@`` on (what resync keeps), or None when no ``@`` is in it."""
    index = frame.rfind(b"@")
    return None if index < 0 else frame[index:]


@dataclass(frozen=True)
class Reply:
    """One well-formed answer: who sent it, ACK or NAK, and what follows the ACK/NAK."""

    address: int
    ack: bool
    body: str

    @property
    def nak_code(self) -> int | None:
        """The NAK code, None for an ACK and for a NAK without code (905 style ``@253NAK;FF``)."""
        if self.ack or not self.body:
            return None
        return int(self.body)


def parse_reply(frame: bytes) -> Reply:
    """``b"@253ACK1.10E-9;FF"`` -> ``Reply(253, True, "1.10E-9")``; noise before the last ``@`` is dropped."""
    message = last_message(frame)
    match = _FRAME.match(message.decode("ascii", "replace")) if message is not None else None
    if match is None:
        raise ProtocolError(f"not an MKS reply (@aaaACK...;FF or @aaaNAK...;FF): {frame!r}")
    ack = match["kind"] == "ACK"
    if not ack and not _NAK_BODY.match(match["body"]):
        raise ProtocolError(f"NAK without a numeric code in {frame!r}")
    return Reply(int(match["address"]), ack, match["body"])


class FrameKind(Enum):
    """How the driver treats one ``;FF``-terminated frame read after its request."""

    REPLY = "reply"  # ours: parse it
    ECHO = "echo"  # our own request, echoed by a 2-wire RS-485 adapter: skip
    FOREIGN = "foreign"  # a well-formed reply from another address: not ours, skip
    FRAGMENT = "fragment"  # no usable frame (first characters lost, noise): skip, remember


def classify(frame: bytes, request: bytes, address: int) -> tuple[FrameKind, Reply | None]:
    """Sort a frame read after ``request`` (sent to ``address``) into one of :class:`FrameKind`.

    A request to the universal address 254 is answered from the unit's own address, so then
    any address is ours (which is why 254 is only usable with one unit on the line).
    """
    message = last_message(frame)
    if message is None:
        return FrameKind.FRAGMENT, None
    if message == request:
        return FrameKind.ECHO, None
    try:
        reply = parse_reply(message)
    except ProtocolError:
        return FrameKind.FRAGMENT, None
    if address != UNIVERSAL and reply.address != address:
        return FrameKind.FOREIGN, reply
    return FrameKind.REPLY, reply


def nak_reason(code: int | None) -> str:
    """``160`` -> ``"NAK160 UNRECOGNIZED_MSG"``; None -> ``"NAK without code"``."""
    if code is None:
        return "NAK without code"
    return f"NAK{code} {NAK_CODES.get(code, 'unknown code')}"


def parse_pressure(text: str, units: str) -> Measurement:
    """One pressure field: a number in ``units``, or a status string mapped to a quality.

    The status string is kept in ``detail`` (``LO<E-11`` says which sensor range was left,
    ``RP_OFF`` who switched the gauge off). Variants seen in code are folded in: anything
    starting ``LO<`` is under range, anything starting ``>`` over range (PyExpLabSys). A
    token that is neither a number nor a known status is ``invalid``, still without a number:
    the status list is not confirmed for every firmware [U].
    """
    field = text.strip()
    if _NUMBER.match(field):
        return Measurement(float(field), Quality.OK, units)
    key = field.upper()
    quality = STATUS_STRINGS.get(key)
    if quality is None and key.startswith("LO<"):
        quality = Quality.UNDER_RANGE
    if quality is None and key.startswith(">"):
        quality = Quality.OVER_RANGE
    if quality is not None:
        return Measurement.status(quality, units, field)
    if _STATUS_TOKEN.match(field):
        return Measurement.status(Quality.INVALID, units, f"unknown status {field}")
    raise ProtocolError(f"not a pressure or status string: {text!r}")


def parse_all_pressures(text: str, units: str) -> list[Measurement]:
    """``PRZ?`` body: one field per channel, blank-separated (EPICS/ISIS code); commas tolerated [U]."""
    fields = [f for f in re.split(r"[\s,]+", text.strip()) if f]
    if not fields:
        raise ProtocolError(f"PRZ answered no fields: {text!r}")
    return [parse_pressure(f, units) for f in fields]


def parse_unit(text: str) -> str:
    """``"TORR"`` -> ``"Torr"``; ``MBAR``/``mBAR`` -> ``mbar``; ``PASCAL`` -> ``Pa``; ``MICRON`` -> ``mTorr``."""
    unit = UNITS.get(text.strip().upper())
    if unit is None:
        raise ProtocolError(f"unknown MKS unit {text!r} (expected TORR, MBAR, PASCAL or MICRON)")
    return unit


def parse_text(body: str) -> str:
    """A text answer (``SN?``, ``MT?``) as it came, blanks trimmed; an empty one is a protocol error."""
    text = body.strip()
    if not text or not text.isprintable():
        raise ProtocolError(f"expected a printable text answer, got {body!r}")
    return text

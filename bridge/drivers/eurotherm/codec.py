"""Eurotherm 2400/3200/3500 specifics over Modbus, registers in and values out (docs/protocols.md 6).

What is generic Modbus (float and integer decoding, read planning) comes from
``bridge.drivers.common.modbus_codec``; here only what Eurotherm defines: the parameter addresses per
family, loop 2 of the 3500, the IEEE float region, the display-resolution integers and the
instrument status word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.drivers.common import modbus_codec as modbus
from bridge.model import Measurement, Quality

Family = Literal["2400", "3200", "3500"]

#: Parameter addresses shared by every family (docs/protocols.md 6.2). PDU addresses: no -1.
PV = 1
TARGET_SETPOINT = 2
WORKING_SETPOINT = 5
STATUS_WORD = 75
#: identity and configuration (docs/protocols.md 6.2): the instrument identity, hex ``>2480`` on a
#: 2408 [U: the 2000-series comms handbook's table was not read directly]; the instrument version,
#: hex 0x0111 = V1.11 [M 3200]; the setpoint high and low limits [U]
INSTRUMENT_IDENTITY = 122
INSTRUMENT_VERSION = 107
SETPOINT_HIGH_LIMIT = 111
SETPOINT_LOW_LIMIT = 112

#: Loop 2 of a 3504 = loop-1 address + 1024 (DLS eurothermL2.template).
LOOP_OFFSET = 1024
#: IEEE region: parameter ``a`` as a float in the two registers at 0x8000 + 2a, high word first.
IEEE_BASE = 0x8000


@dataclass(frozen=True)
class FamilyMap:
    """Where a family keeps the parameters the driver reads."""

    name: Family
    #: the output power actually applied, in % (2400/3500: OP at 3; 3200: WRK.OP at 4, since
    #: its address 3 is MAN.OP, the manual output value, docs/protocols.md 6.6.7)
    output_power: int
    output_mnemonic: str
    loops: int


FAMILIES: dict[Family, FamilyMap] = {
    "2400": FamilyMap("2400", output_power=3, output_mnemonic="OP", loops=1),
    "3200": FamilyMap("3200", output_power=4, output_mnemonic="WRK.OP", loops=1),
    "3500": FamilyMap("3500", output_power=3, output_mnemonic="OP", loops=2),
}

#: Instrument status word (address 75) bits [C thaeber/eurothermlib]; bits 11 and 15 unnamed.
STATUS_BITS: dict[int, str] = {
    0: "alarm 1",
    1: "alarm 2",
    2: "alarm 3",
    3: "alarm 4",
    5: "sensor break",
    6: "loop break",
    7: "heater fail",
    8: "load fail",
    9: "program end",
    10: "PV out of range",
    12: "new alarm",
    13: "timer/ramp running",
    14: "remote SP fail",
}
SENSOR_BREAK = 5
PV_OUT_OF_RANGE = 10


def loop_address(address: int, loop: int) -> int:
    """A loop-1 parameter address for ``loop`` (1 or 2)."""
    if loop not in (1, 2):
        raise ValueError(f"loop {loop} is not 1 or 2")
    return address + LOOP_OFFSET * (loop - 1)


def ieee_address(address: int) -> int:
    """Register of the high word of parameter ``address`` in the IEEE region: 1 -> 0x8002."""
    register = IEEE_BASE + 2 * address
    if address < 0 or register + 1 > modbus.MAX_ADDRESS:
        raise ValueError(f"parameter {address} has no IEEE-region register")
    return register


def value_span(address: int, *, use_ieee: bool) -> modbus.Span:
    """The holding registers that carry parameter ``address`` in the chosen region."""
    if use_ieee:
        return modbus.Span("holding", ieee_address(address), 2)
    return modbus.Span("holding", address, 1)


def decode_value(registers: Sequence[int], *, use_ieee: bool, decimals: int = 0) -> float:
    """A parameter's number: an IEEE float (high word first), or a signed integer scaled by the
    display resolution (242 with one decimal = 24.2)."""
    if use_ieee:
        return float(modbus.decode(registers, "float32", word_order="big", byte_order="big"))
    return modbus.scaled(modbus.decode(registers, "int16"), 10.0**-decimals)


def encode_value(value: float, *, use_ieee: bool, decimals: int = 0) -> list[int]:
    """The registers a controller shows ``value`` in (for simulators and tests)."""
    if use_ieee:
        return modbus.encode(value, "float32")
    return modbus.encode(modbus.unscaled(value, 10.0**-decimals), "int16")


def status_word(registers: Sequence[int]) -> int:
    """The status word as an unsigned 16-bit number."""
    return int(modbus.decode(registers, "uint16"))


def status_flags(word: int, *, skip: Sequence[int] = ()) -> list[str]:
    """Names of the set bits, low bit first: ``0b100001`` -> ``["alarm 1", "sensor break"]``."""
    return [STATUS_BITS.get(bit, f"status bit {bit}") for bit in range(16)
            if word >> bit & 1 and bit not in skip]


def pv_measurement(value: float, word: int, units: str, at: float | None = None) -> Measurement:
    """The process value judged by the status word read in the same poll.

    Sensor break (bit 5) -> ``sensor_error``; PV out of range (bit 10) -> ``invalid``, since the
    bit does not say whether above or below the range; both carry no number (what the PV
    register holds then is not documented). Other set bits are named in ``detail``.
    """
    others = ", ".join(status_flags(word, skip=(SENSOR_BREAK, PV_OUT_OF_RANGE)))
    if word >> SENSOR_BREAK & 1:
        detail = "sensor break" + ("; PV out of range" if word >> PV_OUT_OF_RANGE & 1 else "")
        return Measurement(None, Quality.SENSOR_ERROR, units, _join(detail, others), at)
    if word >> PV_OUT_OF_RANGE & 1:
        return Measurement(None, Quality.INVALID, units, _join("PV out of range", others), at)
    return _with_detail(modbus.number_measurement(value, units, at), others)


def plain_measurement(value: float, word: int | None, units: str, at: float | None = None) -> Measurement:
    """Working setpoint or output power: the status does not invalidate them; set bits are named."""
    return _with_detail(modbus.number_measurement(value, units, at), ", ".join(status_flags(word or 0)))


def _with_detail(m: Measurement, detail: str) -> Measurement:
    if not detail:
        return m
    return Measurement(m.value, m.quality, m.units, _join(m.detail, detail), m.at)


def _join(first: str, second: str) -> str:
    return "; ".join(part for part in (first, second) if part)


def identity_text(registers: Sequence[int]) -> str:
    """The instrument identity register as the controller shows it: 0x2480 -> ``"2480"`` (hex digits)."""
    return f"{status_word(registers):04X}"


def version_text(registers: Sequence[int]) -> str:
    """The instrument version register: 0x0111 -> ``"1.11"`` (hex digits, major before the point)."""
    word = status_word(registers)
    return f"{word >> 8:X}.{word & 0xFF:02X}"

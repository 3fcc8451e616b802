"""Modbus register decoding and read planning, registers in and values out (docs/protocols.md 6, 8.1).

Pure functions only, shared by every Modbus driver (the generic ``modbus`` driver and
``eurotherm``) and by the simulators, so that one tested piece decides what two registers mean.
The dialogue (block reads, refusals) lives in :mod:`bridge.drivers.common.modbus_blocks`.

Word order and byte order are both explicit because devices disagree (docs/protocols.md 6.6.3):

* ``word_order``: ``big`` = the most significant register first (Modbus convention, Eurotherm's
  IEEE region); ``little`` = the least significant register first ("CDAB", many PLCs).
* ``byte_order``: ``big`` = high byte first inside each register (the Modbus standard);
  ``little`` = the two bytes of every register swapped ("BADC"/"DCBA").
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from bridge.errors import ProtocolError
from bridge.model import Measurement, Quality

Table = Literal["holding", "input", "coil", "discrete"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
ValueType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
Order = Literal["big", "little"]

REGISTER_TABLES: tuple[Table, ...] = ("holding", "input")
BIT_TABLES: tuple[Table, ...] = ("coil", "discrete")
REGISTER_TYPES: tuple[RegisterType, ...] = get_args(RegisterType)

#: Largest read the Modbus application protocol allows (v1.1b3, functions 03/04 and 01/02).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
MAX_ADDRESS = 0xFFFF

#: registers per value, and the struct code of its big-endian byte string
_LAYOUT: dict[RegisterType, tuple[int, str]] = {
    "int16": (1, "h"),
    "uint16": (1, "H"),
    "int32": (2, "i"),
    "uint32": (2, "I"),
    "float32": (2, "f"),
    "float64": (4, "d"),
}


def is_bit_table(table: Table) -> bool:
    return table in BIT_TABLES


def register_count(value_type: ValueType) -> int:
    """Addresses one value occupies: registers for numbers, one coil or input for ``bool``."""
    return 1 if value_type == "bool" else _LAYOUT[value_type][0]


def describe_registers(registers: Sequence[int]) -> str:
    """``[0x436A, 0x8000]``: how registers are quoted in error messages."""
    return "[" + ", ".join(f"0x{r:04X}" if 0 <= r <= 0xFFFF else repr(r) for r in registers) + "]"


def registers_to_bytes(registers: Sequence[int], *, word_order: Order = "big", byte_order: Order = "big") -> bytes:
    """Registers as the big-endian byte string of the value they hold."""
    words = list(registers)
    bad = [r for r in words if not (isinstance(r, int) and 0 <= r <= 0xFFFF)]
    if bad:
        raise ProtocolError(f"registers must be 16-bit values, got {describe_registers(words)}")
    if word_order == "little":
        words.reverse()
    return b"".join(w.to_bytes(2, byte_order) for w in words)


def bytes_to_registers(data: bytes, *, word_order: Order = "big", byte_order: Order = "big") -> list[int]:
    """The inverse of :func:`registers_to_bytes`."""
    if len(data) % 2:
        raise ValueError(f"{len(data)} bytes do not fill whole registers")
    words = [int.from_bytes(data[i : i + 2], byte_order) for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    return words


def decode(registers: Sequence[int], value_type: RegisterType, *, word_order: Order = "big",
           byte_order: Order = "big") -> int | float:
    """The raw number held by ``registers`` (no scale); NaN and infinities pass through.

    ``decode([0x436A, 0x8000], "float32") == 234.5`` (Eurotherm PV in the IEEE region).
    """
    count, code = _LAYOUT[value_type]
    if len(registers) != count:
        raise ProtocolError(f"{value_type} needs {count} register(s), got {describe_registers(registers)}")
    data = registers_to_bytes(registers, word_order=word_order, byte_order=byte_order)
    value: int | float = struct.unpack(">" + code, data)[0]
    if value_type == "float32":
        return shortest_float32(float(value))
    return value


def shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32: 0.1, not 0.10000000149011612.

    Both name the same 32 bits; the double expansion is an artefact of widening, and would
    show up in every published reading of a float32 register.
    """
    if not math.isfinite(value):
        return value
    exact = struct.pack(">f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == exact:
            return candidate
    return value


def encode(value: float, value_type: RegisterType, *, word_order: Order = "big",
           byte_order: Order = "big") -> list[int]:
    """Registers holding ``value``; integers are rounded, out-of-range values are refused."""
    _count, code = _LAYOUT[value_type]
    number: int | float = value if value_type.startswith("float") else round(value)
    try:
        data = struct.pack(">" + code, number)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit in {value_type}") from exc
    return bytes_to_registers(data, word_order=word_order, byte_order=byte_order)


def scaled(raw: float, scale: float = 1.0, offset: float = 0.0) -> float:
    """Engineering value = raw * scale + offset, without binary arithmetic noise.

    7499 * 0.001 - 10 is -2.5009999999999994 in doubles; 15 significant digits (more than any
    16- or 32-bit register holds) give -2.501. Unscaled values pass untouched.
    """
    if scale == 1 and offset == 0:
        return raw
    value = raw * scale + offset
    return float(f"{value:.15g}") if math.isfinite(value) else value


def unscaled(value: float, scale: float = 1.0, offset: float = 0.0) -> float:
    """Raw number for an engineering value (the simulator's direction)."""
    return (value - offset) / scale


def number_measurement(value: float, units: str, at: float | None = None) -> Measurement:
    """A decoded number as a measurement; NaN or infinity is a status, never a published number.

    Devices (and Eurotherm's IEEE region) use NaN for "no value"; a float that is not finite
    can neither be plotted nor trusted, so it becomes quality ``invalid``.
    """
    if math.isnan(value):
        return Measurement(None, Quality.INVALID, units, "not a number (NaN)", at)
    if math.isinf(value):
        return Measurement(None, Quality.INVALID, units, "infinite value", at)
    return Measurement(float(value), Quality.OK, units, "", at)


@dataclass(frozen=True)
class RegisterSpec:
    """Where one value lives and how to turn its registers (or bit) into an engineering value."""

    table: Table
    address: int
    type: ValueType
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    units: str = ""

    def __post_init__(self) -> None:
        if (self.type == "bool") != is_bit_table(self.table):
            raise ValueError(f"type {self.type} does not fit the {self.table} table")
        if not 0 <= self.address <= MAX_ADDRESS - self.count + 1:
            raise ValueError(f"{self.type} at {self.address} runs past address {MAX_ADDRESS}")

    @property
    def count(self) -> int:
        return register_count(self.type)

    @property
    def span(self) -> Span:
        return Span(self.table, self.address, self.count)

    def raw(self, values: Sequence[int] | Sequence[bool]) -> int | float:
        """The unscaled number: 0/1 for a bit, else the decoded registers."""
        if self.type == "bool":
            if len(values) != 1:
                raise ProtocolError(f"a {self.table} reads as one bit, got {list(values)}")
            return int(bool(values[0]))
        return decode([int(v) for v in values], self.type, word_order=self.word_order, byte_order=self.byte_order)

    def measurement(self, values: Sequence[int] | Sequence[bool], at: float | None = None) -> Measurement:
        raw = self.raw(values)
        value = float(raw) if self.type == "bool" else scaled(raw, self.scale, self.offset)
        return number_measurement(value, self.units, at)

    def encode(self, value: float) -> list[int]:
        """Registers (or the 0/1 bit) that read back as ``value``; for simulators and tests."""
        if self.type == "bool":
            return [1 if value else 0]
        return encode(unscaled(value, self.scale, self.offset), self.type,
                      word_order=self.word_order, byte_order=self.byte_order)


# ---------------------------------------------------------------- read planning


@dataclass(frozen=True, order=True)
class Span:
    """Consecutive addresses of one table that one value needs."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        """First address after the span."""
        return self.address + self.count


@dataclass(frozen=True)
class Block:
    """One read request, and which of the planned spans it answers (indexes into the input)."""

    table: Table
    address: int
    count: int
    members: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def covers(self, span: Span) -> bool:
        return span.table == self.table and self.address <= span.address and span.end <= self.end

    def part(self, values: Sequence[int] | Sequence[bool], span: Span) -> list[int] | list[bool]:
        """The values of ``span`` out of the values this block read."""
        if not self.covers(span):
            raise ValueError(f"{span} is not inside {self}")
        start = span.address - self.address
        return list(values[start : start + span.count])


def max_read(table: Table, max_registers: int = MAX_REGISTERS_PER_READ) -> int:
    return MAX_BITS_PER_READ if is_bit_table(table) else max_registers


def plan_blocks(spans: Sequence[Span], *, max_gap: int = 0, max_registers: int = MAX_REGISTERS_PER_READ,
                single: Collection[int] = ()) -> list[Block]:
    """The fewest reads that fetch every span, in table and address order.

    Spans of one table are merged while they overlap, touch, or leave a hole of at most
    ``max_gap`` unused addresses, and while the read stays within ``max_registers`` registers
    (2000 bits for coils and discrete inputs). Sorting by address and extending greedily gives
    the minimum number of reads for these rules. Spans whose index is in ``single`` are never
    merged (a block that a device refused is read span by span); identical spans share a read.
    """
    if max_gap < 0:
        raise ValueError("max_gap must not be negative")
    order = sorted(range(len(spans)), key=lambda i: (spans[i].table, spans[i].address, spans[i].end))
    blocks: list[Block] = []
    current: list[int] = []
    start = end = 0

    def close() -> None:
        if current:
            blocks.append(Block(spans[current[0]].table, start, end - start, tuple(current)))

    for i in order:
        span = spans[i]
        if span.count < 1 or span.count > max_read(span.table, max_registers):
            raise ValueError(f"{span} cannot be read in one request")
        if current:
            first = spans[current[0]]
            mergeable = (span.table == first.table and span.address <= end + max_gap
                         and max(end, span.end) - start <= max_read(span.table, max_registers))
            if i in single or current[0] in single:
                mergeable = mergeable and (span.table, span.address, span.end) == (first.table, start, end)
            if mergeable:
                current.append(i)
                end = max(end, span.end)
                continue
            close()
        current = [i]
        start, end = span.address, span.end
    close()
    return blocks

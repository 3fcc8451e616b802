"""Any Modbus device, from a register map in the config (Modbus TCP or RTU).

Every poll reads all channels through :class:`~bridge.drivers.common.modbus_blocks.BlockReader`:
the registers merged into as few reads as the protocol allows, a refused read split per channel
(the refused channels ``invalid``, the others their values), anything else raised for the poller.
Decoding (types, word and byte order, scale) is :mod:`bridge.drivers.common.modbus_codec`.

A channel is a float (raw * scale + offset) unless the map says otherwise: a coil or discrete
input is a ``bool``; ``map:`` turns a raw integer into a word (``enum``) or a truth value
(``bool``); ``bits:`` names the bits of a status register (``bits``); ``channel_type: int``
keeps an integer register an integer. (``type:`` is the register's encoding, as it always was.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bridge.drivers.base import Channel, DriverOptions, Scale, UnitSymbol, reads
from bridge.drivers.common import modbus_codec as codec
from bridge.drivers.common.modbus_blocks import BlockReader, ModbusDriver
from bridge.drivers.registry import register_driver
from bridge.model import BIT_NAME_MAX, STRING_MAX, ChannelType, Measurement, Quality, Value, ValueType
from bridge.names import NAME_PATTERN

log = logging.getLogger("bridge.drivers.modbus")

# ---------------------------------------------------------------- options


class RegisterChannel(BaseModel):
    """One entry of the register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    table: codec.Table
    #: default: ``bool`` for coil/discrete, ``uint16`` (the raw register) for holding/input
    type: codec.ValueType | None = Field(default=None, validate_default=True)
    address: Annotated[int, Field(ge=0, le=codec.MAX_ADDRESS)]
    word_order: codec.Order = "big"
    byte_order: codec.Order = "big"
    scale: Scale = Field(default=1.0, allow_inf_nan=False)
    offset: float = Field(default=0.0, allow_inf_nan=False)
    #: a symbol of the unit vocabulary (docs/units.md); ``1`` for a dimensionless value or a bit
    units: UnitSymbol = "1"
    #: the channel's value type (docs/payload.md); default: bool for a bit, from ``map``/``bits``, else float
    channel_type: Literal["float", "int", "bool", "enum", "bits"] | None = None
    #: raw integer (a bit: 0 or 1) -> value: all words (an enum) or all true/false (a bool)
    map: dict[int, Annotated[str, Field(min_length=1, max_length=STRING_MAX)] | bool] | None = Field(
        default=None, min_length=1, max_length=1000)
    #: bit number (0 = lowest) -> name: the register is a set of named bits
    bits: dict[Annotated[int, Field(ge=0, le=63)], Annotated[str, Field(min_length=1, max_length=BIT_NAME_MAX)]
               ] | None = Field(default=None, min_length=1)

    @field_validator("type")
    @classmethod
    def _type_fits_table(cls, v: codec.ValueType | None, info: ValidationInfo) -> codec.ValueType:
        table = info.data.get("table")
        if table is None:
            return v or "uint16"
        bits = codec.is_bit_table(table)
        if v is None:
            return "bool" if bits else "uint16"
        if bits and v != "bool":
            raise ValueError(f"a {table} holds one bit: type must be bool, not {v}")
        if not bits and v == "bool":
            raise ValueError(f"{table} registers hold numbers ({', '.join(codec.REGISTER_TYPES)}); "
                             "bits are read from coil or discrete")
        return v

    @field_validator("address")
    @classmethod
    def _fits_address_space(cls, v: int, info: ValidationInfo) -> int:
        value_type = info.data.get("type")
        if value_type is not None and v + codec.register_count(value_type) - 1 > codec.MAX_ADDRESS:
            raise ValueError(f"a {value_type} at {v} runs past the last address {codec.MAX_ADDRESS}")
        return v

    @model_validator(mode="after")
    def _bits_are_not_scaled(self) -> RegisterChannel:
        if self.type == "bool":
            misplaced = sorted({"word_order", "byte_order", "scale", "offset"} & self.model_fields_set)
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)} apply to registers, not to a {self.table} bit")
        return self

    @model_validator(mode="after")
    def _typed(self) -> RegisterChannel:
        """The value type the entry asks for, checked against its register: done once, at load."""
        kind = self.kind
        typed = kind is not ValueType.FLOAT
        if typed and self.type in ("float32", "float64"):
            raise ValueError(f"{_a(kind)} channel reads an integer: {self.type} registers hold floats")
        if typed and {"scale", "offset"} & self.model_fields_set and self.type != "bool":
            raise ValueError(f"scale and offset make a float; {_a(kind)} channel takes the raw integer")
        if self.map is not None:
            words = [v for v in self.map.values() if isinstance(v, str)]
            if words and len(words) != len(self.map):
                raise ValueError("map values are all words (an enum) or all true/false (a bool), not both")
            if kind not in (ValueType.ENUM, ValueType.BOOL) or (kind is ValueType.ENUM) != bool(words):
                raise ValueError(f"a map to {'words' if words else 'true/false'} makes "
                                 f"{'an enum' if words else 'a bool'} channel, not {_a(kind)} one")
        elif kind is ValueType.ENUM:
            raise ValueError("an enum channel needs a map from raw values to its words")
        if self.bits is not None:
            if kind is not ValueType.BITS:
                raise ValueError(f"bits name the bits of a bits channel, not of {_a(kind)} one")
            width = 16 * codec.register_count(self.type or "uint16")
            if max(self.bits) >= width:
                raise ValueError(f"bit {max(self.bits)} is past the {width} bits of a {self.type}")
        if kind is ValueType.BITS and self.type not in ("uint16", "uint32"):
            raise ValueError(f"a bits channel reads an unsigned register (uint16, uint32), not {self.type}")
        if kind is ValueType.BOOL and self.map is None and self.type != "bool" and self.channel_type != "bool":
            raise ValueError("a register read as bool needs channel_type: bool or a map")
        if self.type == "bool" and kind not in (ValueType.BOOL, ValueType.ENUM):
            raise ValueError(f"a {self.table} holds one bit: its channel is a bool (or an enum through a map)")
        return self

    @property
    def kind(self) -> ValueType:
        """The value type: as declared, else what ``map``/``bits`` or the table make it."""
        if self.channel_type is not None:
            return ValueType(self.channel_type)
        if self.map is not None:
            return ValueType.ENUM if any(isinstance(v, str) for v in self.map.values()) else ValueType.BOOL
        if self.bits is not None:
            return ValueType.BITS
        return ValueType.BOOL if self.type == "bool" else ValueType.FLOAT

    @cached_property
    def value_type(self) -> ChannelType:
        kind = self.kind
        if kind is ValueType.ENUM:
            assert self.map is not None
            return ChannelType(kind, choices=tuple(dict.fromkeys(str(v) for v in self.map.values())))
        return ChannelType(kind, bits=tuple(sorted((self.bits or {}).items())))

    def measurement(self, values: Sequence[int] | Sequence[bool], at: float) -> Measurement:
        """The registers (or bit) of one poll as this channel's value."""
        kind = self.kind
        if kind is ValueType.FLOAT:
            return self.spec.measurement(values, at)
        raw = int(self.spec.raw(values))
        value: Value
        if self.map is not None:
            if raw not in self.map:
                return Measurement(None, Quality.INVALID, self.units, f"raw value {raw} is not in the map", at)
            value = self.map[raw]
        elif kind is ValueType.BOOL:
            value = raw != 0
        else:
            value = raw
        return Measurement(value, Quality.OK, self.units, "", at)

    @cached_property
    def spec(self) -> codec.RegisterSpec:
        assert self.type is not None  # filled in by the validator
        return codec.RegisterSpec(self.table, self.address, self.type, self.word_order, self.byte_order,
                                  self.scale, self.offset, self.units)


class ModbusOptions(DriverOptions):
    channels: list[RegisterChannel] = Field(min_length=1)
    #: unused addresses a read may span to join two blocks (0: only adjacent or overlapping)
    max_gap: int = Field(default=0, ge=0, le=codec.MAX_REGISTERS_PER_READ - 1)
    #: largest register read; some devices take fewer than the protocol's 125
    max_registers: int = Field(default=codec.MAX_REGISTERS_PER_READ, ge=1, le=codec.MAX_REGISTERS_PER_READ)

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, v: list[RegisterChannel]) -> list[RegisterChannel]:
        seen: set[str] = set()
        for channel in v:
            if channel.name in seen:
                raise ValueError(f"channel name {channel.name!r} is used twice")
            seen.add(channel.name)
        return v


# ---------------------------------------------------------------- driver


@register_driver("modbus")
class ModbusRegisters(ModbusDriver[ModbusOptions]):
    """One channel per register-map entry, fetched in merged block reads every poll."""

    Options = ModbusOptions
    summary = "any Modbus device from a register map (int16..float64, word/byte order, scale, offset)"

    @classmethod
    def channel_table(cls, options: ModbusOptions) -> Sequence[Channel[ModbusRegisters]]:
        return [Channel(ch.name, ch.units, reads(cls.stored, ch.name), _describe(ch), ch.value_type)
                for ch in options.channels]

    def block_reader(self, unit: int | None) -> BlockReader:
        return BlockReader(self.transport, self.instrument, max_gap=self.options.max_gap,
                           max_registers=self.options.max_registers, unit=unit, log=log)

    def poll(self) -> dict[str, Measurement]:
        spans = [ch.spec.span for ch in self.options.channels]
        return {ch.name: f.measurement(ch.measurement, ch.spec.units)
                for ch, f in zip(self.options.channels, self.reader.read(spans), strict=True)}


def _a(kind: ValueType) -> str:
    """``an int``, ``a bool``: the type with its article, for messages."""
    return f"{'an' if kind.value[0] in 'aeiou' else 'a'} {kind.value}"


def _describe(ch: RegisterChannel) -> str:
    text = f"{ch.table} {ch.address} {ch.type}"
    if ch.type != "bool" and codec.register_count(ch.type or "uint16") > 1:
        text += f" word {ch.word_order}"
    if ch.type != "bool" and ch.byte_order != "big":
        text += f" byte {ch.byte_order}"
    if ch.scale != 1 or ch.offset != 0:
        text += f" *{ch.scale:g}{ch.offset:+g}"
    if ch.map is not None:
        text += " map " + ", ".join(f"{raw}={value}" for raw, value in ch.map.items())
    return text


"""Any Modbus device, from a register map in the config (Modbus TCP or RTU).

Every poll reads all channels through :class:`~bridge.drivers.common.modbus_blocks.BlockReader`:
the registers merged into as few reads as the protocol allows, a refused read split per channel
(the refused channels ``invalid``, the others their values), anything else raised for the poller.
Decoding (types, word and byte order, scale) is :mod:`bridge.drivers.common.modbus_codec`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bridge.drivers.base import Channel, DriverOptions, Scale, UnitSymbol, reads
from bridge.drivers.common import modbus_codec as codec
from bridge.drivers.common.modbus_blocks import BlockReader, ModbusDriver
from bridge.drivers.registry import register_driver
from bridge.model import Measurement
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
        return [Channel(ch.name, ch.units, reads(cls.stored, ch.name), _describe(ch)) for ch in options.channels]

    def block_reader(self, unit: int | None) -> BlockReader:
        return BlockReader(self.transport, self.instrument, max_gap=self.options.max_gap,
                           max_registers=self.options.max_registers, unit=unit, log=log)

    def poll(self) -> dict[str, Measurement]:
        spans = [ch.spec.span for ch in self.options.channels]
        return {ch.name: f.measurement(ch.spec.measurement, ch.spec.units)
                for ch, f in zip(self.options.channels, self.reader.read(spans), strict=True)}


def _describe(ch: RegisterChannel) -> str:
    text = f"{ch.table} {ch.address} {ch.type}"
    if ch.type != "bool" and codec.register_count(ch.type or "uint16") > 1:
        text += f" word {ch.word_order}"
    if ch.type != "bool" and ch.byte_order != "big":
        text += f" byte {ch.byte_order}"
    if ch.scale != 1 or ch.offset != 0:
        text += f" *{ch.scale:g}{ch.offset:+g}"
    return text


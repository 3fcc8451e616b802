"""Eurotherm 2400/3200/3500 temperature controllers over Modbus RTU or TCP (docs/protocols.md 6).

Every poll reads the instrument status word (integer region, address 75) and the loop's process
value, working setpoint and output power (IEEE float region by default, or display-resolution
integers), in as few requests as ``BlockReader`` can plan: two per poll. The status word
decides whether the PV can be trusted (sensor break, PV out of range), so it is read in every
poll, never taken from an earlier one; it is also a channel of its own, ``status``, a ``bits``
value whose bits carry their names (alarms, sensor break, PV out of range...). A parameter the
model does not have (exception 02) fails only its channel. The driver never writes: setpoints
live in EEPROM with a limited write life.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from bridge.drivers.base import Channel, DriverOptions, UnitSymbol, reads
from bridge.drivers.common.baseline import Baseline, BaselineReader
from bridge.drivers.common.modbus_blocks import BlockReader, Fetched, ModbusDriver
from bridge.drivers.eurotherm import codec
from bridge.drivers.registry import register_driver
from bridge.model import Measurement, Quality, bits_type
from bridge.transports.modbus import ModbusTransport

log = logging.getLogger("bridge.drivers.eurotherm")

#: PV, output power and working setpoint sit at parameters 1, 3 or 4, and 5: a read may span the
#: parameters in between (2 registers each in the IEEE region); should one of them be absent on a
#: model, the refused block is split per channel by BlockReader.
MAX_GAP = 4
#: the status word as a channel: its 16 bits, named where the manuals name them
STATUS_TYPE = bits_type(codec.STATUS_BITS)


class EurothermOptions(DriverOptions):
    #: the register map differs by family (3200 address 3 is the manual output, not OP)
    family: codec.Family
    #: control loop; loop 2 exists on a 3500 (3504) only, at loop-1 address + 1024
    loop: Literal[1, 2] = 1
    #: read floats from the IEEE region (0x8000 + 2 * address); False: scaled 16-bit integers
    use_ieee: bool = True
    #: decimals shown for PV and setpoint on the controller's display; required without IEEE
    decimals: int | None = Field(default=None, ge=0, le=3, validate_default=True)
    #: decimals of the output power in the integer region (0.1 % on the models seen) [U]
    power_decimals: int = Field(default=1, ge=0, le=3)
    #: unit of PV and setpoint (the controller does not tell over Modbus): a symbol of docs/units.md
    units: UnitSymbol = "degC"

    @field_validator("family", mode="before")
    @classmethod
    def _family_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("loop")
    @classmethod
    def _loop_exists(cls, v: int, info: ValidationInfo) -> int:
        family = info.data.get("family")
        if family is not None and v > codec.FAMILIES[family].loops:
            raise ValueError(f"a {family} has one loop; loop 2 exists on the 3500 only")
        return v

    @field_validator("decimals")
    @classmethod
    def _decimals_with_integers(cls, v: int | None, info: ValidationInfo) -> int | None:
        use_ieee = info.data.get("use_ieee", True)
        if v is None and not use_ieee:
            raise ValueError("use_ieee: false needs decimals, the display resolution set on the controller")
        if v is not None and use_ieee:
            raise ValueError("decimals only apply with use_ieee: false (IEEE floats carry their own)")
        return v


@register_driver("eurotherm")
class Eurotherm(ModbusDriver[EurothermOptions]):
    """PV (judged by the status word), working setpoint and output power of one loop."""

    Options = EurothermOptions
    summary = "Eurotherm 2400/3200/3500 controllers: PV, working setpoint, output power, status word"

    def __init__(self, transport: ModbusTransport, options: EurothermOptions, instrument: str, *,
                 unit: int | None = None) -> None:
        super().__init__(transport, options, instrument, unit=unit)
        self.family = codec.FAMILIES[options.family]
        loop = options.loop
        parameters = (codec.PV, codec.WORKING_SETPOINT, self.family.output_power)
        self.status_span = codec.value_span(codec.STATUS_WORD, use_ieee=False)
        self.value_spans = [codec.value_span(codec.loop_address(p, loop), use_ieee=options.use_ieee)
                            for p in parameters]

    @classmethod
    def channel_table(cls, options: EurothermOptions) -> Sequence[Channel[Eurotherm]]:
        family = codec.FAMILIES[options.family]
        loop = f"loop {options.loop}"
        return [
            Channel("pv", options.units, reads(cls.stored, "pv"), f"process value (PV), {loop}; status word checked"),
            Channel("working_setpoint", options.units, reads(cls.stored, "working_setpoint"),
                    f"working setpoint (wSP, read only), {loop}"),
            Channel("output_power", "%", reads(cls.stored, "output_power"),
                    f"output power ({family.output_mnemonic}, address {family.output_power}), {loop}"),
            Channel("status", "1", reads(cls.stored, "status"),
                    f"instrument status word (address {codec.STATUS_WORD}), the same for every loop",
                    STATUS_TYPE),
        ]

    # ---------------------------------------------------------- driver hooks

    def connect(self) -> None:
        # One short request proves the controller answers at this address before polling.
        self.reader.read([self.status_span])

    def baseline(self) -> Baseline:
        """Identity: the instrument identity (122 [U]) and version (107) registers. Configuration: the
        options that say how values are read (family, loop, units, region, decimals) and the setpoint
        limits (111/112 [U]). A register the model lacks (exception 02) is recorded and left out."""
        reader = BaselineReader(self.instrument)
        reader.set_identity(vendor="Eurotherm")
        use_ieee = self.options.use_ieee
        identity, version, high, low = self.reader.read([
            codec.value_span(codec.INSTRUMENT_IDENTITY, use_ieee=False),
            codec.value_span(codec.INSTRUMENT_VERSION, use_ieee=False),
            codec.value_span(codec.loop_address(codec.SETPOINT_HIGH_LIMIT, self.options.loop), use_ieee=use_ieee),
            codec.value_span(codec.loop_address(codec.SETPOINT_LOW_LIMIT, self.options.loop), use_ieee=use_ieee),
        ])
        for label, fetched, key, decode in (("identity (122)", identity, "instrument_id", codec.identity_text),
                                            ("version (107)", version, "firmware", codec.version_text)):
            if fetched.values is None:
                reader.errors[label] = fetched.refusal
            else:
                reader.set_identity(**{key: decode([int(v) for v in fetched.values])})
        reader.set_configuration(family=self.options.family, loop=self.options.loop, units=self.options.units,
                                 use_ieee=use_ieee, decimals=self.options.decimals)
        for label, fetched, key in (("setpoint high limit (111)", high, "setpoint_high"),
                                    ("setpoint low limit (112)", low, "setpoint_low")):
            if fetched.values is None:
                reader.errors[label] = fetched.refusal
            else:
                reader.set_configuration(**{key: self._value(fetched.values)})
        return reader.result()

    def block_reader(self, unit: int | None) -> BlockReader:
        return BlockReader(self.transport, self.instrument, max_gap=MAX_GAP, unit=unit, log=log)

    def poll(self) -> dict[str, Measurement]:
        status, *values = self.reader.read([self.status_span, *self.value_spans])
        word = None if status.values is None else codec.status_word([int(v) for v in status.values])
        pv, setpoint, power = values
        return {
            "pv": self._pv(pv, status, word),
            "working_setpoint": self._plain(setpoint, word, self.options.units),
            "output_power": self._plain(power, word, "%", power=True),
            "status": status.measurement(lambda _, at: Measurement(word, Quality.OK, "1", "", at), "1"),
        }

    # ---------------------------------------------------------- helpers

    def _decimals(self, power: bool = False) -> int:
        if self.options.use_ieee:
            return 0
        return self.options.power_decimals if power else self.options.decimals or 0

    def _pv(self, pv: Fetched, status: Fetched, word: int | None) -> Measurement:
        units = self.options.units
        if word is None:
            # Without the status word a sensor break cannot be ruled out: the PV is not trusted.
            return Measurement(None, Quality.INVALID, units, f"status word {status.refusal}", pv.at)
        return pv.measurement(
            lambda regs, at: codec.pv_measurement(self._value(regs), word, units, at), units)

    def _plain(self, fetched: Fetched, word: int | None, units: str, power: bool = False) -> Measurement:
        """Working setpoint or output power: the status names its set bits but judges only the PV."""
        return fetched.measurement(
            lambda regs, at: codec.plain_measurement(self._value(regs, power), word, units, at), units)

    def _value(self, registers: Sequence[int] | Sequence[bool], power: bool = False) -> float:
        return codec.decode_value([int(r) for r in registers], use_ieee=self.options.use_ieee,
                                  decimals=self._decimals(power))


"""Eurotherm 2400/3200/3500 controller: the Modbus register map with a heating loop behind it.

A :class:`~simulators.serving.register_device.RegisterDevice`, so it runs on a real pymodbus server
(:class:`~simulators.serving.modbus_server.DeviceServer`, Modbus TCP or RTU on a pty; several
controllers with their own unit ids on one RS-485 line) and in unit tests through ``serve``.
Protocol facts: docs/protocols.md section 6.

What it reproduces, and why:

* Every parameter in both regions: the integer region (16-bit signed, scaled by the display
  resolution :attr:`~EurothermSimulator.decimals`, 1 decimal for percentages) and the IEEE region
  (float at 0x8000 + 2 * address, high word first). A front-panel resolution change
  (``decimals``) shifts the integers by 10x and leaves the floats alone (docs/protocols.md 6.6.2).
* A family's own map: 2400/3500 OP at 3; 3200 MAN.OP at 3 and WRK.OP at 4; 3500 loop 2 at
  loop-1 address + 1024. Addresses a family does not document answer exception 0x02, and a
  block read that touches one fails as a whole (docs/protocols.md 6.6.5, 6.6.7).
* A PI loop per control loop (proportional band ``Pb``, integral time ``Ti``) driving a
  first-order heater: PV approaches the setpoint while the output power moves, with noise on
  the PV as read. :meth:`~EurothermSimulator.set_pv_source` lets a chamber model give the PV
  (e.g. an effusion cell's temperature) and read :meth:`~EurothermSimulator.output_power`.
* The status word (75): sensor break (bit 5; PV stays readable, frozen at the last good value,
  output falls to 0 %), PV out of range (bit 10; set by the knob or when the PV leaves
  ``range_lo..range_hi``), any other bits through :attr:`~EurothermSimulator.status_bits`.
* Identity and limits on every family: the instrument identity (122: 0x2480, 0x3216 or 0x3504)
  and the setpoint limits SP.HI/SP.LO (111/112, per loop); the version (107: 0x0111) on the 3200;
  :attr:`~EurothermSimulator.refuse_identity` makes 122 and 107 answer exception 0x02, as a model
  without them would.
* Writes are accepted where the instrument takes them; every write to an EEPROM-backed
  parameter (TgSP, SP1, SP2, Pb, Ti, ...) is counted in ``eeprom_writes`` (100,000-write life,
  docs/protocols.md 6.5), so a test can prove a driver never writes.

Choices where the sources are silent ([U] in docs/protocols.md):

* Integer values beyond the 16-bit range saturate at -32768/32767.
* Addresses 122 and 111/112 on every family: the identity register is recalled from the 2000
  series' handbook, not read here, and the limits are not confirmed; the identity values are
  illustrative. The version (107) is documented for the 3200 only [M] and absent elsewhere.
* The status word is instrument-wide (one word for both loops of a 3504).
* Writes to read-only parameters (PV, wSP, OP, status) answer exception 0x02.
* Address 4 of a 2400/3500 reads as 0 (drivers read parameters 1..5 in one block there; its
  meaning is not documented); the 2400-only parameters (30/31/35/258/270) are absent on a 3200.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Literal, cast

from bridge.drivers.common.modbus_codec import Table, decode
from bridge.drivers.eurotherm.codec import (
    FAMILIES,
    INSTRUMENT_IDENTITY,
    INSTRUMENT_VERSION,
    PV_OUT_OF_RANGE,
    SENSOR_BREAK,
    Family,
    encode_value,
    ieee_address,
    loop_address,
)
from simulators.serving.register_device import Clock, RegisterDevice, Source

Kind = Literal["temperature", "percent", "integer"]

#: Longest stretch of time one update simulates; beyond it the loop has long settled.
MAX_STEP_SPAN = 600.0
STEP = 0.1


@dataclass(frozen=True)
class Parameter:
    """A controller parameter at its loop-1 address."""

    address: int
    mnemonic: str
    kind: Kind
    read_only: bool = False
    eeprom: bool = False
    per_loop: bool = False


_COMMON = (
    Parameter(1, "PV", "temperature", read_only=True, per_loop=True),
    Parameter(2, "TgSP", "temperature", eeprom=True, per_loop=True),
    Parameter(5, "wSP", "temperature", read_only=True, per_loop=True),
    Parameter(6, "Pb", "temperature", eeprom=True, per_loop=True),
    Parameter(8, "Ti", "integer", eeprom=True, per_loop=True),
    Parameter(9, "Td", "integer", eeprom=True, per_loop=True),
    Parameter(13, "AL1", "temperature", eeprom=True),
    Parameter(14, "AL2", "temperature", eeprom=True),
    Parameter(15, "SP.SEL", "integer", eeprom=True),
    Parameter(24, "SP1", "temperature", eeprom=True),
    Parameter(25, "SP2", "temperature", eeprom=True),
    Parameter(26, "rmSP", "temperature"),
    Parameter(75, "status", "integer", read_only=True),
    # identity and setpoint limits [U]: the instrument identity (hex, >2480 on a 2408)
    Parameter(122, "ID", "integer", read_only=True),
    Parameter(111, "SP.HI", "temperature", eeprom=True, per_loop=True),
    Parameter(112, "SP.LO", "temperature", eeprom=True, per_loop=True),
    Parameter(273, "A-M", "integer", per_loop=True),
    Parameter(276, "L-R", "integer"),
)
_2400_STYLE = (
    Parameter(3, "OP", "percent", read_only=True, per_loop=True),
    # Readable, meaning unknown: drivers read 1..5 as one block on 2000-series controllers.
    Parameter(4, "(4)", "integer", read_only=True, per_loop=True),
    Parameter(30, "OP.Hi", "percent", eeprom=True, per_loop=True),
    Parameter(31, "OP.Lo", "percent", eeprom=True, per_loop=True),
    Parameter(35, "SPrr", "temperature", eeprom=True, per_loop=True),
    Parameter(270, "AtUn", "integer", per_loop=True),
)
PARAMETERS: dict[Family, tuple[Parameter, ...]] = {
    "2400": (*_COMMON, *_2400_STYLE, Parameter(258, "Sbr", "integer", read_only=True)),
    "3200": (*_COMMON,
             Parameter(3, "MAN.OP", "percent"),
             Parameter(4, "WRK.OP", "percent", read_only=True),
             Parameter(11, "RNG.LO", "temperature", eeprom=True),
             Parameter(12, "RNG.HI", "temperature", eeprom=True),
             Parameter(107, "VER", "integer", read_only=True),
             Parameter(131, "ADDR", "integer", eeprom=True)),
    "3500": (*_COMMON, *_2400_STYLE),
}

#: What the instrument identity register (122) holds per family [U: illustrative, one model each]
IDENTITIES: dict[Family, int] = {"2400": 0x2480, "3200": 0x3216, "3500": 0x3504}

#: Setpoint parameters a write changes the loop's setpoint through (SP1 is the selected SP).
_SETPOINTS = frozenset({"TgSP", "SP1"})


@dataclass
class Loop:
    """One control loop: PI controller and a first-order heater (all in display units)."""

    setpoint: float
    temperature: float
    pb: float = 10.0
    ti: float = 120.0
    td: float = 0.0
    #: heater time constant, s, and temperature rise above ambient at 100 % output
    tau: float = 600.0
    gain: float = 1400.0
    output: float = 0.0
    integral: float = 0.0
    pinned: float | None = None
    source: Source | None = None
    #: the PV as last reported (frozen during a sensor break)
    reported: float = 0.0

    def measured(self) -> float | None:
        """The PV given from outside (pinned or a source), or None when the heater model gives it."""
        if self.pinned is not None:
            return self.pinned
        if self.source is not None:
            return self.source()
        return None

    def step(self, dt: float, ambient: float, pv: float, broken: bool) -> None:
        if broken:
            self.output = 0.0  # sensor-break output (the instruments' default)
        else:
            error = self.setpoint - pv
            kp = 100.0 / self.pb if self.pb > 0 else 100.0
            integral = self.integral + error * dt if self.ti > 0 else 0.0
            demand = kp * (error + (integral / self.ti if self.ti > 0 else 0.0))
            # Conditional integration: the integral only grows while the output is not saturated.
            if 0.0 < demand < 100.0:
                self.integral = integral
            self.output = min(100.0, max(0.0, demand))
        if self.pinned is None and self.source is None:
            target = ambient + self.gain * self.output / 100.0
            self.temperature += dt / self.tau * (target - self.temperature)


class EurothermSimulator(RegisterDevice):
    """One controller at Modbus address ``unit``; see the module doc for what it models.

    ``family`` is "2400", "3200" or "3500" (two loops); ``decimals`` the display resolution of
    temperatures in the integer region; ``setpoint`` and ``ambient`` in display units. ``seed``
    makes the PV noise repeatable, ``clock`` drives the loop (pass a fake one in unit tests).
    """

    def __init__(self, family: Family | str = "2400", unit: int = 1, *, decimals: int = 1,
                 setpoint: float = 25.0, ambient: float = 25.0, seed: int | None = None,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(unit, clock=clock)
        if str(family) not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
        self.family: Family = cast(Family, str(family))
        self.parameters = PARAMETERS[self.family]
        self.ambient = ambient
        self._rng = random.Random(seed)
        self._last = clock()
        self._loops = [Loop(setpoint, ambient, reported=ambient) for _ in range(FAMILIES[self.family].loops)]
        self._static: dict[str, float] = {
            "AL1": 1500.0, "AL2": -100.0, "SP.SEL": 0.0, "SP2": 0.0, "rmSP": 0.0, "L-R": 0.0, "A-M": 0.0,
            "OP.Hi": 100.0, "OP.Lo": 0.0, "SPrr": 0.0, "AtUn": 0.0, "MAN.OP": 0.0,
            "VER": 0x0111, "ADDR": float(unit), "ID": float(IDENTITIES[self.family]),
            "SP.HI": 1200.0, "SP.LO": 0.0,
        }
        #: where each register belongs: address -> (parameter, loop index, region)
        self._owners: dict[int, tuple[Parameter, int, str]] = {}

        # ---- knobs: plain attributes, flip them at any time ----
        #: Display resolution of temperatures in the integer region (front-panel setting).
        self.decimals = decimals
        #: Standard deviation of the noise on the PV as read (display units); 0 = exact.
        self.noise = 0.05
        #: Status bit 5: thermocouple open. PV stays readable, frozen; output falls to 0 %.
        self.sensor_break = False
        #: Status bit 10, also set whenever a PV leaves range_lo..range_hi.
        self.pv_out_of_range = False
        self.range_lo = -200.0
        self.range_hi = 1372.0
        #: Further status-word bits to show (alarms 0-3, loop break 6, heater fail 7, ...).
        self.status_bits = 0
        #: Writes to EEPROM-backed parameters so far (the instrument's wear counter).
        self.eeprom_writes = 0

        for parameter in self.parameters:
            for index in range(len(self._loops) if parameter.per_loop else 1):
                address = loop_address(parameter.address, index + 1)
                self.define("holding", address, [0], read_only=parameter.read_only)
                self.define("holding", ieee_address(address), [0, 0], read_only=parameter.read_only)
                self._owners[address] = (parameter, index, "integer")
                self._owners[ieee_address(address)] = (parameter, index, "ieee")
                self._owners[ieee_address(address) + 1] = (parameter, index, "ieee")
        with self._lock:
            self.update(self._clock())

    # ------------------------------------------------------------------ knobs and hooks

    @property
    def loops(self) -> int:
        return len(self._loops)

    def loop(self, loop: int = 1) -> Loop:
        """The loop's state, to tune ``tau``, ``gain``, ``pb``, ``ti`` in a test or a model."""
        if not 1 <= loop <= len(self._loops):
            raise ValueError(f"a {self.family} has no loop {loop}")
        return self._loops[loop - 1]

    def set_setpoint(self, value: float, loop: int = 1) -> None:
        """Change the target setpoint as from the front panel (no EEPROM write counted)."""
        with self._lock:
            self.update(self._clock())
            self.loop(loop).setpoint = value

    def set_pv(self, value: float | None, loop: int = 1) -> None:
        """Hold the PV at exactly ``value`` (no noise, no dynamics); None releases it."""
        with self._lock:
            self.update(self._clock())
            self.loop(loop).pinned = value

    def set_pv_source(self, source: Source | None, loop: int = 1) -> None:
        """Let ``source()`` give the PV (a chamber model's cell temperature); the loop still
        computes its output power from it, readable with :meth:`output_power`."""
        with self._lock:
            self.update(self._clock())
            self.loop(loop).source = source

    @property
    def refuse_identity(self) -> bool:
        """Whether the identity (122) and version (107) registers answer exception 0x02."""
        return self.refused("holding", INSTRUMENT_IDENTITY)

    @refuse_identity.setter
    def refuse_identity(self, refused: bool) -> None:
        for address in (INSTRUMENT_IDENTITY, INSTRUMENT_VERSION):
            self.set_absent(address, refused)

    def set_absent(self, address: int, absent: bool = True, loop: int = 1) -> None:
        """Make a parameter (loop-1 address) answer exception 0x02 in both regions."""
        target = loop_address(address, loop)
        self.refuse("holding", target, 1, absent)
        self.refuse("holding", ieee_address(target), 2, absent)

    def pv(self, loop: int = 1) -> float:
        """The PV the controller measures now (what it reports, without noise)."""
        with self._lock:
            self.update(self._clock())
            return self.loop(loop).reported

    def output_power(self, loop: int = 1) -> float:
        """Output power in % (for a chamber model heating with it)."""
        with self._lock:
            self.update(self._clock())
            return self.loop(loop).output

    def status_word(self) -> int:
        with self._lock:
            self.update(self._clock())
            return self._status_word()

    def value(self, mnemonic: str, loop: int = 1) -> float:
        """A parameter's value as the controller would send it in the IEEE region."""
        with self._lock:
            self.update(self._clock())
            return self._value(self._parameter(mnemonic), loop - 1)

    def update(self, now: float) -> None:
        elapsed = min(max(0.0, now - self._last), MAX_STEP_SPAN)
        self._last = now
        broken = self.sensor_break
        # A given PV is sampled once per update: a chamber model's source may be costly.
        given = [loop.measured() for loop in self._loops]
        while elapsed > 1e-9:
            dt = min(STEP, elapsed)
            elapsed -= dt
            for loop, pv in zip(self._loops, given, strict=True):
                loop.step(dt, self.ambient, loop.temperature if pv is None else pv, broken)
        if not broken:
            for loop, pv in zip(self._loops, given, strict=True):
                loop.reported = loop.temperature if pv is None else pv
        self._write_registers()

    def written(self, table: Table, address: int, values: list[int]) -> None:
        # Each parameter once, however many of its registers the write covered.
        touched = dict.fromkeys(self._owners[a] for a in range(address, address + len(values)) if a in self._owners)
        for parameter, index, region in touched:
            base = loop_address(parameter.address, index + 1)
            if region == "ieee":
                value = float(decode(self.get("holding", ieee_address(base), 2), "float32"))
            else:
                value = int(decode(self.get("holding", base, 1), "int16")) / 10.0 ** self._decimals(parameter)
            self._apply(parameter, index, value)
            if parameter.eeprom:
                self.eeprom_writes += 1

    # ------------------------------------------------------------------ internals

    def _parameter(self, mnemonic: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.mnemonic == mnemonic:
                return parameter
        raise KeyError(f"a {self.family} has no parameter {mnemonic!r}")

    def _status_word(self) -> int:
        word = self.status_bits & 0xFFFF
        if self.sensor_break:
            word |= 1 << SENSOR_BREAK
        if self.pv_out_of_range or any(not self.range_lo <= loop.reported <= self.range_hi for loop in self._loops):
            word |= 1 << PV_OUT_OF_RANGE
        return word

    def _value(self, parameter: Parameter, index: int) -> float:
        loop = self._loops[index]
        match parameter.mnemonic:
            case "PV":
                return loop.reported if loop.pinned is not None or self.sensor_break else (
                    loop.reported + self._rng.gauss(0.0, self.noise) if self.noise > 0 else loop.reported)
            case "TgSP" | "SP1":
                return loop.setpoint
            case "wSP":
                return self._static["rmSP"] if self._static["L-R"] else loop.setpoint
            case "OP" | "WRK.OP":
                return loop.output
            case "Pb":
                return loop.pb
            case "Ti":
                return loop.ti
            case "Td":
                return loop.td
            case "status":
                return float(self._status_word())
            case "Sbr":
                return 1.0 if self.sensor_break else 0.0
            case "RNG.LO":
                return self.range_lo
            case "RNG.HI":
                return self.range_hi
        return self._static.get(parameter.mnemonic, 0.0)

    def _apply(self, parameter: Parameter, index: int, value: float) -> None:
        loop = self._loops[index]
        match parameter.mnemonic:
            case "TgSP" | "SP1":
                loop.setpoint = value
            case "Pb":
                loop.pb = value
            case "Ti":
                loop.ti = value
            case "Td":
                loop.td = value
            case "RNG.LO":
                self.range_lo = value
            case "RNG.HI":
                self.range_hi = value
            case _:
                self._static[parameter.mnemonic] = value

    def _decimals(self, parameter: Parameter) -> int:
        return {"temperature": self.decimals, "percent": 1, "integer": 0}[parameter.kind]

    def _write_registers(self) -> None:
        for parameter in self.parameters:
            for index in range(len(self._loops) if parameter.per_loop else 1):
                address = loop_address(parameter.address, index + 1)
                value = self._value(parameter, index)
                self.set("holding", ieee_address(address), encode_value(value, use_ieee=True))
                self.set("holding", address, [_integer_register(value, parameter.kind, self._decimals(parameter))])


def _integer_register(value: float, kind: Kind, decimals: int) -> int:
    """The integer region's 16-bit register: bit patterns as they are, numbers scaled, rounded
    and saturated to the signed range (two's complement)."""
    if kind == "integer" and value >= 0:
        return round(value) & 0xFFFF
    scaled = max(-32768, min(32767, round(value * 10.0**decimals)))
    return scaled & 0xFFFF


__all__ = ["PARAMETERS", "EurothermSimulator", "Loop", "Parameter"]

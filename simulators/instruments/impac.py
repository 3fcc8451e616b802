"""IMPAC IGA/ISR/IS pyrometer (UPP protocol) as a state machine (docs/protocols.md section 5.1).

Bytes in through :meth:`ImpacSimulator.received`, bytes out through the :class:`~simulators.
serving.Link` it was connected with; no sockets, no threads, so the same object runs under a
:class:`~simulators.serving.PtyServer`, a :class:`~simulators.serving.TcpServer`, a unit test
with a :class:`~simulators.serving.MemoryLink`, or next to others on one RS-485 line
(:class:`~simulators.serving.rs485.SharedLine`).

What it reproduces, and why:

* Addressing: a request ``AAxx[param]`` CR is executed at the pyrometer's own address and at
  ``99`` (global, with reply); at ``98`` (global, no reply) settings are executed silently;
  every other address is silence, as on a real line where another pyrometer answers.
* ``ms`` five digits in tenths of the current unit; special values instead of a reading:
  ``77770`` during :attr:`~ImpacSimulator.warm_up`, ``88880`` above the range, ``80000`` while
  the aiming laser is on (models that blank the reading), or any value forced with
  :attr:`~ImpacSimulator.special` (``75550``/``74440`` of the Series 600 included).
* ``ek`` (ratio models): one-channel and ratio temperature, ten digits run together [U].
* ``em``/``ez``/``fh``/``la`` read and set ε (per mille), the t90 code, °C/°F and the laser;
  ``na``/``sn``/``ve`` identify the model; ``mb`` gives the basic range (start and end, 4 hex digits
  each, in °C [U]).
* Invalid commands (unknown letters, upper case, bad parameter, unknown to the model): ``no``
  CR with newer firmware, silence with older (:attr:`~ImpacSimulator.answers_no`).
* Faults a test can switch on while a server runs: :attr:`~ImpacSimulator.silent`,
  :attr:`~ImpacSimulator.garbage`, :attr:`~ImpacSimulator.garbage_at_connect`,
  :attr:`~ImpacSimulator.split_replies`, :attr:`~ImpacSimulator.truncate`,
  :attr:`~ImpacSimulator.reply_delay`, :attr:`~ImpacSimulator.line_mismatch`,
  :attr:`~ImpacSimulator.echo`, :attr:`~ImpacSimulator.special`, :attr:`~ImpacSimulator.refuse_identity`,
  :attr:`~ImpacSimulator.warm_up` with :meth:`~ImpacSimulator.power_cycle`.

Choices where the sources are silent or disagree (docs/protocols.md marks them [U]):

* Model traits are illustrative combinations, one model per protocol variant, not captured
  from hardware: the IGA 320/23 (range of its MB 12 datasheet entry) has older firmware
  (silence on invalid commands, no ``fh``); the IGA 12 and ISR 12-LO have newer firmware
  (``no``, ``fh`` known); only the ISR 12-LO is a ratio pyrometer and blanks its reading with
  ``80000`` while the aiming laser is on. Names, serial numbers and versions are made up.
* ``fh`` codes: 0 = °C, 1 = °F. Setting commands answer ``ok`` unless :attr:`~ImpacSimulator.
  set_reply` is ``"echo"`` (the echo form one manual shows).
* Below the range start the temperature is still reported as a number (the manual pages seen
  do not say what happens); a negative temperature is written ``00000``.
* The exposure time does not smooth the reading; ``msXXX`` streaming and the ``?`` range
  queries are not simulated and answered as invalid commands.
* The one-channel temperature follows Wien's approximation when the target's true emissivity
  (:attr:`~ImpacSimulator.target_emissivity`) differs from the set ε; the ratio temperature
  does not depend on ε. By default the target emissivity equals the setting (reading = truth).
* ``line_mismatch``: the request is assumed to get through; the reply is shown as a host at the
  wrong settings would see it. ``"parity"`` = host at 8N1, device at 8E1: a character whose
  parity bit is 0 lands where the stop bit belongs, a framing error read as NUL (so
  ``02563`` CR arrives as ``\\x002\\x00\\x00\\x00`` CR). ``"baud"`` = host at half the rate: about
  half as many bytes, high bit set, no CR.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from simulators.serving.byte_device import SimulatedByteDevice
from simulators.serving.link import Clock

CR = 0x0D
LF = 0x0A
NO = b"no\r"
OK = b"ok\r"

#: A host sending more than this without CR is talking nonsense; the line is dropped.
MAX_LINE = 32

GLOBAL_NO_REPLY = 98
GLOBAL_WITH_REPLY = 99

#: Special values (docs/protocols.md 5.1) by the names the CLI uses.
NOT_READY = 77770
OVER_RANGE = 88880
AIMING_LIGHT = 80000
HEAD_TOO_HOT = 75550
HEAD_TOO_COLD = 74440
SPECIAL_NAMES: dict[str, int] = {
    "warm-up": NOT_READY,
    "over-range": OVER_RANGE,
    "aiming-light": AIMING_LIGHT,
    "head-hot": HEAD_TOO_HOT,
    "head-cold": HEAD_TOO_COLD,
}

#: Second radiation constant in µm·K (Wien's approximation).
C2_UM_K = 14388.0
KELVIN = 273.15

_REQUEST = re.compile(rb"(\d\d)([\x20-\x7e]*)")
_COMMAND = re.compile(r"[a-z]{2}")

Unit = Literal["C", "F"]
TemperatureSource = Callable[[], float]


@dataclass(frozen=True)
class Model:
    """What a model answers; see the module docstring for how illustrative each trait is."""

    name: str
    version: str
    ratio: bool
    answers_no: bool
    knows_fh: bool
    laser_blanks: bool
    range_c: tuple[float, float]
    wavelength_um: float
    emissivity_min: int  # per mille


def model_key(name: str) -> str:
    """``"ISR 12-LO"``, ``"isr12lo"`` -> ``"ISR12LO"``: how models are looked up."""
    return name.replace(" ", "").replace("/", "").replace("-", "").upper()


MODELS: dict[str, Model] = {
    model_key(m.name): m
    for m in (
        Model("IGA 320/23", "IGA320/23 V1.10", ratio=False, answers_no=False, knows_fh=False,
              laser_blanks=False, range_c=(150.0, 1200.0), wavelength_um=2.3, emissivity_min=100),
        Model("IGA 12", "IGA12 V2.04", ratio=False, answers_no=True, knows_fh=True,
              laser_blanks=False, range_c=(250.0, 2500.0), wavelength_um=1.6, emissivity_min=50),
        Model("ISR 12-LO", "ISR12-LO V3.01", ratio=True, answers_no=True, knows_fh=True,
              laser_blanks=True, range_c=(550.0, 1400.0), wavelength_um=0.9, emissivity_min=100),
    )
}

#: ``ez`` codes 0..6 are accepted by every model
EXPOSURE_CODES = range(7)


def format_temperature(value: float) -> bytes:
    """A temperature as five digits of tenths (``256.3`` -> ``b"02563"``); negatives as ``00000``."""
    return f"{max(0, round(value * 10)):05d}".encode()


def garble(data: bytes, mismatch: str) -> bytes:
    """What a host at the wrong line settings reads of ``data`` (see the module docstring)."""
    if mismatch == "parity":
        return bytes(0 if b.bit_count() % 2 == 0 else b for b in data)
    if mismatch == "baud":
        # Two device characters per host character, merged; the high bits never make a CR.
        return bytes(0xC0 | ((data[i] ^ (data[i + 1] if i + 1 < len(data) else 0xFF)) & 0x3F)
                     for i in range(0, len(data), 2))
    raise ValueError(f"unknown line mismatch {mismatch!r}; expected 'parity' or 'baud'")


class _Invalid(Exception):
    """A command this pyrometer does not accept: ``no`` or silence, depending on firmware."""


class ImpacSimulator(SimulatedByteDevice):
    """One IMPAC pyrometer at one address; a :class:`~simulators.serving.ByteDevice`.

    ``model`` (:data:`MODELS`, spelled loosely: ``"IGA 12"``, ``"isr12lo"``) sets the firmware
    generation, ratio channel, unit command and range. ``address`` 0-97. ``unit`` is the
    power-on unit. ``seed`` makes noise repeatable; ``clock`` drives the heating curve and the
    warm-up (pass a fake one in unit tests).

    Temperature (°C), first match wins: :meth:`set_temperature` (pinned, exact, no noise),
    :meth:`set_temperature_source` (a chamber model), else a first-order approach from
    ``start_c`` to ``target_c`` (defaults: 100 and 400 K above the range start) with a time
    constant ``tau`` and :attr:`noise` (kelvin, standard deviation).
    """

    def __init__(
        self,
        address: int = 0,
        model: str = "IGA 12",
        unit: Unit = "C",
        seed: int | None = None,
        *,
        clock: Clock = time.monotonic,
        start_c: float | None = None,
        target_c: float | None = None,
        tau: float = 60.0,
    ) -> None:
        if not 0 <= address < GLOBAL_NO_REPLY:
            raise ValueError(f"address {address} outside 00-97")
        key = model_key(model)
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {', '.join(m.name for m in MODELS.values())}")
        if unit not in ("C", "F"):
            raise ValueError(f"unit must be 'C' or 'F', not {unit!r}")
        super().__init__(clock=clock, seed=seed)
        self.address = address
        self.model = MODELS[key]
        self._unit: Unit = unit
        self._t0 = clock()
        self._powered_at = self._t0
        low = self.model.range_c[0]
        self.start_c = low + 100.0 if start_c is None else start_c
        self.target_c = low + 400.0 if target_c is None else target_c
        self.tau = tau
        self._pinned: float | None = None
        self._source: TemperatureSource | None = None
        self._emissivity = 1000  # per mille
        self._exposure = 0
        self._laser = False

        # ---- behaviour and fault knobs (besides the shared ones): plain attributes, flip them at any time ----
        #: Newer firmware answers ``no`` to invalid commands; older firmware says nothing.
        self.answers_no = self.model.answers_no
        #: Setting commands answer ``"ok"`` or echo the request (``"echo"``) [U].
        self.set_reply: Literal["ok", "echo"] = "ok"
        #: Report 77770 for this many seconds after power-on (construction, :meth:`power_cycle`).
        self.warm_up = 0.0
        #: Force a raw value instead of every temperature (77770, 88880, 80000, 75550, 74440, ...).
        self.special: int | None = None
        #: True emissivity of the target (Wien); None = equal to the set ε, reading = truth.
        self.target_emissivity: float | None = None
        #: Kelvin of noise on the heating curve (not on pinned or sourced temperatures).
        self.noise = 0.2
        #: Cut replies: ``"head"`` loses the first half (receiver late), ``"tail"`` the second
        #: half with the CR (line dropped mid-reply).
        self.truncate: Literal["head", "tail"] | None = None
        #: ``"parity"`` or ``"baud"``: replies garbled as a host at the wrong settings sees them.
        self.line_mismatch: Literal["parity", "baud"] | None = None
        #: Send every request heard back (a 2-wire RS-485 adapter without echo suppression);
        #: on a shared line switch it on for one device only.
        self.echo = False
        #: Treat the identity commands ``na``, ``sn`` and ``ve`` as invalid (``no``, or silence on
        #: older firmware), as a model without them would.
        self.refuse_identity = False

    # ================================================================== ByteDevice

    def _heard(self, data: bytes) -> None:
        # Lines are cut even when silent: the echo comes from the adapter, not the pyrometer.
        # A runaway line is dropped: nobody can tell where it started.
        for line in self._lines(data, bytes([CR]), limit=MAX_LINE, skip=bytes([LF]), runaway="restart"):
            if line:
                self._line(line)

    # ================================================================== knobs for tests

    @property
    def unit(self) -> Unit:
        return self._unit

    def set_unit(self, unit: Unit) -> None:
        """Change °C/°F as InfraWin or the keypad would: no wire traffic, readings change scale."""
        if unit not in ("C", "F"):
            raise ValueError(f"unit must be 'C' or 'F', not {unit!r}")
        with self._lock:
            self._unit = unit

    @property
    def emissivity(self) -> float:
        with self._lock:
            return self._emissivity / 1000

    def set_emissivity(self, emissivity: float) -> None:
        per_mille = round(emissivity * 1000)
        if not self.model.emissivity_min <= per_mille <= 1000:
            raise ValueError(f"{self.model.name} takes emissivity {self.model.emissivity_min / 1000}-1.0")
        with self._lock:
            self._emissivity = per_mille

    @property
    def exposure_code(self) -> int:
        with self._lock:
            return self._exposure

    def set_exposure_code(self, code: int) -> None:
        if code not in EXPOSURE_CODES:
            raise ValueError(f"exposure code {code} outside 0-6")
        with self._lock:
            self._exposure = code

    @property
    def laser(self) -> bool:
        with self._lock:
            return self._laser

    def set_laser(self, on: bool) -> None:
        """The aiming laser, as its button would switch it (``la1`` does the same on the wire)."""
        with self._lock:
            self._laser = on

    def set_temperature(self, celsius: float | None) -> None:
        """Pin the true temperature at exactly ``celsius`` (no noise, no drift); None releases it."""
        with self._lock:
            self._pinned = celsius

    def set_temperature_source(self, source: TemperatureSource | None) -> None:
        """Let ``source()`` (°C) drive the true temperature, e.g. a chamber model; clears any pin."""
        with self._lock:
            self._pinned = None
            self._source = source

    def temperature(self) -> float:
        """The true target temperature in °C now (what the pyrometer would show at ε = truth)."""
        with self._lock:
            return self._true_c()

    def power_cycle(self) -> None:
        """Off and on: a half-received request is lost, the warm-up starts again, settings stay."""
        with self._lock:
            self._buffer.clear()
            self._laser = False
            self._powered_at = self._clock()

    # ================================================================== protocol

    def _line(self, line: bytes) -> None:
        if self.echo:
            self._send(line + b"\r")
        match = _REQUEST.fullmatch(line)
        if self.silent or match is None:
            return  # no recognisable address: nobody on the line answers
        address = int(match.group(1))
        if address not in (self.address, GLOBAL_NO_REPLY, GLOBAL_WITH_REPLY):
            return
        text = match.group(2).decode()
        command, param = text[:2], text[2:]
        try:
            if not _COMMAND.fullmatch(command):
                raise _Invalid  # upper case, digits, too short: a syntax error
            reply = self._execute(command, param)
        except _Invalid:
            if self.answers_no and address != GLOBAL_NO_REPLY:
                self._reply(NO)
            return
        if address != GLOBAL_NO_REPLY:
            self._reply(reply)

    def _execute(self, command: str, param: str) -> bytes:
        """The reply to one valid request (a setting is applied here); _Invalid otherwise."""
        if self.refuse_identity and command in ("na", "sn", "ve"):
            raise _Invalid
        if command in ("ms", "na", "sn", "ve", "mb") or (command == "ek" and self.model.ratio):
            if param:
                raise _Invalid
            return self._read(command) + b"\r"
        if command not in ("em", "ez", "la") and not (command == "fh" and self.model.knows_fh):
            raise _Invalid
        if not param:
            return self._get(command).encode() + b"\r"
        self._set(command, param)
        return OK if self.set_reply == "ok" else f"{self.address:02d}{command}{param}\r".encode()

    def _get(self, command: str) -> str:
        match command:
            case "em":
                return f"{self._emissivity:04d}"
            case "ez":
                return str(self._exposure)
            case "la":
                return "1" if self._laser else "0"
            case _:
                return "1" if self._unit == "F" else "0"

    def _set(self, command: str, param: str) -> None:
        digits = param.isdigit()
        match command:
            case "em" if len(param) == 4 and digits and self.model.emissivity_min <= int(param) <= 1000:
                self._emissivity = int(param)
            case "ez" if len(param) == 1 and digits and int(param) in EXPOSURE_CODES:
                self._exposure = int(param)
            case "la" if param in ("0", "1"):
                self._laser = param == "1"
            case "fh" if param in ("0", "1"):
                self._unit = "F" if param == "1" else "C"
            case _:
                raise _Invalid

    def _read(self, command: str) -> bytes:
        if command == "ms":
            return self._reading(ratio=self.model.ratio)
        if command == "ek":
            return self._reading(ratio=False) + self._reading(ratio=True)
        if command == "na":
            return self.model.name.encode()
        if command == "sn":
            return f"{10000 + self.address * 137:05d}".encode()
        if command == "mb":
            low, high = self.model.range_c
            return f"{round(low):04X}{round(high):04X}".encode()
        return self.model.version.encode()

    # ================================================================== values

    def _true_c(self) -> float:
        if self._pinned is not None:
            return self._pinned
        if self._source is not None:
            return self._source()
        elapsed = max(0.0, self._clock() - self._t0)
        curve = self.target_c + (self.start_c - self.target_c) * math.exp(-elapsed / self.tau)
        return curve + self._rng.gauss(0.0, self.noise)

    def _status(self) -> int | None:
        if self.special is not None:
            return self.special
        if self._clock() - self._powered_at < self.warm_up:
            return NOT_READY
        if self._laser and self.model.laser_blanks:
            return AIMING_LIGHT
        return None

    def _reading(self, *, ratio: bool) -> bytes:
        """Five digits: the temperature in the current unit, or a special value."""
        status = self._status()
        if status is not None:
            return f"{status:05d}".encode()
        celsius = self._true_c()
        if not ratio:
            celsius = self._one_channel(celsius)
        if celsius > self.model.range_c[1]:
            return f"{OVER_RANGE:05d}".encode()
        return format_temperature(celsius * 9 / 5 + 32 if self._unit == "F" else celsius)

    def _one_channel(self, celsius: float) -> float:
        """What a one-colour channel reads when ε is set wrong (Wien's approximation)."""
        if self.target_emissivity is None or celsius <= -KELVIN:
            return celsius
        ratio = (self._emissivity / 1000) / self.target_emissivity
        inverse = 1 / (celsius + KELVIN) + self.model.wavelength_um / C2_UM_K * math.log(ratio)
        return 1 / inverse - KELVIN

    # ================================================================== output

    def _distort(self, data: bytes) -> bytes:
        if self.truncate == "head":
            data = data[len(data) // 2 :]
        elif self.truncate == "tail":
            data = data[: max(1, len(data) // 2)]
        if self.line_mismatch is not None:
            data = garble(data, self.line_mismatch)
        return data

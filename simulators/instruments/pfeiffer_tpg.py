"""Pfeiffer TPG 261/262/361/362/366 gauge controller: the mnemonic protocol as a state machine.

Bytes in through :meth:`TPGSimulator.received`, bytes out through the :class:`~simulators.
serving.Link` it was connected with; no sockets, no threads of its own, so the same object runs
under a :class:`~simulators.serving.PtyServer`, a :class:`~simulators.serving.TcpServer` or a
unit test with a :class:`~simulators.serving.MemoryLink` (docs/protocols.md section 1).

What it reproduces, and why:

* ACK/NAK then ENQ: a command only arms a data string; each ENQ returns it freshly computed,
  ENQ with nothing armed (or after a NAK) returns the ERROR word, which reading clears.
* Readings ``s,sx.xxxxEsxx`` in the *current* unit; logarithmic gauges carry only three
  significant digits (3rd and 4th decimals zero), as the manual says.
* Status digits 1-6 come with a plausible-looking filler number (range limits, ``2.0000E-2``),
  so a driver that publishes the number regardless is caught by a test.
* Streams (``COM`` and the power-up stream of section 1.7) stop at the first byte from the host;
  the power-up stream starts with a truncated line, as seen when a port is opened mid-stream.
* Faults a test can switch on while a server runs: :attr:`~TPGSimulator.silent`,
  :attr:`~TPGSimulator.garbage`, :attr:`~TPGSimulator.garbage_at_connect`,
  :attr:`~TPGSimulator.split_replies`, :attr:`~TPGSimulator.reply_delay`,
  :attr:`~TPGSimulator.nak_all`, :attr:`~TPGSimulator.refuse_identity`, :meth:`~TPGSimulator.set_status`,
  :meth:`~TPGSimulator.set_unit` (front-panel change), :meth:`~TPGSimulator.power_cycle`.

Choices where the sources are silent or disagree (docs/protocols.md marks them [U]):

* Positive numbers are written with ``+`` (TPG 36x capture); drivers must accept any sign form.
* Unit 5 (Volt, 36x only) is accepted and outputs a gauge-voltage-like number from the PKR
  characteristic ``U = (log10(p/mbar) + 11.33) / 1.667`` for every gauge type, so a driver can
  prove it refuses to publish volts as pressure. TPG 26x NAKs units above 2 (``0010``).
* ``PRn`` with n above the channel count, and ``AYT`` on a TPG 26x, are unknown mnemonics:
  NAK with the syntax flag ``0001``. Parameters on a read-only mnemonic: NAK with ``0010``.
* ``SEN`` writes to a gauge that cannot be switched are ignored (no NAK).
* The ERROR word's controller flag (``1000``) stays set while any channel shows status 3 or 6;
  ``RES`` lists those as error codes 9/10 (channel 1), 11/12 (channel 2), and onwards by two.
* ENQ arriving in the middle of a command discards the partial command.
* Lower-case mnemonics are not accepted.
* Status fillers: underrange -> the gauge's lower limit, overrange -> its upper limit,
  3/4/5/6 -> 2.0e-2 mbar (the manual's no-sensor filler), converted to the current unit.
* Model part numbers, serials and firmware strings are illustrative, not captured.

Why one module of about 600 lines: it is one instrument's protocol, whose tables (statuses,
units, models) and mnemonics only make sense together with the quirks listed above; a split
would leave each part needing the others to be read.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from simulators.instruments.gauges import PumpDownChannel, SimulatedGaugeController
from simulators.serving.link import Clock

ACK = b"\x06\r\n"
NAK = b"\x15\r\n"
CRLF = b"\r\n"
ETX = 0x03
ENQ = 0x05
CR = 0x0D
LF = 0x0A
SPACE = 0x20

#: A host sending more than this without CR is talking nonsense; the line is NAKed at CR.
MAX_LINE = 64

#: ETX (discard the partial command) and ENQ (send the armed data string), wherever they come.
_CONTROL = re.compile(rb"([\x03\x05])")


class Status(IntEnum):
    """First field of every reading (docs/protocols.md 1.4)."""

    OK = 0
    UNDERRANGE = 1
    OVERRANGE = 2
    SENSOR_ERROR = 3
    OFF = 4
    NO_SENSOR = 5
    ID_ERROR = 6


#: Names used by the CLI's ``--status CH=NAME``.
STATUS_NAMES: dict[str, Status] = {
    "ok": Status.OK,
    "under": Status.UNDERRANGE,
    "over": Status.OVERRANGE,
    "error": Status.SENSOR_ERROR,
    "off": Status.OFF,
    "nosensor": Status.NO_SENSOR,
    "iderror": Status.ID_ERROR,
}


class Unit(IntEnum):
    """``UNI`` codes. 26x knows 0-2; 36x adds 3-5."""

    MBAR = 0
    TORR = 1
    PA = 2
    MICRON = 3
    HPA = 4
    VOLT = 5


#: Lower-case names accepted by :func:`parse_unit` (and the CLI).
UNIT_NAMES: dict[str, Unit] = {
    "mbar": Unit.MBAR,
    "torr": Unit.TORR,
    "pa": Unit.PA,
    "micron": Unit.MICRON,
    "hpa": Unit.HPA,
    "volt": Unit.VOLT,
    "v": Unit.VOLT,
}

_FROM_MBAR: dict[Unit, float] = {
    Unit.MBAR: 1.0,
    Unit.TORR: 0.750061683,
    Unit.PA: 100.0,
    Unit.MICRON: 750.061683,
    Unit.HPA: 1.0,
}


class ErrorFlag(IntFlag):
    """Positions of the 4-character ERROR word, left to right."""

    CONTROLLER = 0b1000
    NO_HARDWARE = 0b0100
    PARAMETER = 0b0010
    SYNTAX = 0b0001


@dataclass(frozen=True)
class Gauge:
    """A gauge type as the controller identifies it (``TID``); range in mbar, approximate."""

    name: str
    low: float
    high: float
    switchable: bool
    logarithmic: bool = True


GAUGES: dict[str, Gauge] = {
    g.name: g
    for g in (
        Gauge("PKR", 5e-9, 1000.0, switchable=True),
        Gauge("PBR", 5e-10, 1000.0, switchable=True),
        Gauge("IKR", 5e-11, 1e-2, switchable=True),
        Gauge("IMR", 1e-6, 1000.0, switchable=True),
        Gauge("TPR", 5e-4, 1000.0, switchable=False),
        Gauge("PCR", 5e-5, 1500.0, switchable=False),
        Gauge("APR", 1e-1, 1100.0, switchable=False, logarithmic=False),
        Gauge("CMR", 1e-1, 1100.0, switchable=False, logarithmic=False),
        Gauge("noSEn", 0.0, 0.0, switchable=False),
        Gauge("noid", 0.0, 0.0, switchable=False),
    )
}

#: What a no-sensor channel outputs (manual footnote), reused for the other "no value" states.
FILLER_MBAR = 2.0e-2


@dataclass(frozen=True)
class Model:
    name: str
    family: int  # 26 or 36
    channels: int
    part_number: str
    firmware: str

    @property
    def units(self) -> frozenset[Unit]:
        return frozenset(Unit) if self.family == 36 else frozenset({Unit.MBAR, Unit.TORR, Unit.PA})


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model("TPG261", 26, 1, "PTG28040", "BG5160-A"),
        Model("TPG262", 26, 2, "PTG28050", "BG5160-A"),
        Model("TPG361", 36, 1, "PTG28280", "010100"),
        Model("TPG362", 36, 2, "PTG28290", "010100"),
        Model("TPG366", 36, 6, "PTG28760", "010100"),
    )
}

_DEFAULT_GAUGES: dict[int, tuple[str, ...]] = {
    1: ("PKR",),
    2: ("PKR", "TPR"),
    6: ("PKR", "TPR", "IKR", "CMR", "PKR", "noSEn"),
}

#: ``COM,x`` stream periods in seconds.
COM_PERIODS: dict[str, float] = {"0": 0.1, "1": 1.0, "2": 60.0}


def parse_unit(text: str) -> Unit:
    """A unit from its code (``"1"``) or name (``"Torr"``), case-insensitive."""
    key = text.strip().lower()
    if key.isdigit():
        try:
            return Unit(int(key))
        except ValueError:
            pass
    elif key in UNIT_NAMES:
        return UNIT_NAMES[key]
    raise ValueError(f"unknown unit {text!r}; expected one of {', '.join(UNIT_NAMES)} or 0-5")


def convert(mbar: float, unit: Unit) -> float:
    """A pressure in mbar expressed in ``unit`` (volts: the PKR characteristic, see module doc)."""
    if unit is Unit.VOLT:
        return 0.0 if mbar <= 0 else (math.log10(mbar) + 11.33) / 1.667
    return mbar * _FROM_MBAR[unit]


def format_value(value: float, logarithmic: bool = False) -> str:
    """``sx.xxxxEsxx``; logarithmic gauges only resolve three digits, the rest is zeros."""
    if logarithmic:
        mantissa, exponent = f"{value:+.2E}".split("E")
        return f"{mantissa}00E{exponent}"
    return f"{value:+.4E}"


class _Rejected(Exception):
    """A command the controller NAKs; ``flag`` goes into the ERROR word."""

    def __init__(self, flag: ErrorFlag) -> None:
        super().__init__(flag.name)
        self.flag = flag


Producer = Callable[[], str]


@dataclass(kw_only=True)
class _Channel(PumpDownChannel):
    gauge: Gauge
    on: bool = True
    forced: Status | None = None


class TPGSimulator(SimulatedGaugeController):
    """One TPG controller; a :class:`~simulators.serving.ByteDevice`.

    ``model`` picks the family (26x answers ``AYT`` with NAK, knows units 0-2 only) and the
    channel count; ``channels`` may repeat it but cannot contradict it. ``unit`` is the
    power-on unit (code or name). ``gauges`` names the gauge type per channel (``TID``); by
    default a PKR (full range) and a TPR (Pirani, which reads underrange at UHV, so status 1
    appears without any fault switched on). ``seed`` makes noise and the truncation point
    repeatable. ``clock`` drives the pump-down curves (pass a fake one in unit tests; the
    servers' ticks use ``time.monotonic``).

    Pressures, per channel, first match wins: :meth:`set_pressure` (pinned, exact, no noise),
    :meth:`set_pressure_source` (a chamber model), else a pump-down curve from ``start_mbar`` to
    ``base_mbar`` (log-linear decay with time constants of tens of seconds) with 1 % noise.
    """

    def __init__(
        self,
        model: str = "TPG362",
        channels: int | None = None,
        unit: int | str = 0,
        seed: int | None = None,
        *,
        gauges: Sequence[str] | None = None,
        clock: Clock = time.monotonic,
        start_mbar: float = 1e-3,
        base_mbar: float = 2e-8,
    ) -> None:
        key = model.upper().replace(" ", "")
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
        self.model = MODELS[key]
        if channels is not None and channels != self.model.channels:
            raise ValueError(
                f"{self.model.name} has {self.model.channels} channel(s), not {channels}"
            )
        n = self.model.channels
        names = tuple(gauges) if gauges is not None else _DEFAULT_GAUGES[n]
        if len(names) != n:
            raise ValueError(f"{self.model.name} needs {n} gauge name(s), got {len(names)}")
        unknown = [g for g in names if g not in GAUGES]
        if unknown:
            raise ValueError(f"unknown gauge type(s) {unknown}; known: {', '.join(GAUGES)}")
        super().__init__(clock=clock, seed=seed)
        self._unit = self._check_unit(parse_unit(str(unit)))
        self._channels = [
            _Channel(start_mbar, base_mbar, tau=40.0 * (1 + 0.5 * i), gauge=GAUGES[g])
            for i, g in enumerate(names)
        ]

        # ---- fault knobs (besides the shared ones): plain attributes, flip them at any time ----
        #: Stream PRX lines at connect and at :meth:`power_cycle` until the host sends a byte.
        self.power_up_streaming = False
        #: Period of the power-up stream (the real one is 1 s; tests use less).
        self.stream_interval = 1.0
        #: NAK every command (e.g. the 36x set to the PV protocol instead of mnemonics).
        self.nak_all = False
        #: NAK the identity mnemonics ``AYT`` and ``PNR`` (syntax flag), as firmware without them would.
        self.refuse_identity = False

        self._pending: Producer | None = None
        self._errors = ErrorFlag(0)
        self._stream_period: float | None = None
        self._next_line = 0.0
        self._com_request: float | None = None

    # ================================================================== ByteDevice

    def _on_connect(self) -> None:
        if self.power_up_streaming and not self.silent:
            self._start_stream(self.stream_interval, truncated=True)

    def _on_disconnect(self) -> None:
        self._stream_period = None

    def _heard(self, data: bytes) -> None:
        if self.silent or not data:
            return
        # Any character from the host ends a stream (manual, power-up stream and COM).
        self._stream_period = None
        for part in _CONTROL.split(data):
            if part == bytes([ETX]):
                self._buffer.clear()
            elif part == bytes([ENQ]):
                self._buffer.clear()  # ENQ in the middle of a command discards it
                self._enquiry()
            else:
                # One byte more than MAX_LINE is kept: enough to NAK the line at CR.
                for line in self._lines(part, bytes([CR]), limit=MAX_LINE + 1, skip=bytes([LF, SPACE])):
                    if line:
                        self._command(line)

    def tick(self, now: float) -> None:
        with self._lock:
            period = self._stream_period
            if period is None or self._link is None or self.silent or now < self._next_line:
                return
            self._send(self._prx().encode() + CRLF)
            self._next_line += period
            if self._next_line <= now:  # fell behind (slow tick): do not burst
                self._next_line = now + period

    # ================================================================== knobs for tests

    @property
    def channels(self) -> int:
        return self.model.channels

    @property
    def unit(self) -> Unit:
        return self._unit

    def set_unit(self, unit: int | str) -> None:
        """Change the unit as if on the front panel: no wire traffic, readings jump scale."""
        with self._lock:
            self._unit = self._check_unit(parse_unit(str(unit)))

    def set_status(self, channel: int, status: int | Status | None) -> None:
        """Force a status digit on a channel (filler in the number field); None = normal again.

        Forced 5 and 6 also change what ``TID`` reports (``noSEn`` / ``noid``), as unplugging
        a gauge or fitting an unknown one would.
        """
        with self._lock:
            self._channel(channel).forced = None if status is None else Status(status)

    def set_gauge_on(self, channel: int, on: bool) -> None:
        """Switch a gauge as the ``SEN`` command would (only switchable gauges react)."""
        with self._lock:
            ch = self._channel(channel)
            if ch.gauge.switchable:
                ch.on = on

    def power_cycle(self) -> None:
        """Controller off and on: volatile state is lost, unit and gauges remain (EEPROM).

        With :attr:`power_up_streaming`, a connected host then sees the power-up stream.
        """
        with self._lock:
            self._buffer.clear()
            self._pending = None
            self._errors = ErrorFlag(0)
            self._stream_period = None
            if self._link is not None and self.power_up_streaming and not self.silent:
                self._start_stream(self.stream_interval, truncated=True)

    def status(self, channel: int) -> Status:
        """The status digit the channel reports now."""
        with self._lock:
            return self._status(self._channel(channel))

    @property
    def streaming(self) -> bool:
        with self._lock:
            return self._stream_period is not None

    # ================================================================== protocol

    def _enquiry(self) -> None:
        text = self._pending() if self._pending is not None else self._read_error_word()
        self._reply(text.encode() + CRLF)

    def _command(self, line: bytes) -> None:
        try:
            if self.nak_all:
                raise _Rejected(ErrorFlag.SYNTAX)
            producer = self._dispatch(line)
        except _Rejected as rejected:
            self._errors |= rejected.flag
            self._pending = None
            self._reply(NAK)
            return
        self._pending = producer
        self._reply(ACK)
        if self._com_request is not None:  # COM: the stream starts right after the ACK
            self._start_stream(self._com_request, truncated=False)
            self._com_request = None

    def _dispatch(self, line: bytes) -> Producer:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise _Rejected(ErrorFlag.SYNTAX) from None
        mnemonic, *params = text.split(",")
        match = re.fullmatch(r"PR([1-9])", mnemonic)
        if match:
            return self._cmd_pr(int(match.group(1)), params)
        handler = self._handlers().get(mnemonic)
        if handler is None:
            raise _Rejected(ErrorFlag.SYNTAX)
        return handler(params)

    def _handlers(self) -> dict[str, Callable[[list[str]], Producer]]:
        handlers: dict[str, Callable[[list[str]], Producer]] = {
            "PRX": self._cmd_prx,
            "UNI": self._cmd_uni,
            "TID": self._cmd_tid,
            "ERR": self._cmd_err,
            "PNR": self._cmd_pnr,
            "SEN": self._cmd_sen,
            "COM": self._cmd_com,
            "RES": self._cmd_res,
        }
        if self.model.family == 36:
            handlers["AYT"] = self._cmd_ayt
        if self.refuse_identity:
            for mnemonic in ("AYT", "PNR"):
                handlers.pop(mnemonic, None)
        return handlers

    def _cmd_pr(self, n: int, params: list[str]) -> Producer:
        if n > self.channels:
            raise _Rejected(ErrorFlag.SYNTAX)
        _no_params(params)
        channel = self._channels[n - 1]
        return lambda: self._reading(channel)

    def _cmd_prx(self, params: list[str]) -> Producer:
        _no_params(params)
        return self._prx

    def _cmd_uni(self, params: list[str]) -> Producer:
        if len(params) > 1:
            raise _Rejected(ErrorFlag.PARAMETER)
        if params:
            code = params[0]
            if not code.isdigit() or int(code) not in {u.value for u in self.model.units}:
                raise _Rejected(ErrorFlag.PARAMETER)
            self._unit = Unit(int(code))
        return lambda: str(self._unit.value)

    def _cmd_tid(self, params: list[str]) -> Producer:
        _no_params(params)
        return lambda: ",".join(self._tid(ch) for ch in self._channels)

    def _cmd_err(self, params: list[str]) -> Producer:
        _no_params(params)
        return self._read_error_word

    def _cmd_ayt(self, params: list[str]) -> Producer:
        _no_params(params)
        m = self.model
        return lambda: f"{m.name},{m.part_number},44990000,{m.firmware},010000"

    def _cmd_pnr(self, params: list[str]) -> Producer:
        _no_params(params)
        return lambda: self.model.firmware

    def _cmd_sen(self, params: list[str]) -> Producer:
        if len(params) > self.channels or any(p not in ("0", "1", "2") for p in params):
            raise _Rejected(ErrorFlag.PARAMETER)
        for ch, value in zip(self._channels, params, strict=False):
            if value != "0" and ch.gauge.switchable:
                ch.on = value == "2"
        return lambda: ",".join(self._sen(ch) for ch in self._channels)

    def _cmd_com(self, params: list[str]) -> Producer:
        if len(params) > 1 or (params and params[0] not in COM_PERIODS):
            raise _Rejected(ErrorFlag.PARAMETER)
        self._com_request = COM_PERIODS[params[0] if params else "1"]
        return self._prx

    def _cmd_res(self, params: list[str]) -> Producer:
        if len(params) > 1 or (params and params[0] not in ("0", "1")):
            raise _Rejected(ErrorFlag.PARAMETER)
        if params == ["1"]:
            self._errors = ErrorFlag(0)
        return self._res

    # ================================================================== values

    def _channel(self, channel: int) -> _Channel:
        if not 1 <= channel <= self.channels:
            raise ValueError(f"channel {channel} outside 1..{self.channels}")
        return self._channels[channel - 1]

    def _check_unit(self, unit: Unit) -> Unit:
        if unit not in self.model.units:
            raise ValueError(f"{self.model.name} has no unit {unit.name} ({unit.value})")
        return unit

    def _status(self, ch: _Channel) -> Status:
        return self._measure(ch)[0]

    def _measure(self, ch: _Channel) -> tuple[Status, float]:
        """Status and the number (mbar) that goes with it: the pressure, a limit or a filler."""
        status = ch.forced
        if status is None:
            if ch.gauge.name == "noSEn":
                status = Status.NO_SENSOR
            elif ch.gauge.name == "noid":
                status = Status.ID_ERROR
            elif ch.gauge.switchable and not ch.on:
                status = Status.OFF
        if status is None:
            # Sample once: a pressure source may be costly, and noise must not make the status
            # and the number disagree.
            p = self._pressure(ch)
            if p < ch.gauge.low:
                return Status.UNDERRANGE, ch.gauge.low
            if p > ch.gauge.high:
                return Status.OVERRANGE, ch.gauge.high
            return Status.OK, p
        if status is Status.OK:
            return status, self._pressure(ch)
        if status is Status.UNDERRANGE and ch.gauge.low > 0:
            return status, ch.gauge.low
        if status is Status.OVERRANGE and ch.gauge.high > 0:
            return status, ch.gauge.high
        return status, FILLER_MBAR

    def _reading(self, ch: _Channel) -> str:
        status, mbar = self._measure(ch)
        logarithmic = ch.gauge.logarithmic and self._unit is not Unit.VOLT
        text = format_value(convert(mbar, self._unit), logarithmic)
        self._note_served(self._channels.index(ch) + 1, status.value, float(text))
        return f"{status.value},{text}"

    def _prx(self) -> str:
        return ",".join(self._reading(ch) for ch in self._channels)

    def _tid(self, ch: _Channel) -> str:
        status = self._status(ch)
        if status is Status.NO_SENSOR:
            return "noSEn"
        if status is Status.ID_ERROR:
            return "noid"
        return ch.gauge.name

    def _sen(self, ch: _Channel) -> str:
        if not ch.gauge.switchable:
            return "0"
        return "2" if ch.on else "1"

    def _res(self) -> str:
        codes = []
        for i, ch in enumerate(self._channels):
            status = self._status(ch)
            if status is Status.SENSOR_ERROR:
                codes.append(9 + 2 * i)
            elif status is Status.ID_ERROR:
                codes.append(10 + 2 * i)
        return ",".join(str(c) for c in codes) or "0"

    def _read_error_word(self) -> str:
        """The ERROR word; reading clears it, persistent conditions set it again at once."""
        flags = self._errors
        if self._res() != "0":
            flags |= ErrorFlag.CONTROLLER
        self._errors = ErrorFlag(0)
        return f"{flags.value:04b}"

    # ================================================================== output

    def _start_stream(self, period: float, *, truncated: bool) -> None:
        self._stream_period = period
        line = self._prx().encode() + CRLF
        if truncated:
            # The host "opened the port" somewhere inside this line: it sees only the tail.
            line = line[self._rng.randint(1, len(line) - 3) :]
        self._send(line)
        self._next_line = self._clock() + period


def _no_params(params: list[str]) -> None:
    if params:
        raise _Rejected(ErrorFlag.PARAMETER)

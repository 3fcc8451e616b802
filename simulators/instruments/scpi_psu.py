"""SCPI lab power supply, Keysight E36300 or Rigol DP800 dialect, as a byte-stream state machine.

Bytes in through :meth:`ScpiPsuSimulator.received`, bytes out through the
:class:`~simulators.serving.Link` it was connected with, so the same object serves a raw SCPI
socket (:class:`~simulators.serving.TcpServer`, what ``TCPIP::host::port::SOCKET`` talks to; the
real ports are 5025 Keysight and 5555 Rigol, any free port here), a pty (an ``ASRL`` resource),
or a unit test with a :class:`~simulators.serving.MemoryLink` (docs/protocols.md section 7).

What it reproduces, and why:

* Two dialects, chosen with ``dialect``: Keysight channel lists (``MEAS:VOLT? (@2)``,
  ``VOLT 5,(@2)``, ``OUTP? (@1)`` -> ``0|1``, NR3 numbers ``+5.00000000E+00``, ``+0,"No error"``)
  and Rigol channel arguments and numbered source nodes (``:MEAS:VOLT? CH2``, ``:SOUR2:VOLT?``,
  ``:OUTP? CH1`` -> ``ON|OFF``, ``:OUTP:CVCC? CH1`` -> ``CV|CC``, ``12.000``, ``0,"No error"``).
  Each dialect refuses the other's syntax, so a driver with the wrong dialect fails as it would
  on the real supply.
* Headers in short or long form, any case, optional nodes (``MEAS:SCAL:VOLT:DC?``,
  ``SOUR:VOLT:LEV:IMM:AMPL``, ``SYST:ERR:NEXT?``), several commands per line with ``;``.
* SCPI error handling: a command or query that fails says nothing and queues an error (-113
  undefined header, -104 data type, -109 missing parameter, -222 data out of range); a failed
  query therefore times out at the host. The queue holds ``error_capacity`` entries (20 on a
  Keysight); on overflow the newest entry becomes -350 "Queue overflow" (SCPI-99). ``*ESR?``
  reports the matching event bits.
* A load per channel (:meth:`~ScpiPsuSimulator.set_load`): the channel regulates voltage (CV)
  until the load draws more than the current limit, then current (CC) with the voltage sagging.
* Faults a test can switch on while a server runs (plain attributes):
  :attr:`~ScpiPsuSimulator.silent`, :attr:`~ScpiPsuSimulator.first_reply_delay` (LAN stacks that
  answer the first query after a connect seconds late), :attr:`~ScpiPsuSimulator.reply_delay`,
  :attr:`~ScpiPsuSimulator.split_replies`, :attr:`~ScpiPsuSimulator.garbage`,
  :attr:`~ScpiPsuSimulator.drop_next` (hang up when the
  next command arrives), :attr:`~ScpiPsuSimulator.min_command_gap` (commands arriving too soon
  after a reply are lost, as on supplies that need ``query_delay``), :meth:`push_error`.

Choices where the sources are silent (docs/protocols.md marks these [U] or does not cover them):
number formats (Keysight NR3 with 8 decimals, Rigol 3 decimals for volts and 4 for amps), the
codes chosen for malformed arguments, ``:OUTP:CVCC?`` answering ``CV`` while the output is off,
the *RST state (0 V, limit at the rating, outputs off), and identity strings (illustrative).

Why one module of about 560 lines: it is one instrument's protocol; the two dialects share the
header parser, the error queue and the channel model, and differ only in small tables, so a
split per dialect would duplicate the state machine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulators.serving.byte_device import SimulatedByteDevice
from simulators.serving.link import Clock

LF = 0x0A
CR = 0x0D

#: A host sending more than this without LF is talking nonsense; the rest of the line is cut.
MAX_LINE = 1024

DIALECTS = ("keysight", "rigol")

NO_ERROR = (0, "No error")
DATA_TYPE_ERROR = (-104, "Data type error")
MISSING_PARAMETER = (-109, "Missing parameter")
UNDEFINED_HEADER = (-113, "Undefined header")
DATA_OUT_OF_RANGE = (-222, "Data out of range")
QUEUE_OVERFLOW = (-350, "Queue overflow")


@dataclass(frozen=True)
class Rating:
    volts: float
    amps: float


@dataclass(frozen=True)
class Model:
    name: str
    maker: str
    dialect: str
    ratings: tuple[Rating, ...]
    serial: str
    firmware: str

    @property
    def idn(self) -> str:
        return f"{self.maker},{self.name},{self.serial},{self.firmware}"


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model("E36312A", "Keysight Technologies", "keysight",
              (Rating(6.0, 5.0), Rating(25.0, 1.0), Rating(25.0, 1.0)), "MY59000001", "2.1.0-1.0.4-1.12"),
        Model("E36313A", "Keysight Technologies", "keysight",
              (Rating(6.0, 10.0), Rating(25.0, 2.0), Rating(25.0, 2.0)), "MY59000002", "2.1.0-1.0.4-1.12"),
        Model("DP832", "RIGOL TECHNOLOGIES", "rigol",
              (Rating(30.0, 3.0), Rating(30.0, 3.0), Rating(5.0, 3.0)), "DP8C190000001", "00.01.14"),
        Model("DP821", "RIGOL TECHNOLOGIES", "rigol",
              (Rating(60.0, 1.0), Rating(8.0, 10.0)), "DP8E190000001", "00.01.14"),
    )
}

DEFAULT_MODEL = {"keysight": "E36312A", "rigol": "DP832"}

#: long form -> short form of every header node known here
_NODES: dict[str, str] = {
    "MEASURE": "MEAS", "SCALAR": "SCAL", "VOLTAGE": "VOLT", "CURRENT": "CURR", "DC": "DC",
    "SOURCE": "SOUR", "LEVEL": "LEV", "IMMEDIATE": "IMM", "AMPLITUDE": "AMPL",
    "OUTPUT": "OUTP", "STATE": "STAT", "CVCC": "CVCC", "ALL": "ALL",
    "SYSTEM": "SYST", "ERROR": "ERR", "NEXT": "NEXT",
    "INSTRUMENT": "INST", "NSELECT": "NSEL", "APPLY": "APPL",
}
_SHORT = set(_NODES.values())
#: nodes that may be left out (``[:SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]``)
_OPTIONAL = {"SCAL", "DC", "SOUR", "LEV", "IMM", "AMPL", "STAT", "NEXT"}

_NODE = re.compile(r"([A-Za-z]+)(\d*)")
_CHANNEL_LIST = re.compile(r"\(@\s*([\d\s,:]+)\)")
_RIGOL_CHANNEL = re.compile(r"CH(\d+)", re.IGNORECASE)

#: *ESR? bits per error class (IEEE 488.2)
_ESR_BITS = {1: 32, 2: 16, 3: 8, 4: 4}


class _Failed(Exception):
    """A command the supply refuses: no reply, and ``error`` goes into the queue."""

    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(f"{error[0]},{error[1]}")
        self.error = error


@dataclass
class _Channel:
    rating: Rating
    volts: float = 0.0
    amps: float = 0.0
    output: bool = False
    #: ohms across the terminals; None = nothing connected
    load: float | None = 10.0


Handler = Callable[[str, int | None], str | None]


class ScpiPsuSimulator(SimulatedByteDevice):
    """One SCPI power supply; a :class:`~simulators.serving.ByteDevice`.

    ``dialect`` picks the command set and the default model (E36312A, DP832); ``model`` names
    another of :data:`MODELS` of that dialect. ``seed`` makes the measurement noise repeatable;
    ``noise`` (relative standard deviation, default 1e-4) can be set to 0 for exact readings.
    """

    def __init__(
        self,
        dialect: str = "keysight",
        model: str | None = None,
        *,
        seed: int | None = None,
        error_capacity: int = 20,
        clock: Clock = time.monotonic,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
        name = (model or DEFAULT_MODEL[dialect]).upper()
        if name not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
        if MODELS[name].dialect != dialect:
            raise ValueError(f"{name} speaks the {MODELS[name].dialect} dialect, not {dialect}")
        if error_capacity < 1:
            raise ValueError("error_capacity must be at least 1")
        super().__init__(clock=clock, seed=seed)
        self.dialect = dialect
        self.model = MODELS[name]
        self.error_capacity = error_capacity
        self._channels = [_Channel(r, amps=r.amps) for r in self.model.ratings]
        self._selected = 1
        self._errors: list[tuple[int, str]] = []
        self._esr = 0

        # ---- fault knobs (besides the shared ones): plain attributes, flip them at any time ----
        #: Extra seconds before the first reply after each connect (LAN stacks waking up).
        self.first_reply_delay = 0.0
        #: Hang up when the next command line arrives, once: a TCP server closes the connection
        #: (a LAN stack resetting); on a pty the device just goes quiet until the port is reopened.
        self.drop_next = False
        #: Commands arriving less than this many seconds after a reply went out are lost.
        self.min_command_gap = 0.0
        #: Relative standard deviation of the noise on measured values.
        self.noise = 1e-4

        self._first_reply = True
        self._busy_until = float("-inf")

    # ================================================================== ByteDevice

    def _on_connect(self) -> None:
        self._first_reply = True
        self._busy_until = float("-inf")

    def _heard(self, data: bytes) -> None:
        if self.silent:
            return
        for line in self._lines(data, bytes([LF]), limit=MAX_LINE, skip=bytes([CR])):
            self._line(line)

    # ================================================================== knobs for tests

    @property
    def channels(self) -> int:
        return len(self._channels)

    def set_voltage(self, channel: int, volts: float) -> None:
        """Program the voltage as if on the front panel (no range check)."""
        with self._lock:
            self._channel(channel).volts = volts

    def set_current(self, channel: int, amps: float) -> None:
        """Program the current limit as if on the front panel (no range check)."""
        with self._lock:
            self._channel(channel).amps = amps

    def set_output(self, channel: int, on: bool) -> None:
        with self._lock:
            self._channel(channel).output = on

    def set_load(self, channel: int, ohms: float | None) -> None:
        """Connect a resistive load (None: open terminals). Low enough ohms drive the channel CC."""
        if ohms is not None and ohms <= 0:
            raise ValueError("a load needs a positive resistance")
        with self._lock:
            self._channel(channel).load = ohms

    def mode(self, channel: int) -> str:
        """``CV``, ``CC`` or ``OFF`` (output disabled)."""
        with self._lock:
            return self._operate(self._channel(channel))[0]

    def measured(self, channel: int) -> tuple[float, float]:
        """Volts and amps at the terminals now, without noise (for a chamber model)."""
        with self._lock:
            _, volts, amps = self._operate(self._channel(channel))
            return volts, amps

    def setpoints(self, channel: int) -> tuple[float, float, bool]:
        """Programmed volts, current limit and output state."""
        with self._lock:
            ch = self._channel(channel)
            return ch.volts, ch.amps, ch.output

    def push_error(self, code: int, message: str) -> None:
        """Queue an error as if the instrument had hit one (front panel, another client)."""
        with self._lock:
            self._push_error((code, message))

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The error queue now, oldest first."""
        with self._lock:
            return list(self._errors)

    def received_commands(self) -> list[str]:
        """Every command line received so far (from :attr:`log`), terminators removed."""
        with self._lock:
            data = b"".join(d for direction, d in self.log if direction == "rx")
        return [line.decode("ascii", "replace").strip("\r") for line in data.split(b"\n")[:-1]]

    # ================================================================== protocol

    def _line(self, raw: bytes) -> None:
        if self.drop_next:
            self.drop_next = False
            if self._link is not None:
                self._link.close()  # the server ends the connection once its link is closed
            return
        if self.min_command_gap > 0 and self._clock() < self._busy_until:
            return  # lost: the supply was not ready for another command yet
        text = raw.decode("ascii", "replace").strip()
        replies: list[str] = []
        for segment in text.split(";"):
            segment = segment.strip()
            if not segment:
                continue
            try:
                reply = self._execute(segment)
            except _Failed as failed:
                self._push_error(failed.error)
                continue
            if reply is not None:
                replies.append(reply)
        if replies:
            self._respond(";".join(replies))

    def _execute(self, segment: str) -> str | None:
        header, _, args = segment.partition(" ")
        args = args.strip()
        if header.startswith("*"):
            return self._common(header.upper(), args)
        key, suffix = self._normalise(header)
        handler = self._handlers().get(key)
        if handler is None:
            raise _Failed(UNDEFINED_HEADER)
        return handler(args, suffix)

    def _normalise(self, header: str) -> tuple[str, int | None]:
        """``:SOURce2:VOLTage:LEVel?`` -> (``"VOLT?"``, 2); unknown or misspelt nodes: -113."""
        query = header.endswith("?")
        body = header[:-1] if query else header
        nodes: list[str] = []
        suffix: int | None = None
        for part in body.lstrip(":").split(":"):
            match = _NODE.fullmatch(part)
            if match is None:
                raise _Failed(UNDEFINED_HEADER)
            word = match.group(1).upper()
            short = word if word in _SHORT else _NODES.get(word)
            if short is None:
                raise _Failed(UNDEFINED_HEADER)
            if match.group(2):
                # Numeric suffixes only on the Rigol source node (``:SOUR2:VOLT?``).
                if short != "SOUR" or self.dialect != "rigol":
                    raise _Failed(UNDEFINED_HEADER)
                suffix = int(match.group(2))
            if short not in _OPTIONAL:
                nodes.append(short)
        return ":".join(nodes) + ("?" if query else ""), suffix

    def _common(self, header: str, args: str) -> str | None:
        if header == "*IDN?":
            return self.model.idn
        if header == "*RST":
            for ch in self._channels:
                ch.volts, ch.amps, ch.output = 0.0, ch.rating.amps, False
            self._selected = 1
            return None
        if header == "*CLS":
            self._errors.clear()
            self._esr = 0
            return None
        if header == "*OPC?":
            return "1"
        if header == "*OPC":
            return None
        if header == "*ESR?":
            esr, self._esr = self._esr, 0
            return self._integer(esr)
        raise _Failed(UNDEFINED_HEADER)

    def _handlers(self) -> dict[str, Handler]:
        common: dict[str, Handler] = {
            "SYST:ERR?": lambda args, n: self._pop_error(),
            "INST:NSEL?": lambda args, n: self._integer(self._selected),
            "INST:NSEL": self._cmd_nsel,
        }
        if self.dialect == "keysight":
            return {
                **common,
                "MEAS:VOLT?": lambda args, n: self._numbers(args, lambda c: self._measure(c)[0]),
                "MEAS:CURR?": lambda args, n: self._numbers(args, lambda c: self._measure(c)[1]),
                "VOLT?": lambda args, n: self._numbers(args, lambda c: self._channel(c).volts),
                "CURR?": lambda args, n: self._numbers(args, lambda c: self._channel(c).amps),
                "VOLT": lambda args, n: self._keysight_set(args, "volts"),
                "CURR": lambda args, n: self._keysight_set(args, "amps"),
                "OUTP?": lambda args, n: ",".join(
                    "1" if self._channel(c).output else "0" for c in self._keysight_channels(args)),
                "OUTP": lambda args, n: self._keysight_output(args),
            }
        return {
            **common,
            "MEAS:VOLT?": lambda args, n: f"{self._measure(self._rigol_channel(args))[0]:.3f}",
            "MEAS:CURR?": lambda args, n: f"{self._measure(self._rigol_channel(args))[1]:.4f}",
            "MEAS:ALL?": lambda args, n: self._rigol_all(self._rigol_channel(args)),
            "VOLT?": lambda args, n: f"{self._source(args, n).volts:.3f}",
            "CURR?": lambda args, n: f"{self._source(args, n).amps:.4f}",
            "VOLT": lambda args, n: self._rigol_set(self._source("", n), "volts", args),
            "CURR": lambda args, n: self._rigol_set(self._source("", n), "amps", args),
            "OUTP?": lambda args, n: "ON" if self._channel(self._rigol_channel(args)).output else "OFF",
            "OUTP": lambda args, n: self._rigol_output(args),
            "OUTP:CVCC?": lambda args, n: self._rigol_cvcc(self._rigol_channel(args)),
            "APPL": lambda args, n: self._rigol_apply(args),
            "INST?": lambda args, n: f"CH{self._selected}",
            "INST": lambda args, n: self._rigol_select(args),
        }

    # ---------------------------------------------------------------- Keysight

    def _keysight_channels(self, args: str) -> list[int]:
        """``""`` -> the selected channel; ``(@1,3)``, ``(@1:3)`` -> those channels."""
        if not args:
            return [self._selected]
        match = _CHANNEL_LIST.fullmatch(args.strip())
        if match is None:
            raise _Failed(DATA_TYPE_ERROR)
        channels: list[int] = []
        for item in match.group(1).split(","):
            first, _, last = item.strip().partition(":")
            if not first.strip().isdigit() or (last and not last.strip().isdigit()):
                raise _Failed(DATA_TYPE_ERROR)
            lo = int(first)
            hi = int(last) if last else lo
            channels.extend(range(lo, hi + 1))
        for c in channels:
            self._check_channel(c)
        return channels

    def _numbers(self, args: str, value: Callable[[int], float]) -> str:
        return ",".join(f"{value(c):+.8E}" for c in self._keysight_channels(args))

    def _split_value(self, args: str) -> tuple[str, str]:
        """``"5,(@2)"`` -> (``"5"``, ``"(@2)"``); ``"5"`` -> (``"5"``, ``""``)."""
        if not args:
            raise _Failed(MISSING_PARAMETER)
        value, _, rest = args.partition(",")
        return value.strip(), rest.strip()

    def _keysight_set(self, args: str, field: str) -> None:
        value_text, channel_list = self._split_value(args)
        for c in self._keysight_channels(channel_list):
            self._set(self._channel(c), field, value_text)

    def _keysight_output(self, args: str) -> None:
        state_text, channel_list = self._split_value(args)
        state = _parse_state(state_text)
        for c in self._keysight_channels(channel_list):
            self._channel(c).output = state

    # ---------------------------------------------------------------- Rigol

    def _rigol_channel(self, args: str) -> int:
        """``""`` -> the selected channel; ``CH2`` -> 2."""
        if not args:
            return self._selected
        match = _RIGOL_CHANNEL.fullmatch(args.strip())
        if match is None:
            raise _Failed(DATA_TYPE_ERROR)
        return self._check_channel(int(match.group(1)))

    def _source(self, args: str, suffix: int | None) -> _Channel:
        if args:
            raise _Failed(DATA_TYPE_ERROR)
        return self._channel_or_fail(self._selected if suffix is None else suffix)

    def _rigol_set(self, ch: _Channel, field: str, args: str) -> None:
        if not args:
            raise _Failed(MISSING_PARAMETER)
        self._set(ch, field, args)

    def _rigol_output(self, args: str) -> None:
        channel_text, sep, state_text = args.rpartition(",")
        channel = self._rigol_channel(channel_text) if sep else self._selected
        if not state_text.strip():
            raise _Failed(MISSING_PARAMETER)
        self._channel(channel).output = _parse_state(state_text)

    def _rigol_cvcc(self, channel: int) -> str:
        mode = self._operate(self._channel(channel))[0]
        return "CC" if mode == "CC" else "CV"

    def _rigol_all(self, channel: int) -> str:
        volts, amps = self._measure(channel)
        return f"{volts:.3f},{amps:.4f},{volts * amps:.3f}"

    def _rigol_apply(self, args: str) -> None:
        parts = [p.strip() for p in args.split(",")]
        if len(parts) < 2 or not parts[1]:
            raise _Failed(MISSING_PARAMETER)
        ch = self._channel(self._rigol_channel(parts[0]))
        self._set(ch, "volts", parts[1])
        if len(parts) > 2:
            self._set(ch, "amps", parts[2])

    def _rigol_select(self, args: str) -> None:
        if not args:
            raise _Failed(MISSING_PARAMETER)
        self._selected = self._rigol_channel(args)

    def _cmd_nsel(self, args: str, suffix: int | None) -> None:
        if not args.strip().isdigit():
            raise _Failed(DATA_TYPE_ERROR if args else MISSING_PARAMETER)
        self._selected = self._check_channel(int(args))

    # ---------------------------------------------------------------- values

    def _channel(self, channel: int) -> _Channel:
        if not 1 <= channel <= len(self._channels):
            raise ValueError(f"channel {channel} outside 1..{len(self._channels)}")
        return self._channels[channel - 1]

    def _check_channel(self, channel: int) -> int:
        if not 1 <= channel <= len(self._channels):
            raise _Failed(DATA_OUT_OF_RANGE)
        return channel

    def _channel_or_fail(self, channel: int) -> _Channel:
        return self._channel(self._check_channel(channel))

    def _set(self, ch: _Channel, field: str, text: str) -> None:
        limit = ch.rating.volts if field == "volts" else ch.rating.amps
        word = text.strip().upper()
        if word in ("MIN", "MINIMUM"):
            value = 0.0
        elif word in ("MAX", "MAXIMUM"):
            value = limit
        else:
            try:
                value = float(word)
            except ValueError:
                raise _Failed(DATA_TYPE_ERROR) from None
        if not 0.0 <= value <= limit:
            raise _Failed(DATA_OUT_OF_RANGE)
        setattr(ch, field, value)

    def _operate(self, ch: _Channel) -> tuple[str, float, float]:
        """Mode, volts and amps from the setpoints and the load (ideal source, resistive load)."""
        if not ch.output:
            return "OFF", 0.0, 0.0
        if ch.load is None:
            return "CV", ch.volts, 0.0
        amps = ch.volts / ch.load
        if amps <= ch.amps:
            return "CV", ch.volts, amps
        return "CC", ch.amps * ch.load, ch.amps

    def _measure(self, channel: int) -> tuple[float, float]:
        _, volts, amps = self._operate(self._channel(channel))
        return self._noisy(volts), self._noisy(amps)

    def _noisy(self, value: float) -> float:
        return value * (1.0 + self._rng.gauss(0.0, self.noise)) if self.noise else value

    # ---------------------------------------------------------------- errors and output

    def _integer(self, value: int) -> str:
        return f"{value:+d}" if self.dialect == "keysight" else str(value)

    def _push_error(self, error: tuple[int, str]) -> None:
        code = abs(error[0])
        self._esr |= _ESR_BITS.get(code // 100, 0) if code >= 100 else 0
        if len(self._errors) >= self.error_capacity:
            self._errors[-1] = QUEUE_OVERFLOW
        else:
            self._errors.append(error)

    def _pop_error(self) -> str:
        code, message = self._errors.pop(0) if self._errors else NO_ERROR
        return f'{self._integer(code)},"{message}"'

    def _respond(self, text: str) -> None:
        extra = self.first_reply_delay if self._first_reply else 0.0
        self._first_reply = False
        self._busy_until = self._clock() + (self.reply_delay + extra) + self.min_command_gap
        self._reply((text + "\n").encode("ascii"), delay=extra)


def _parse_state(text: str) -> bool:
    word = text.strip().upper()
    if word in ("1", "ON"):
        return True
    if word in ("0", "OFF"):
        return False
    raise _Failed(DATA_TYPE_ERROR)

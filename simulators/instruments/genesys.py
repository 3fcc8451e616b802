"""TDK-Lambda Genesys power supply, GEN language, as a byte-stream state machine (docs/protocols.md 7.3).

Bytes in through :meth:`GenesysSimulator.received`, bytes out through the
:class:`~simulators.serving.Link` it was connected with, so the same object serves a pty (RS-232),
a TCP port (a serial device server), or, with other supplies, one simulated RS-485 chain
(:class:`~simulators.serving.rs485.SharedLine`), as well as a unit test with a
:class:`~simulators.serving.MemoryLink`.

What it reproduces, and why:

* Addressing as on the daisy chain: every supply hears ``ADR n``; the one at ``n`` answers ``OK``
  and is selected until another ``ADR`` (or the global byte 0xBF) deselects it; a supply that is
  not selected says nothing at all, so a wrong address, or a forgotten ``ADR`` after a power
  cycle (:meth:`~GenesysSimulator.power_cycle`), is silence.
* Every setting answers ``OK`` or an error; a query only its value; a lone CR ``OK``. Command
  errors ``C01``-``C05`` (unknown command, missing or bad parameter, checksum, out of range) and
  execution errors ``E01``, ``E02``, ``E04``, ``E06``, ``E07`` as the manuals describe them.
* The optional checksum: a command ending in ``$XX`` is checked (``C04`` when wrong) and its reply
  carries one too.
* ``PV?``, ``PC?``, ``OVP?`` and ``UVL?`` answer the exact text the setting was sent with; a
  resistive load makes the output regulate voltage (CV) or current (CC); ``MODE?`` is ``OFF``
  while the output is off or shut down by a fault.
* The status and fault condition registers (``STAT?``, ``FLT?``, ``SR``/``FR`` of ``STT?``) with
  their enable and event registers (``SENA``, ``SEVE?``, ``FENA``, ``FEVE?``), and the service
  requests they raise: a text ``!nn`` CR, or in multi-drop mode (the global bytes 0xA1 / 0xA0) the
  single byte 0x80 + address, unsolicited.
* Faults a test can switch on while a server runs: :meth:`~GenesysSimulator.trip_ovp`,
  :meth:`~GenesysSimulator.trip_foldback` (also when the output goes CC with ``FLD ON``),
  :meth:`~GenesysSimulator.set_fault` (AC fail, over temperature, shut off, enable open: the
  output is down while one lasts), :attr:`~GenesysSimulator.missing_ok` (settings, ``ADR``
  included, are not acknowledged), :attr:`~GenesysSimulator.refuse` (a command answered with an
  error code), :attr:`~GenesysSimulator.srq_in_replies` (an SRQ byte inside every reply, as a
  collision on the chain), :meth:`~GenesysSimulator.send_srq`, and the shared ones
  (:attr:`silent`, :attr:`garbage`, :attr:`split_replies`, :attr:`reply_delay`).

Choices where the sources are silent (docs/protocols.md marks them [U]): number formats (volts
with 3 decimals, amps with 4, as in the manual's ``STT?`` example), the SRQ text ``!nn`` (one
manual prints ``Inn``), which error code a bad value of ``PC``, ``OVP`` or ``UVL`` gives, that
the OVP and foldback faults are cleared by ``OUT ON`` while the others refuse it (``E07``), and
the identity strings. Not simulated: ``\\`` (repeat), backspace, the single-byte register reads
and power-on time, ``SAV``/``RCL``, master/slave.

Why one module of about 550 lines: it is one instrument's protocol; the addressing, the settings
and their error codes, the output model and the registers with their service requests all read
and change the same state, and the fault knobs act on it, so a split would pass that state
between modules for nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulators.serving.byte_device import SimulatedByteDevice
from simulators.serving.link import Clock

CR = 0x0D
LF = 0x0A
MAX_LINE = 64
MAX_ADDRESS = 30

#: single-byte global commands a host may send in multi-drop mode [M]
MD_OFF, MD_ON, DISCONNECT = 0xA0, 0xA1, 0xBF

#: fault register bits [M]
AC, OTP, FLD, OVP, SO, OFF, ENA = 1, 2, 3, 4, 5, 6, 7
#: status register bits [M]
CV_BIT, CC_BIT, NFLT_BIT, FLT_BIT, AST_BIT, FDE_BIT, LCL_BIT = 0, 1, 2, 3, 4, 5, 7
#: faults that keep the output down while they last, by the name :meth:`set_fault` takes
LATCHING = {"AC": AC, "OTP": OTP, "SO": SO, "ENA": ENA}
#: faults an ``OUT ON`` clears [U]
TRIPS = (1 << OVP) | (1 << FLD)

_MODEL = re.compile(r"GEN(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)")
_CHECKSUM = re.compile(r"(.*)\$([0-9A-Fa-f]{2})", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def checksum(text: str) -> str:
    return f"{sum(text.encode('ascii')) & 0xFF:02X}"


class _Error(Exception):
    """A command answered with an error code instead of OK or a value."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Rating:
    volts: float
    amps: float


def rating_of(model: str) -> Rating:
    """``GEN60-25`` -> 60 V, 25 A."""
    match = _MODEL.fullmatch(model.upper())
    if match is None:
        raise ValueError(f"not a Genesys model GENV-A: {model!r}")
    return Rating(float(match.group(1)), float(match.group(2)))


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


Handler = Callable[[str | None], str | None]


class GenesysSimulator(SimulatedByteDevice):
    """One Genesys supply at ``address`` (0-30); a :class:`~simulators.serving.ByteDevice`.

    ``model`` (``GEN60-25``) gives the rating; ``seed`` makes the measurement noise repeatable,
    ``noise`` (relative standard deviation, default 1e-4) can be set to 0 for exact readings.
    """

    def __init__(self, address: int = 6, model: str = "GEN60-25", *, seed: int | None = None,
                 clock: Clock = time.monotonic, serial_number: str = "S123456-01",
                 firmware: str = "REV:1U:4.3", test_date: str = "2024/03/14") -> None:
        if not 0 <= address <= MAX_ADDRESS:
            raise ValueError(f"address {address} outside 0..{MAX_ADDRESS}")
        super().__init__(clock=clock, seed=seed)
        self.address = address
        self.model = model.upper()
        self.rating = rating_of(self.model)
        self.serial_number = serial_number
        self.firmware = firmware
        self.test_date = test_date
        self.ovp_max = self.rating.volts * 1.1
        self.selected = False
        #: multi-drop mode: service requests go out as one byte, 0x80 + address
        self.multidrop = False
        self._texts: dict[str, str] = {}
        self._values: dict[str, float] = {}
        self._reset()
        self.filter_hz = 18
        #: ohms across the output terminals; None = open
        self.load: float | None = 10.0
        self._faults = 0
        self.fena = self.sena = self.feve = self.seve = 0
        self._last_status, self._last_fault = self._status(), self._faults

        # ---- fault knobs (besides the shared ones): plain attributes, flip them at any time ----
        #: Settings (``ADR`` included) get no ``OK``: a driver that waits for it times out.
        self.missing_ok = False
        #: Command header (``"MODE?"``, ``"PV"``) -> error code it is answered with (``"C01"``).
        self.refuse: dict[str, str] = {}
        #: Put this supply's SRQ byte inside every reply, as if sent during it.
        self.srq_in_replies = False
        #: Relative standard deviation of the noise on measured values.
        self.noise = 1e-4

    # ================================================================== ByteDevice

    def _heard(self, data: bytes) -> None:
        if self.silent:
            return
        text = bytearray()
        for byte in data:
            if byte >= 0x80:
                self._take_lines(bytes(text))
                text.clear()
                self._global(byte)
            else:
                text.append(byte)
        self._take_lines(bytes(text))

    def _take_lines(self, data: bytes) -> None:
        for line in self._lines(data, bytes([CR]), limit=MAX_LINE, skip=bytes([LF]), runaway="restart"):
            self._line(line.decode("ascii", "replace"))

    def _global(self, byte: int) -> None:
        """A single-byte global command: multi-drop mode on or off, or disconnect everybody."""
        if byte == MD_ON:
            self.multidrop = True
        elif byte == MD_OFF:
            self.multidrop = False
        elif byte == DISCONNECT:
            if self.selected:
                self._reply(b"OK\r")
            self.selected = False

    # ================================================================== knobs for tests

    def set_voltage(self, volts: float) -> None:
        """Program the voltage as if on the front panel (no range check)."""
        with self._lock:
            self._program("PV", volts, 3)
            self._update()

    def set_current(self, amps: float) -> None:
        with self._lock:
            self._program("PC", amps, 4)
            self._update()

    def set_ovp(self, volts: float) -> None:
        with self._lock:
            self._program("OVP", volts, 3)

    def set_output(self, on: bool) -> None:
        """The front panel's OUT button: on clears a tripped OVP or foldback, as ``OUT ON`` does."""
        with self._lock:
            if on:
                self._faults &= ~TRIPS
            self.output = on
            self._update()

    def set_load(self, ohms: float | None) -> None:
        """A resistive load (None: open terminals); low enough ohms drive the supply CC."""
        if ohms is not None and ohms <= 0:
            raise ValueError("a load needs a positive resistance")
        with self._lock:
            self.load = ohms
            self._update()

    def trip_ovp(self) -> None:
        """The over-voltage protection trips: the output shuts down until ``OUT ON``."""
        with self._lock:
            self._trip(OVP)

    def trip_foldback(self) -> None:
        with self._lock:
            self._trip(FLD)

    def set_fault(self, name: str, active: bool) -> None:
        """``AC`` (AC fail), ``OTP``, ``SO`` (rear-panel shut off) or ``ENA`` (enable open), on or off.

        While one lasts the output is down and ``OUT ON`` is refused (``E07``); when the last one
        clears, the output comes back only with auto restart (``AST ON``), else it stays off.
        """
        bit = LATCHING[name.upper()]
        with self._lock:
            if active:
                self._faults |= 1 << bit
                if not self.auto_restart:
                    self.output = False
            else:
                self._faults &= ~(1 << bit)
            self._update()

    def power_cycle(self) -> None:
        """Off and on again: the selection and the event registers are gone, the settings kept."""
        with self._lock:
            self.selected = False
            self.feve = self.seve = 0
            if not self.auto_restart:
                self.output = False
            self._update()

    def send_srq(self) -> None:
        """A service request now, as the supply sends one unsolicited."""
        with self._lock:
            self._send(self._srq())

    def measured(self) -> tuple[float, float]:
        """Volts and amps at the terminals now, without noise (for a chamber model)."""
        with self._lock:
            _, volts, amps = self._operate()
            return volts, amps

    def mode(self) -> str:
        with self._lock:
            return self._operate()[0]

    def status_register(self) -> int:
        with self._lock:
            return self._status()

    def fault_register(self) -> int:
        with self._lock:
            return self._faults

    def received_commands(self) -> list[str]:
        """Every command line received so far (from :attr:`log`), CR removed."""
        with self._lock:
            data = b"".join(d for direction, d in self.log if direction == "rx")
        return [line.decode("ascii", "replace") for line in data.split(b"\r")[:-1]]

    # ================================================================== protocol

    def _line(self, raw: str) -> None:
        text = raw.strip()
        has_sum = False
        match = _CHECKSUM.fullmatch(text)
        if match is not None:
            text, received = match.groups()
            has_sum = True
            if received.upper() != checksum(text):
                if self.selected:
                    self._answer("C04", has_sum)
                return
        command, _, argument = text.partition(" ")
        command = command.upper()
        argument = argument.strip()
        if command == "ADR":
            self._address(argument, has_sum)
            return
        if not self.selected:
            return  # another supply's conversation: silence
        try:
            code = self.refuse.get(command)
            if code is not None:
                raise _Error(code)
            reply = self._execute(command, argument or None) if command else "OK"
        except _Error as error:
            reply = error.code
        self._update()
        if reply is not None:
            self._answer(reply, has_sum)

    def _address(self, argument: str, has_sum: bool) -> None:
        if not argument.isdigit():
            if self.selected:
                self._answer("C03" if argument else "C02", has_sum)
            return
        self.selected = int(argument) == self.address
        if self.selected and not self.missing_ok:
            self._answer("OK", has_sum)

    def _execute(self, command: str, argument: str | None) -> str | None:
        handler = self._handlers().get(command)
        if handler is None:
            raise _Error("C01")
        query = command.endswith("?")
        if query and argument is not None:
            raise _Error("C03")
        if not query and argument is None and command not in ("CLS", "RST", "OVM"):
            raise _Error("C02")
        reply = handler(argument)
        if reply is None:
            return None if self.missing_ok else "OK"
        return reply

    def _handlers(self) -> dict[str, Handler]:
        def fixed(text: str) -> Handler:
            return lambda arg: text

        return {
            "IDN?": fixed(f"LAMBDA,{self.model}"),
            "REV?": fixed(self.firmware),
            "SN?": fixed(self.serial_number),
            "DATE?": fixed(self.test_date),
            "MDAV?": fixed("1"),
            "PV": lambda arg: self._set_voltage(_arg(arg)),
            "PV?": lambda arg: self._texts["PV"],
            "PC": lambda arg: self._set_current(_arg(arg)),
            "PC?": lambda arg: self._texts["PC"],
            "MV?": lambda arg: _fmt(self._noisy(self._operate()[1]), 3),
            "MC?": lambda arg: _fmt(self._noisy(self._operate()[2]), 4),
            "DVC?": lambda arg: self._dvc(),
            "STT?": lambda arg: self._stt(),
            "MODE?": lambda arg: self._operate()[0],
            "OUT": lambda arg: self._set_output(_arg(arg)),
            "OUT?": lambda arg: "ON" if self.output else "OFF",
            "OVP": lambda arg: self._set_ovp(_arg(arg)),
            "OVP?": lambda arg: self._texts["OVP"],
            "OVM": lambda arg: self._program("OVP", self.ovp_max, 3),
            "UVL": lambda arg: self._set_uvl(_arg(arg)),
            "UVL?": lambda arg: self._texts["UVL"],
            "FLD": lambda arg: self._flag("foldback", _arg(arg)),
            "FLD?": lambda arg: "ON" if self.foldback else "OFF",
            "AST": lambda arg: self._flag("auto_restart", _arg(arg)),
            "AST?": lambda arg: "ON" if self.auto_restart else "OFF",
            "RMT": lambda arg: self._set_remote(_arg(arg)),
            "RMT?": lambda arg: self.remote,
            "FILTER": lambda arg: self._set_filter(_arg(arg)),
            "FILTER?": lambda arg: str(self.filter_hz),
            "STAT?": lambda arg: f"{self._status():02X}",
            "FLT?": lambda arg: f"{self._faults:02X}",
            "SENA": lambda arg: self._set_register("sena", _arg(arg)),
            "SENA?": lambda arg: f"{self.sena:02X}",
            "FENA": lambda arg: self._set_register("fena", _arg(arg)),
            "FENA?": lambda arg: f"{self.fena:02X}",
            "SEVE?": lambda arg: self._take_event("seve"),
            "FEVE?": lambda arg: self._take_event("feve"),
            "CLS": lambda arg: self._clear(),
            "RST": lambda arg: self._reset(),
        }

    # ---------------------------------------------------------------- settings

    def _program(self, name: str, value: float, decimals: int, text: str | None = None) -> None:
        self._values[name] = value
        self._texts[name] = text if text is not None else _fmt(value, decimals)

    def _set_voltage(self, text: str) -> None:
        volts = _number(text)
        if volts > self.rating.volts * 1.05 or volts > self._values["OVP"] * 0.95:
            raise _Error("E01")
        if volts * 0.95 < self._values["UVL"]:
            raise _Error("E02")
        self._program("PV", volts, 3, text)

    def _set_current(self, text: str) -> None:
        amps = _number(text)
        if amps > self.rating.amps * 1.05:
            raise _Error("C05")
        self._program("PC", amps, 4, text)

    def _set_ovp(self, text: str) -> None:
        volts = _number(text)
        if volts > self.ovp_max:
            raise _Error("C05")
        if volts < self._values["PV"] * 1.05:
            raise _Error("E04")
        self._program("OVP", volts, 3, text)

    def _set_uvl(self, text: str) -> None:
        volts = _number(text)
        if volts > self._values["PV"] * 0.95:
            raise _Error("E06")
        self._program("UVL", volts, 3, text)

    def _set_output(self, text: str) -> None:
        on = _on_off(text)
        if on and self._faults & ~TRIPS:
            raise _Error("E07")
        if on:
            self._faults &= ~TRIPS
        self.output = on

    def _flag(self, name: str, text: str) -> None:
        setattr(self, name, _on_off(text))

    def _set_remote(self, text: str) -> None:
        word = {"0": "LOC", "1": "REM", "2": "LLO"}.get(text, text.upper())
        if word not in ("LOC", "REM", "LLO"):
            raise _Error("C03")
        self.remote = word

    def _set_filter(self, text: str) -> None:
        if text not in ("18", "23", "46"):
            raise _Error("C03")
        self.filter_hz = int(text)

    def _set_register(self, name: str, text: str) -> None:
        if not re.fullmatch(r"[0-9A-Fa-f]{1,2}", text):
            raise _Error("C03")
        setattr(self, name, int(text, 16))

    def _take_event(self, name: str) -> str:
        value = getattr(self, name)
        setattr(self, name, 0)
        return f"{value:02X}"

    def _clear(self) -> None:
        self.feve = self.seve = 0

    def _reset(self) -> None:
        """``RST``: zero volts and amps, output off, OVP at its maximum, UVL 0, foldback and auto restart off."""
        self._program("PV", 0.0, 3)
        self._program("PC", 0.0, 4)
        self._program("OVP", self.ovp_max, 3)
        self._program("UVL", 0.0, 3)
        self.output = False
        self.foldback = False
        self.auto_restart = False
        self.remote = "REM"

    # ---------------------------------------------------------------- output and registers

    def _operate(self) -> tuple[str, float, float]:
        """Mode, volts and amps from the settings, the faults and the load (ideal source)."""
        if not self.output or self._faults:
            return "OFF", 0.0, 0.0
        volts, amps = self._values["PV"], self._values["PC"]
        if self.load is None:
            return "CV", volts, 0.0
        drawn = volts / self.load
        if drawn <= amps:
            return "CV", volts, drawn
        return "CC", amps * self.load, amps

    def _trip(self, bit: int) -> None:
        self._faults |= 1 << bit
        self.output = False
        self._update()

    def _status(self) -> int:
        mode = self._operate()[0]
        word = (1 << CV_BIT if mode == "CV" else 0) | (1 << CC_BIT if mode == "CC" else 0)
        word |= 1 << FLT_BIT if self._faults else 1 << NFLT_BIT
        word |= (1 << AST_BIT if self.auto_restart else 0) | (1 << FDE_BIT if self.foldback else 0)
        return word | (1 << LCL_BIT if self.remote == "LOC" else 0)

    def _update(self) -> None:
        """Foldback trips in CC; changed condition bits latch into the event registers where
        enabled, and a service request goes out when an event register stops being all zero."""
        if self.foldback and self._operate()[0] == "CC":
            self._faults |= 1 << FLD
            self.output = False
        status, fault = self._status(), self._faults
        before = self.feve | self.seve
        self.feve |= fault & ~self._last_fault & self.fena
        self.seve |= (status ^ self._last_status) & status & self.sena
        self._last_status, self._last_fault = status, fault
        if not before and self.feve | self.seve and self._link is not None:
            self._send(self._srq())

    def _srq(self) -> bytes:
        return bytes([0x80 | self.address]) if self.multidrop else f"!{self.address:02d}\r".encode("ascii")

    def _dvc(self) -> str:
        _, volts, amps = self._operate()
        v = self._values
        return ",".join((_fmt(self._noisy(volts), 3), _fmt(v["PV"], 3), _fmt(self._noisy(amps), 4),
                         _fmt(v["PC"], 4), _fmt(v["OVP"], 3), _fmt(v["UVL"], 3)))

    def _stt(self) -> str:
        _, volts, amps = self._operate()
        return (f"MV({_fmt(self._noisy(volts), 3)}),PV({self._texts['PV']}),MC({_fmt(self._noisy(amps), 4)}),"
                f"PC({self._texts['PC']}),SR({self._status():02X}),FR({self._faults:02X})")

    def _noisy(self, value: float) -> float:
        return value * (1.0 + self._rng.gauss(0.0, self.noise)) if self.noise else value

    def _answer(self, text: str, with_checksum: bool) -> None:
        if with_checksum:
            text = f"{text}${checksum(text)}"
        data = text.encode("ascii") + b"\r"
        if self.srq_in_replies:
            middle = len(data) // 2
            data = data[:middle] + bytes([0x80 | self.address]) + data[middle:]
        self._reply(data)


def _arg(argument: str | None) -> str:
    assert argument is not None  # _execute refuses a setting without one (C02)
    return argument


def _number(text: str) -> float:
    if not _NUMBER.fullmatch(text) or len(text) > 12:
        raise _Error("C03")
    value = float(text)
    if value < 0:
        raise _Error("C05")
    return value


def _on_off(text: str) -> bool:
    word = text.upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise _Error("C03")

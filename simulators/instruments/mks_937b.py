"""MKS 937B gauge controller: the ``@aaa...;FF`` protocol as a state machine (docs/protocols.md section 3).

Bytes in through :meth:`MKS937BSimulator.received`, bytes out through the :class:`~simulators.
serving.Link` it was connected with; no sockets, no threads of its own, so the same object runs
under a :class:`~simulators.serving.PtyServer`, a :class:`~simulators.serving.TcpServer`, on a
:class:`~simulators.serving.rs485.SharedLine` with other units, or in a unit test with a
:class:`~simulators.serving.MemoryLink`.

What it reproduces, and why:

* Addressing as on RS-485: a unit answers its own address and 254 (universal, the reply comes
  from its own address), executes 255 (broadcast) without a reply, and ignores every other
  address, so several simulators can share one line and a wrong address is silence.
* Six channels PR1..PR6 (slots A1, A2, B1, B2, C1, C2), each with a gauge type whose range
  decides the status string: a Pirani below 1e-4 Torr reads ``LO<E-04``, a cold cathode above its
  protection pressure reads ``PROT_OFF``; at the default pump-down the Pirani channels go under
  range on their own, so status strings appear without any fault switched on.
* Readings in the *current* unit (``U!`` or :meth:`~MKS937BSimulator.set_unit`); gauges with
  logarithmic output give 3 significant digits (``1.10E-9``, as in pymeasure's test), capacitance
  manometers 4 (``7.602E+2``, the manual's example).
* NAK codes on bad commands (unknown command 160, bad channel 163, bad argument 169, ``!`` on a
  read-only command 175, ion-gauge command on another gauge 152, no gauge 151).
* Faults a test can switch on while a server runs: :attr:`~MKS937BSimulator.silent`,
  :attr:`~MKS937BSimulator.garbage`, :attr:`~MKS937BSimulator.garbage_at_connect`,
  :attr:`~MKS937BSimulator.truncate` (first characters lost, RSD off),
  :attr:`~MKS937BSimulator.unterminated` (``;FF`` lost),
  :attr:`~MKS937BSimulator.echo` (2-wire adapter), :attr:`~MKS937BSimulator.split_replies`,
  :attr:`~MKS937BSimulator.reply_delay`, :attr:`~MKS937BSimulator.nak_all`,
  :attr:`~MKS937BSimulator.bare_nak` (905-style ``NAK`` without code),
  :attr:`~MKS937BSimulator.refuse_identity` (``SN?`` and ``MT?`` refused with NAK 160),
  :attr:`~MKS937BSimulator.no_gauge_spelling`, :meth:`~MKS937BSimulator.set_status`
  (any status string on a channel), :meth:`~MKS937BSimulator.set_unit` (front-panel change).

Choices where the sources are silent or disagree (docs/protocols.md marks them [U]):

* ``PRZ?`` fields are separated by one blank (EPICS/ISIS client code splits on whitespace).
* A missing gauge reads ``NOGAUGE`` (EPICS spelling); :attr:`no_gauge_spelling` switches to
  ``NO_GAUGE``. Over range reads ``ATM`` for Pirani, convection and capacitance gauges.
* Cold/hot cathode gauges start in ``WAIT`` for :attr:`ignition_delay` seconds after ``CPn!ON``.
* ``MT?`` lists the six channels' gauge codes comma-separated, ``SN?`` an illustrative serial,
  ``AD?`` the 3-digit address: formats not captured from hardware.
* Command letters are case-sensitive; parameters (``U!mbar`` as PyExpLabSys sends) are not.
* A message's ``@`` restarts parsing (a truncated request followed by a full one is answered once);
  more than :data:`MAX_MESSAGE` bytes without ``;FF`` are dropped.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simulators.instruments.gauges import PumpDownChannel, SimulatedGaugeController
from simulators.serving.link import Clock

TERMINATOR = b";FF"
UNIVERSAL = 254
BROADCAST = 255

#: Bytes kept while waiting for ``;FF``; a host sending more is talking nonsense.
MAX_MESSAGE = 128

#: NAK codes the simulator emits (a subset of the 9xx family table).
NAK_NO_GAUGE = 151
NAK_NOT_IONGAUGE = 152
NAK_UNRECOGNIZED = 160
NAK_INVALID_CHANNEL = 163
NAK_INVALID_ARGUMENT = 169
NAK_QUERY_BYTE = 175

#: ``U!`` parameter -> Torr-to-unit factor; the key is what ``U?`` answers.
UNITS: dict[str, float] = {"TORR": 1.0, "MBAR": 1.33322368, "PASCAL": 133.322368, "MICRON": 1000.0}
MBAR_PER_TORR = UNITS["MBAR"]

#: Status strings :meth:`MKS937BSimulator.set_status` accepts (others are accepted too, verbatim).
STATUS_STRINGS = ("LO<E-11", "LO<E-04", "LO<E-03", "ATM", "OFF", "RP_OFF", "WAIT", "CTRL_OFF",
                  "PROT_OFF", "MISCONN", "NOGAUGE", "NO_GAUGE")

#: ``Tn?`` letter for a cold/hot cathode in each state (pymeasure's map).
ION_STATUS: dict[str, str] = {"OFF": "O", "WAIT": "W", "PROT_OFF": "P", "CTRL_OFF": "C", "RP_OFF": "R",
                              "NOGAUGE": "N", "NO_GAUGE": "N"}

SLOTS = ("A1", "A2", "B1", "B2", "C1", "C2")


@dataclass(frozen=True)
class GaugeType:
    """A sensor type: range in Torr, what it says outside it, whether ``Tn?`` applies."""

    code: str
    low: float
    high: float
    under: str
    over: str
    ion: bool = False
    digits: int = 3


GAUGES: dict[str, GaugeType] = {
    g.code: g
    for g in (
        GaugeType("CC", 1e-11, 1e-2, "LO<E-11", "PROT_OFF", ion=True),
        GaugeType("HC", 1e-11, 1e-2, "LO<E-11", "PROT_OFF", ion=True),
        GaugeType("PR", 1e-4, 760.0, "LO<E-04", "ATM"),
        GaugeType("CP", 1e-3, 1000.0, "LO<E-03", "ATM"),
        GaugeType("CM", 1e-3, 1000.0, "LO<E-03", "ATM", digits=4),
        GaugeType("NC", 0.0, 0.0, "", ""),  # no gauge connected
    )
}

DEFAULT_GAUGES = ("CC", "PR", "CC", "PR", "CM", "NC")


def format_pressure(value: float, digits: int = 3) -> str:
    """``1.1e-9`` -> ``"1.10E-9"`` (unpadded exponent, as the manual's ``7.602E+2``)."""
    if value == 0:
        return f"{0:.{digits - 1}f}E+0"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = round(value / 10**exponent, digits - 1)
    if abs(mantissa) >= 10:  # 9.995 rounds up to 10.00
        mantissa /= 10
        exponent += 1
    return f"{mantissa:.{digits - 1}f}E{exponent:+d}"


def parse_unit(text: str) -> str:
    """A unit name for ``U!`` (``torr``, ``mbar``, ``pascal``/``pa``, ``micron``), case-insensitive."""
    key = text.strip().upper()
    key = "PASCAL" if key == "PA" else key
    if key not in UNITS:
        raise ValueError(f"unknown unit {text!r}; expected one of {', '.join(UNITS)}")
    return key


class _Nak(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(kw_only=True)
class _Channel(PumpDownChannel):
    gauge: GaugeType
    on: bool = True
    wait_until: float = float("-inf")
    forced: str | None = None


class MKS937BSimulator(SimulatedGaugeController):
    """One 937B at ``address``; a :class:`~simulators.serving.ByteDevice`.

    ``unit`` is the power-on unit (``TORR``, ``MBAR``, ``PASCAL``, ``MICRON``). ``gauges`` names the
    gauge type of each of the six channels (codes of :data:`GAUGES`; ``NC`` = nothing connected).
    ``seed`` makes the noise repeatable; ``clock`` drives pump-down curves and the ion-gauge
    ignition delay (a fake one in unit tests).

    Pressures in mbar (as every simulator's pressure hook), per channel, first match wins:
    :meth:`set_pressure` (pinned, exact), :meth:`set_pressure_source` (a chamber model), else a
    pump-down from ``start_mbar`` to ``base_mbar`` with 1 % noise.
    """

    def __init__(
        self,
        address: int = 253,
        unit: str = "TORR",
        seed: int | None = None,
        *,
        gauges: Sequence[str] = DEFAULT_GAUGES,
        clock: Clock = time.monotonic,
        start_mbar: float = 1e-3,
        base_mbar: float = 2e-9,
        serial_number: str = "937B12345",
    ) -> None:
        if not 1 <= address <= 253:
            raise ValueError(f"address {address} outside 1..253 (254 and 255 are reserved)")
        if len(gauges) != 6:
            raise ValueError(f"a 937B has 6 channels, got {len(gauges)} gauge type(s)")
        unknown = [g for g in gauges if g not in GAUGES]
        if unknown:
            raise ValueError(f"unknown gauge type(s) {unknown}; known: {', '.join(GAUGES)}")
        super().__init__(clock=clock, seed=seed)
        self.address = address
        self.serial_number = serial_number
        self._unit = parse_unit(unit)
        self._channels = [
            _Channel(start_mbar, base_mbar, tau=40.0 * (1 + 0.3 * i), gauge=GAUGES[g]) for i, g in enumerate(gauges)
        ]

        # ---- fault knobs (besides the shared ones): plain attributes, flip them at any time ----
        #: Characters lost from the start of each reply (RS-485 without RSD: "@253ACK764;FF" -> "64;FF").
        self.truncate = 0
        #: How many more replies lose characters; None = every reply while :attr:`truncate` is set.
        self.truncate_replies: int | None = None
        #: Send every received byte straight back, as a 2-wire RS-485 adapter does (on a
        #: SharedLine, switch it on for one unit only: the adapter echoes once).
        self.echo = False
        #: Send replies without their ``;FF`` (a glitch eating the terminator).
        self.unterminated = False
        #: NAK every command with this code (e.g. 160: unit set to another protocol); None = off.
        self.nak_all: int | None = None
        #: NAKs without code (``@253NAK;FF``, the 905 manual's form).
        self.bare_nak = False
        #: NAK 160 (unrecognized) to the identity queries ``SN?`` and ``MT?``, as a unit without them would.
        self.refuse_identity = False
        #: How a missing gauge reads: ``NOGAUGE`` (EPICS) or ``NO_GAUGE`` (pychron) [U].
        self.no_gauge_spelling = "NOGAUGE"
        #: Seconds a cold/hot cathode shows ``WAIT`` after ``CPn!ON``.
        self.ignition_delay = 0.0

    # ================================================================== ByteDevice

    def _heard(self, data: bytes) -> None:
        if self.echo:
            self._send(data)
        if self.silent:
            return
        for message in self._lines(data, TERMINATOR, limit=MAX_MESSAGE, runaway="tail"):
            start = message.rfind(b"@")
            if start >= 0:
                self._message(message[start + 1 :])

    # ================================================================== knobs for tests

    @property
    def unit(self) -> str:
        return self._unit

    def set_unit(self, unit: str) -> None:
        """Change the unit as if on the front panel: no wire traffic, readings jump scale."""
        with self._lock:
            self._unit = parse_unit(unit)

    def set_status(self, channel: int, status: str | None) -> None:
        """Make a channel read ``status`` (``WAIT``, ``MISCONN``, ``RP_OFF``...) instead of a pressure.

        Any text is sent verbatim, so unknown strings can be tried too; None = normal again.
        """
        if status is not None and (not status or not status.isprintable() or ";" in status or " " in status):
            raise ValueError(f"a status string is printable, without blanks or ';': {status!r}")
        with self._lock:
            self._channel(channel).forced = status

    def set_power(self, channel: int, on: bool) -> None:
        """Switch a channel's sensor power as ``CPn!ON|OFF`` would (no ignition delay)."""
        with self._lock:
            ch = self._channel(channel)
            ch.on = on
            ch.wait_until = float("-inf")

    def reading(self, channel: int) -> str:
        """What ``PRn?`` answers now: a number in the current unit or a status string."""
        with self._lock:
            return self._reading(self._channel(channel))

    # ================================================================== protocol

    def _message(self, message: bytes) -> None:
        """``message`` is what follows ``@``, without ``;FF``: ``253PR1?``."""
        text = message.decode("ascii", "replace")
        if len(text) < 3 or not text[:3].isdigit():
            return
        address = int(text[:3])
        if address not in (self.address, UNIVERSAL, BROADCAST):
            return  # someone else's: silence, as on a real line
        try:
            if self.nak_all is not None:
                raise _Nak(self.nak_all)
            response = self._dispatch(text[3:])
        except _Nak as nak:
            body = "NAK" if self.bare_nak else f"NAK{nak.code}"
        else:
            body = f"ACK{response}"
        if address != BROADCAST:
            self._reply(f"@{self.address:03d}{body}".encode("ascii") + TERMINATOR)

    def _dispatch(self, command: str) -> str:
        match = re.fullmatch(r"([A-Z]+)(\d*)([?!])(.*)", command, re.DOTALL)
        if match is None:
            raise _Nak(NAK_QUERY_BYTE if re.fullmatch(r"[A-Z]+\d*.*", command) else NAK_UNRECOGNIZED)
        name, number, action, param = match.groups()
        handler = self._handlers().get(name)
        if handler is None or (self.refuse_identity and name in ("SN", "MT")):
            raise _Nak(NAK_UNRECOGNIZED)
        channel = int(number) if number else None
        return handler(channel, param if action == "!" else None)

    def _handlers(self) -> dict[str, Callable[[int | None, str | None], str]]:
        return {
            "PR": self._cmd_pr,
            "PRZ": self._cmd_prz,
            "U": self._cmd_u,
            "CP": self._cmd_cp,
            "T": self._cmd_t,
            "SN": self._cmd_sn,
            "MT": self._cmd_mt,
            "AD": self._cmd_ad,
        }

    def _cmd_pr(self, channel: int | None, param: str | None) -> str:
        _read_only(param)
        return self._reading(self._numbered(channel))

    def _cmd_prz(self, channel: int | None, param: str | None) -> str:
        _read_only(param)
        _no_number(channel)
        return " ".join(self._reading(ch) for ch in self._channels)

    def _cmd_u(self, channel: int | None, param: str | None) -> str:
        _no_number(channel)
        if param is not None:
            try:
                self._unit = parse_unit(param)
            except ValueError:
                raise _Nak(NAK_INVALID_ARGUMENT) from None
        return self._unit

    def _cmd_cp(self, channel: int | None, param: str | None) -> str:
        ch = self._numbered(channel)
        if ch.gauge.code == "NC":
            raise _Nak(NAK_NO_GAUGE)
        if param is not None:
            value = param.strip().upper()
            if value not in ("ON", "OFF"):
                raise _Nak(NAK_INVALID_ARGUMENT)
            if value == "ON" and not ch.on and ch.gauge.ion:
                ch.wait_until = self._clock() + self.ignition_delay
            ch.on = value == "ON"
        return "ON" if ch.on else "OFF"

    def _cmd_t(self, channel: int | None, param: str | None) -> str:
        _read_only(param)
        ch = self._numbered(channel)
        if not ch.gauge.ion:
            raise _Nak(NAK_NOT_IONGAUGE)
        return ION_STATUS.get(self._reading(ch), "G")

    def _cmd_sn(self, channel: int | None, param: str | None) -> str:
        _read_only(param)
        _no_number(channel)
        return self.serial_number

    def _cmd_mt(self, channel: int | None, param: str | None) -> str:
        _read_only(param)
        _no_number(channel)
        return ",".join(ch.gauge.code for ch in self._channels)

    def _cmd_ad(self, channel: int | None, param: str | None) -> str:
        _read_only(param)
        _no_number(channel)
        return f"{self.address:03d}"

    # ================================================================== values

    def _channel(self, channel: int) -> _Channel:
        if not 1 <= channel <= 6:
            raise ValueError(f"channel {channel} outside 1..6")
        return self._channels[channel - 1]

    def _numbered(self, channel: int | None) -> _Channel:
        if channel is None or not 1 <= channel <= 6:
            raise _Nak(NAK_INVALID_CHANNEL)
        return self._channels[channel - 1]

    def _reading(self, ch: _Channel) -> str:
        if ch.forced is not None:
            return ch.forced
        gauge = ch.gauge
        if gauge.code == "NC":
            return self.no_gauge_spelling
        if not ch.on:
            return "OFF"
        if self._clock() < ch.wait_until:
            return "WAIT"
        # Sample once: a pressure source may be costly, and noise must not make range and number disagree.
        torr = self._pressure(ch) / MBAR_PER_TORR
        if torr < gauge.low:
            return gauge.under
        if torr > gauge.high:
            return gauge.over
        return format_pressure(torr * UNITS[self._unit], gauge.digits)

    # ================================================================== output

    def _distort(self, data: bytes) -> bytes:
        if self.truncate and self.truncate_replies != 0:
            data = data[self.truncate :]
            if self.truncate_replies is not None:
                self.truncate_replies -= 1
        if self.unterminated:
            data = data.removesuffix(TERMINATOR)
        return data


def _read_only(param: str | None) -> None:
    if param is not None:
        raise _Nak(NAK_QUERY_BYTE)


def _no_number(channel: int | None) -> None:
    if channel is not None:
        raise _Nak(NAK_INVALID_CHANNEL)

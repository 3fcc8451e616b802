"""TDK-Lambda Genesys power supplies in their GEN language over RS-232 or RS-485 (docs/protocols.md 7.3).

Dialogue: a command and CR out, one CR-terminated reply back: the value of a query, ``OK`` for a
setting, or an error code (``C01``...). A supply answers only after ``ADR n`` selected it, and
stays selected until another ``ADR`` selects another supply of the chain; so which supply is
selected is a property of the *line*, shared by every driver on it (:class:`Line`). A driver
sends ``ADR n`` at connect, whenever another supply was selected last, and after any failed
exchange (a supply that was power-cycled forgets it was selected, 7.5.2), and always reads the
``OK``: leaving one unread would shift every later answer by one. Replies carry no address, so
after a failure on the line, whichever driver had it, the next exchange on the line first lets a
late reply arrive and drops it (``settle``), then selects its supply again.

A multi-drop supply may send SRQ bytes (0x80-0x9F) at any time, even inside another supply's
reply; they are dropped from every frame (``codec.decode``), and SRQ text messages and an echo
of the request are skipped. The driver only asks: it never sends a setting other than ``ADR``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar
from weakref import WeakKeyDictionary

from pydantic import Field

from bridge.drivers.base import Channel, Driver, DriverOptions, at_middle, named, reads
from bridge.drivers.common.baseline import Baseline, BaselineReader
from bridge.drivers.common.serial_session import SerialSession
from bridge.drivers.genesys import codec
from bridge.drivers.genesys.codec import Kind, Quantity, Reply
from bridge.drivers.registry import register_driver
from bridge.errors import BridgeError, DeviceError, ProtocolError, TransportTimeout
from bridge.model import BOOL, FLOAT, ChannelType, Measurement, bits_type, enum_type
from bridge.transports.serial import SerialTransport

log = logging.getLogger("bridge.drivers.genesys")

T = TypeVar("T")


class GenesysOptions(DriverOptions):
    #: the supply's address (front panel, 0-30); 6 as pymeasure assumes, the factory value is not confirmed [U]
    address: int = Field(default=6, ge=codec.MIN_ADDRESS, le=codec.MAX_ADDRESS)
    #: ``each``: one query per channel; ``combined``: ``STT?`` (or ``DVC?`` with limits) answers
    #: voltages, currents (and registers) in one exchange
    poll: Literal["each", "combined"] = "each"
    #: also read the over-voltage protection and under-voltage limit settings (V)
    limits: bool = False
    #: send ``$XX`` after every command and require it on every reply
    checksum: bool = False
    #: exchanges repeated after a garbled reply (never after silence or a refusal)
    retries: int = Field(default=1, ge=0, le=5)
    #: seconds to let a late reply arrive before it is dropped, after a failed exchange
    settle: float = Field(default=0.1, ge=0, le=5)
    #: SRQ messages and echoes skipped while waiting for one reply
    max_skipped_frames: int = Field(default=4, ge=0, le=100)


#: the settings read into a run's baseline (their query is the name and '?')
BASELINE_SETTINGS = ("OVP", "UVL", "FLD", "AST")


@dataclass
class Line:
    """What every driver on one serial line shares: the supply the last ``ADR`` selected."""

    #: None: unknown (nothing sent yet, or an exchange failed since)
    selected: int | None = None


_LINES: WeakKeyDictionary[SerialTransport, Line] = WeakKeyDictionary()


def line_of(transport: SerialTransport) -> Line:
    """The :class:`Line` of ``transport``, one per transport object whoever asks."""
    line = _LINES.get(transport)
    if line is None:
        line = _LINES[transport] = Line()
    return line


_DESCRIPTIONS: dict[Quantity, str] = {
    Quantity.VOLTAGE: "measured output voltage",
    Quantity.CURRENT: "measured output current",
    Quantity.VOLTAGE_SETPOINT: "programmed voltage",
    Quantity.CURRENT_SETPOINT: "programmed current (limit)",
    Quantity.OVP: "over-voltage protection setting",
    Quantity.UVL: "under-voltage limit setting",
    Quantity.OUTPUT: "output state, true = on",
    Quantity.MODE: "operation mode: CV, CC, or OFF (output off or a fault shutdown)",
    Quantity.STATUS: "status condition register",
    Quantity.FAULT: "fault condition register",
}

TYPES: dict[Quantity, ChannelType] = {
    **{q: FLOAT for q in Quantity},
    Quantity.OUTPUT: BOOL,
    Quantity.MODE: enum_type(*codec.MODES),
    Quantity.STATUS: bits_type(codec.STATUS_BITS),
    Quantity.FAULT: bits_type(codec.FAULT_BITS),
}

_FIRST = (Quantity.VOLTAGE, Quantity.CURRENT, Quantity.VOLTAGE_SETPOINT, Quantity.CURRENT_SETPOINT)
_LIMITS = (Quantity.OVP, Quantity.UVL)
_LAST = (Quantity.OUTPUT, Quantity.MODE, Quantity.STATUS, Quantity.FAULT)


def quantities(options: GenesysOptions) -> list[Quantity]:
    """The channels of these options, in the order they are read."""
    return [*_FIRST, *(_LIMITS if options.limits else ()), *_LAST]


@register_driver("genesys")
class Genesys(Driver[SerialTransport, GenesysOptions]):
    """Voltage and current (measured and programmed), output state, mode, status and fault registers."""

    transports = ("serial",)
    Options = GenesysOptions
    summary = "TDK-Lambda Genesys power supplies, GEN language over RS-232/RS-485 (ADR multi-drop)"

    def __init__(self, transport: SerialTransport, options: GenesysOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.session = SerialSession(transport, instrument, options.settle, log)
        self.line = line_of(transport)
        #: the ``IDN?`` answer read at connect (``LAMBDA,GEN60-25``)
        self.identity = ""
        #: this poll's values from a combined query, by quantity
        self._polled: dict[Quantity, Measurement] = {}

    @classmethod
    def channel_table(cls, options: GenesysOptions) -> Sequence[Channel[Genesys]]:
        return [Channel(q.value, codec.UNITS[q], reads(cls.measure, q), _DESCRIPTIONS[q], TYPES[q])
                for q in quantities(options)]

    # ---------------------------------------------------------- driver hooks

    def connect(self) -> None:
        self._lost()  # a reopened line: what was selected, and what is in flight, is unknown
        self.identity = self.query(codec.IDENTITY_QUERY)
        log.info("%s: %s at address %d", self.instrument, self.identity, self.options.address)

    def baseline(self) -> Baseline:
        """``IDN?`` (maker, model), ``REV?`` (firmware), ``SN?``; and the protections that decide
        what the output does when something goes wrong: ``OVP?``, ``UVL?``, ``FLD?`` (foldback),
        ``AST?`` (auto-restart). Each is asked on its own, so a refused one is recorded, not fatal."""
        reader = BaselineReader(self.instrument)
        idn = reader.ask("IDN?", lambda: self.query(codec.IDENTITY_QUERY))
        maker, _, model = (idn or "").partition(",")
        reader.set_identity(vendor=maker.strip() or None, model=model.strip() or None,
                            firmware=reader.ask("REV?", lambda: self.query("REV?")),
                            serial=reader.ask("SN?", lambda: self.query("SN?")))
        reader.set_configuration(**{
            name.lower(): reader.ask(f"{name}?", lambda name=name: self.query(f"{name}?"))  # type: ignore[misc]
            for name in BASELINE_SETTINGS})
        return reader.result()

    def begin_poll(self) -> None:
        self._polled = {}
        if self.options.poll == "combined":
            command, parse, fields = (
                (codec.DISPLAY_QUERY, codec.parse_display, codec.DISPLAY_FIELDS) if self.options.limits
                else (codec.STATUS_QUERY, codec.parse_status, codec.STATUS_FIELDS))

            def combined() -> list[Measurement]:
                reply = self.query(command)
                parsed = self._parse(lambda: parse(reply), command)
                return [parsed[q] for q in fields]

            self._polled = dict(zip(fields, at_middle(combined), strict=True))

    # ---------------------------------------------------------- quantities

    def measure(self, quantity: Quantity) -> Measurement:
        """This poll's value from the combined query, else the quantity's own query."""
        polled = self._polled.get(quantity)
        if polled is not None:
            return polled
        command = codec.QUERIES[quantity]
        reply = self.query(command)
        return self._parse(lambda: codec.parse_value(quantity, reply), command)

    # ---------------------------------------------------------- dialogue

    def query(self, command: str) -> str:
        """The supply's answer to ``command`` (selected first if it is not); repeated after a
        garbled reply, up to ``retries`` times. A refusal is a DeviceError naming its code."""
        for attempt in range(self.options.retries + 1):
            try:
                self.select()
                reply = self.exchange(command)
                if reply.kind is Kind.OK:  # taking it would shift every later answer by one (7.5.2)
                    raise ProtocolError(f"{self.instrument}: 'OK' where {command} expects a value "
                                        "(a late acknowledgement?)")
                return reply.text
            except ProtocolError as exc:
                self._lost()
                if attempt == self.options.retries:
                    raise
                log.debug("%s: repeating %s after: %s", self.instrument, command, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def select(self) -> None:
        """``ADR n`` and its ``OK``, unless this supply is the one the line selected last.

        After a failure on the line (whichever driver had it: replies carry no address, so a
        late one could be taken by anyone's next exchange) it resynchronises first.
        """
        address = self.options.address
        if self.line.selected == address:
            return
        if self.line.selected is None:
            self.session.invalidate()
        command = codec.address_command(address)
        reply = self.exchange(command)
        if reply.kind is not Kind.OK:
            self._lost()
            raise ProtocolError(f"{self.instrument}: {command} answered {reply.text!r} instead of OK")
        self.line.selected = address

    def exchange(self, command: str) -> Reply:
        """One command and its reply; any failure but a refusal leaves the line's selection unknown."""
        request = codec.encode(command, with_checksum=self.options.checksum)
        try:
            with self.session.exchange(command, in_step=(DeviceError,)):
                self.transport.write(request)
                return self._await_reply(command)
        except DeviceError:
            raise
        except TransportTimeout as exc:
            self._lost()
            unterminated = self.transport.flush_input()
            if unterminated:  # the supply did answer, garbled: worth a repetition, unlike silence
                raise ProtocolError(f"{self.instrument}: no complete reply to {command} from address "
                                    f"{self.options.address} (unterminated: {unterminated!r})") from exc
            raise TransportTimeout(
                f"{self.instrument}: no reply to {command} from address {self.options.address} within "
                f"{self.transport.timeout:g} s (a wrong address or baud rate, or a supply not selected "
                "with ADR)") from exc
        except BridgeError as exc:
            self._lost()
            renamed = named(self.instrument, exc)
            if renamed is exc:
                raise
            raise renamed from exc

    def _await_reply(self, command: str) -> Reply:
        deadline = time.monotonic() + self.transport.timeout
        skipped = 0
        while True:
            frame = self.transport.read_until(codec.CR, max(0.0, deadline - time.monotonic()))
            reply = codec.decode(frame, with_checksum=self.options.checksum)
            if reply.srq:
                log.debug("%s: dropped SRQ byte(s) %s from the reply to %s", self.instrument, reply.srq.hex(" "),
                          command)
            if reply.kind is Kind.ERROR:
                raise DeviceError(f"{self.instrument}: {command} refused with {codec.error_reason(reply.text)} "
                                  f"(address {self.options.address})", reply.text)
            # An echo of the request (2-wire adapters) decodes to the command itself, checksum removed.
            if reply.kind is not Kind.SRQ and reply.text not in ("", command):
                return reply
            log.debug("%s: skipped %r while waiting for the reply to %s", self.instrument, frame, command)
            skipped += 1
            if skipped > self.options.max_skipped_frames:
                raise ProtocolError(f"no reply to {command} among {skipped} SRQ messages, echoes or empty "
                                    f"frames (last {frame!r})")

    def _parse(self, parse: Callable[[], T], command: str) -> T:
        try:
            return parse()
        except ProtocolError as exc:
            self._lost()  # perhaps a late reply: resynchronise and select again
            raise ProtocolError(f"{self.instrument}: {command}: {exc}") from exc

    def _lost(self) -> None:
        """The line is out of step: whoever talks next resynchronises and selects again."""
        self.line.selected = None

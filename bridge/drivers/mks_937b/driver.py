"""MKS 937B gauge controller (and 900-series ``@aaa...;FF`` transducers) over RS-232/RS-485.

Dialogue: send ``@aaaCMD?;FF``, read ``;FF``-terminated frames until one is ours. On a shared
RS-485 line the frames before ours may be the request's own echo (2-wire adapters), a late
reply from another unit, or a reply whose first characters were lost at the line turnaround;
each is skipped, and an exchange that produced only fragments is retried (docs/protocols.md 3.4/3.5).
Whatever goes wrong, the next exchange first waits a moment and drops what is in flight, so a
late reply to the failed request is never taken for the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

from pydantic import Field

from bridge.drivers.base import distinct
from bridge.drivers.common.baseline import Baseline, BaselineReader
from bridge.drivers.common.gauge_controller import GaugeControllerDriver, GaugeControllerOptions
from bridge.drivers.common.serial_session import SerialSession
from bridge.drivers.mks_937b import codec
from bridge.drivers.registry import register_driver
from bridge.errors import DeviceError, ProtocolError, TransportTimeout
from bridge.model import Measurement
from bridge.transports.serial import SerialTransport

log = logging.getLogger("bridge.drivers.mks_937b")

T = TypeVar("T")
ChannelNumber = Annotated[int, Field(ge=1, le=6)]

#: The 937B's six pressure channels (PR1..PR6) by front-panel slot.
SLOTS = ("A1", "A2", "B1", "B2", "C1", "C2")


class MKS937BOptions(GaugeControllerOptions):
    #: pressure channels to read: PR1..PR6 = slots A1, A2, B1, B2, C1, C2 (900-series: their PRn)
    channels: Annotated[list[ChannelNumber], distinct("a channel is listed twice")] = Field(
        default=[1, 2, 3, 4, 5, 6], min_length=1, max_length=6)
    #: RS-485 address 1-253, or 254 = "any unit answers" (one unit on the line only). The
    #: factory default is not confirmed for the 937B (253 in pymeasure and on 900-series, 254 in
    #: PyExpLabSys) [U]; 253 is taken, and 254 reaches a unit whose address is unknown.
    address: int = Field(default=253, ge=1, le=254)
    #: exchanges repeated after a reply that arrived truncated or garbled (never after silence)
    retries: int = Field(default=1, ge=0, le=5)
    #: seconds to let a late reply die down before dropping it, after a failed exchange
    settle: float = Field(default=0.1, ge=0, le=5)
    #: frames that are not ours (echo, other units, fragments) tolerated per exchange
    max_skipped_frames: int = Field(default=8, ge=0, le=100)


@register_driver("mks_937b")
class MKS937B(GaugeControllerDriver[MKS937BOptions]):
    """Pressure per channel, in the unit set on the controller (read with ``U?`` every poll).

    ``mode: per_channel`` sends PRn? per channel; ``mode: all`` reads every channel with one
    PRZ? (937B only).
    """

    Options = MKS937BOptions
    summary = "MKS 937B gauge controller and 900-series transducers (@aaa...;FF protocol)"
    UNITS = "Torr|mbar|Pa|mTorr"
    ALL_QUERY = "PRZ?"

    def __init__(self, transport: SerialTransport, options: MKS937BOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.session = SerialSession(transport, instrument, options.settle, log)

    @classmethod
    def describe(cls, channel: int) -> str:
        return f"PR{channel} (937B slot {SLOTS[channel - 1]}), in the unit set on the controller"

    # ---------------------------------------------------------- the controller's protocol

    def read_pressure(self, channel: int) -> Measurement:
        return self._decode(f"PR{channel}", lambda body: codec.parse_pressure(body, self.units))

    def read_all_pressures(self) -> list[Measurement]:
        return self._decode("PRZ", lambda body: codec.parse_all_pressures(body, self.units))

    def read_unit(self) -> str:
        return self._decode("U", codec.parse_unit)

    def baseline(self) -> Baseline:
        """``SN?`` (serial), ``MT?`` (module types, kept as the controller writes them [U]) and ``U?``.

        The 937B's command list seen (docs/protocols.md 3.1) has no model or firmware query; a
        900-series transducer refuses ``MT?`` (NAK 160), which is recorded and tolerated.
        """
        reader = BaselineReader(self.instrument)
        serial = reader.ask("SN?", lambda: self._decode("SN", codec.parse_text))
        reader.set_identity(vendor="MKS Instruments", serial=serial)
        reader.set_configuration(unit=reader.ask("U?", self.read_unit),
                                 module_types=reader.ask("MT?", lambda: self._decode("MT", codec.parse_text)))
        return reader.result()

    # ---------------------------------------------------------- dialogue

    def query(self, command: str) -> str:
        """``PR1`` -> the ACK'd response text (``"1.10E-9"``); a NAK raises :class:`DeviceError`."""
        return self.exchange(command)[0].body

    def exchange(self, command: str, param: str | None = None) -> tuple[codec.Reply, bytes]:
        """One request and its ACK reply (with the frame, for error messages); retried after fragments."""
        for attempt in range(self.options.retries + 1):
            try:
                return self._exchange_once(command, param)
            except ProtocolError as exc:
                if attempt == self.options.retries:
                    raise
                log.debug("%s: retrying %s after: %s", self.instrument, command, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange_once(self, command: str, param: str | None) -> tuple[codec.Reply, bytes]:
        request = codec.encode(self.options.address, command, param)
        label = request[4:-3].decode("ascii")  # "PR1?" for messages
        with self.session.exchange(label):
            self.transport.write(request)
            reply, frame = self._await_reply(request, label)
        if not reply.ack:
            raise DeviceError(
                f"{self.instrument}: {label} refused with {codec.nak_reason(reply.nak_code)} "
                f"(address {reply.address:03d}, frame {frame!r})", reply.nak_code)
        return reply, frame

    def _await_reply(self, request: bytes, label: str) -> tuple[codec.Reply, bytes]:
        address = self.options.address
        deadline = time.monotonic() + self.transport.timeout
        skipped = 0
        fragment = b""  # the last frame without a usable head
        while skipped <= self.options.max_skipped_frames:
            try:
                frame = self.transport.read_until(codec.TERMINATOR, max(0.0, deadline - time.monotonic()))
            except TransportTimeout as exc:
                # Bytes without ";FF", or a frame without head: the device did answer, but
                # garbled. That is retried; only a quiet line is "silence".
                unterminated = self.transport.flush_input()
                if unterminated or fragment:
                    what = f"unterminated: {unterminated!r}" if unterminated else f"truncated or garbled: {fragment!r}"
                    raise ProtocolError(
                        f"{self.instrument}: no complete reply to {label} from address {address:03d} "
                        f"({what})") from exc
                raise TransportTimeout(
                    f"{self.instrument}: no reply to {label} from address {address:03d} "
                    f"within {self.transport.timeout:g} s") from exc
            kind, reply = codec.classify(frame, request, address)
            if kind is codec.FrameKind.REPLY and reply is not None:
                return reply, frame
            log.debug("%s: skipped %s frame %r while waiting for the reply to %s",
                      self.instrument, kind.value, frame, label)
            if kind is codec.FrameKind.FRAGMENT:
                fragment = frame
            skipped += 1
        raise ProtocolError(
            f"{self.instrument}: no reply to {label} from address {address:03d} among {skipped} frames "
            f"that were not ours (last {frame!r})")

    def _decode(self, command: str, parse: Callable[[str], T]) -> T:
        """Query ``command`` and parse its response; a parse failure quotes the frame."""
        reply, frame = self.exchange(command)
        return self.session.parse(lambda: parse(reply.body), frame)

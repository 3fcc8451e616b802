"""Pfeiffer TPG 261/262/361/362/366 gauge controllers over serial or the TPG 36x LAN port.

Dialogue: send a mnemonic, wait for ACK (skipping stale lines), send ENQ, read the data line.
Whatever goes wrong mid-dialogue, the next exchange starts by resynchronising (ETX, settle,
flush), because a late reply from the failed exchange would otherwise be taken for the next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Literal, TypeVar

from pydantic import Field, field_validator

from bridge.drivers.base import Channel, Driver, DriverOptions
from bridge.drivers.pfeiffer_tpg import codec
from bridge.drivers.registry import register_driver
from bridge.errors import BridgeError, DeviceError, ProtocolError
from bridge.model import Measurement
from bridge.transports.serial import SerialTransport

log = logging.getLogger("bridge.drivers.pfeiffer_tpg")

GaugeNumber = Annotated[int, Field(ge=1, le=6)]
T = TypeVar("T")


class TPGOptions(DriverOptions):
    #: gauge channels to read: 1-2 on a 26x/362, 1 on a 361, 1-6 on a 366
    channels: list[GaugeNumber] = Field(default=[1, 2], min_length=1, max_length=6)
    #: "per_channel" sends PRn per gauge; "all" reads every gauge with one PRX exchange
    mode: Literal["per_channel", "all"] = "per_channel"
    #: seconds to let a stopped power-up stream die down after ETX before flushing
    settle: float = Field(default=0.15, ge=0, le=5)
    #: stale lines tolerated while waiting for ACK (labmcp skips up to 8)
    max_stale_lines: int = Field(default=8, ge=0, le=100)

    @field_validator("channels")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("a gauge channel is listed twice")
        return v


def _gauge_reader(gauge: int) -> Callable[[PfeifferTPG], Measurement]:
    return lambda driver: driver.pressure(gauge)


@register_driver("pfeiffer_tpg")
class PfeifferTPG(Driver[SerialTransport, TPGOptions]):
    """Pressure per gauge, in the unit set on the controller (read with UNI every poll)."""

    transports = ("serial",)
    Options = TPGOptions
    summary = "Pfeiffer TPG 261/262/361/362/366 gauge controllers (mnemonic protocol)"

    def __init__(self, transport: SerialTransport, options: TPGOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.units = ""
        self._needs_resync = True
        self._all: list[Measurement] = []

    @classmethod
    def channel_table(cls, options: TPGOptions) -> Sequence[Channel[PfeifferTPG]]:
        return [
            Channel(f"pressure_{n}", "controller unit (mbar|Torr|Pa|micron|hPa|V)", _gauge_reader(n), f"gauge {n}")
            for n in options.channels
        ]

    # ---------------------------------------------------------- quantities

    def pressure(self, gauge: int) -> Measurement:
        if self.options.mode == "all":
            index = gauge - 1
            if index >= len(self._all):
                raise ProtocolError(
                    f"{self.instrument}: PRX answered {len(self._all)} gauges, gauge {gauge} missing")
            return self._all[index]
        return self._parse(codec.parse_pressure, self.query(f"PR{gauge}"), self.units)

    def read_unit(self) -> str:
        return self._parse(codec.parse_unit, self.query("UNI"))

    def error_word(self) -> list[str]:
        return self._parse(codec.decode_error_word, self.query("ERR"))

    # ---------------------------------------------------------- driver hooks

    def connect(self) -> None:
        self.resync()
        self.units = self.read_unit()

    def begin_poll(self) -> None:
        # The unit can be changed on the front panel at any time; values follow it.
        self.units = self.read_unit()
        if self.options.mode == "all":
            started = time.time()
            frame = self.query("PRX")
            at = (started + time.time()) / 2
            self._all = [
                Measurement(m.value, m.quality, m.units, m.detail, at)
                for m in self._parse(codec.parse_all_pressures, frame, self.units)
            ]

    # ---------------------------------------------------------- dialogue

    def _parse(self, parse: Callable[..., T], frame: bytes, *args: str) -> T:
        """Run a codec parser; a bad frame names this instrument and forces a resync."""
        try:
            return parse(frame, *args)
        except ProtocolError as exc:
            self._needs_resync = True
            raise ProtocolError(f"{self.instrument}: {exc}") from exc

    def resync(self) -> None:
        """Stop a power-up or COM stream and drop whatever is in flight."""
        self.transport.write(codec.ETX)
        junk = self.transport.drain(self.options.settle)
        junk += self.transport.flush_input()
        if junk:
            log.debug("%s: dropped %d stale bytes at resync: %r", self.instrument, len(junk), junk[:80])
        self._needs_resync = False

    def query(self, mnemonic: str) -> bytes:
        """Mnemonic, ACK, ENQ, data line; returns the data frame."""
        if self._needs_resync:
            self.resync()
        try:
            # The protocol is strictly request/response: anything that arrived while idle is
            # stale (a COM stream, a late reply) and would be taken for this command's ACK.
            stale = self.transport.flush_input()
            if stale:
                log.debug("%s: dropped %d unsolicited bytes before %s", self.instrument, len(stale), mnemonic)
            self.transport.write(codec.encode_command(mnemonic))
            self._await_ack(mnemonic)
            self.transport.write(codec.ENQ)
            frame = self.transport.read_until(codec.LINE_END)
        except BridgeError:
            self._needs_resync = True
            raise
        if codec.is_error_word(frame) and mnemonic != "ERR":
            self._needs_resync = True
            raise DeviceError(
                f"{self.instrument}: {mnemonic} answered with the error word "
                f"{codec.printable(frame)} ({codec.describe_error_word(frame)})", codec.printable(frame))
        return frame

    def _await_ack(self, mnemonic: str) -> None:
        frame = b""
        for _ in range(self.options.max_stale_lines + 1):
            frame = self.transport.read_until(codec.LINE_END)
            kind = codec.handshake(frame)
            if kind == codec.ACK:
                return
            if kind == codec.NAK:
                self.transport.write(codec.ENQ)
                word = self.transport.read_until(codec.LINE_END)
                reason = codec.describe_error_word(word) if codec.is_error_word(word) else repr(word)
                raise DeviceError(f"{self.instrument}: {mnemonic} refused with NAK ({reason})",
                                  codec.printable(word))
            log.debug("%s: skipped stale line %r while waiting for ACK to %s", self.instrument, frame, mnemonic)
        raise ProtocolError(
            f"{self.instrument}: no ACK to {mnemonic} after {self.options.max_stale_lines} stale lines "
            f"(last {frame!r})")

"""Pfeiffer TPG 261/262/361/362/366 gauge controllers over serial or the TPG 36x LAN port.

Dialogue: send a mnemonic, wait for ACK (skipping stale lines), send ENQ, read the data line.
Whatever goes wrong mid-dialogue, the next exchange starts by resynchronising (ETX, settle,
flush), because a late reply from the failed exchange would otherwise be taken for the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, TypeVar

from pydantic import Field

from bridge.drivers.base import distinct
from bridge.drivers.common.baseline import Baseline, BaselineReader
from bridge.drivers.common.gauge_controller import GaugeControllerDriver, GaugeControllerOptions
from bridge.drivers.common.serial_session import SerialSession
from bridge.drivers.pfeiffer_tpg import codec
from bridge.drivers.registry import register_driver
from bridge.errors import DeviceError, ProtocolError
from bridge.model import Measurement
from bridge.transports.serial import SerialTransport

log = logging.getLogger("bridge.drivers.pfeiffer_tpg")

GaugeNumber = Annotated[int, Field(ge=1, le=6)]
T = TypeVar("T")


class TPGOptions(GaugeControllerOptions):
    #: gauge channels to read: 1-2 on a 26x/362, 1 on a 361, 1-6 on a 366
    channels: Annotated[list[GaugeNumber], distinct("a gauge channel is listed twice")] = Field(
        default=[1, 2], min_length=1, max_length=6)
    #: seconds to let a stopped power-up stream die down after ETX before flushing
    settle: float = Field(default=0.15, ge=0, le=5)
    #: stale lines tolerated while waiting for ACK (labmcp skips up to 8)
    max_stale_lines: int = Field(default=8, ge=0, le=100)


@register_driver("pfeiffer_tpg")
class PfeifferTPG(GaugeControllerDriver[TPGOptions]):
    """Pressure per gauge, in the unit set on the controller (read with UNI every poll).

    ``mode: per_channel`` sends PRn per gauge; ``mode: all`` reads every gauge with one PRX exchange.
    """

    Options = TPGOptions
    summary = "Pfeiffer TPG 261/262/361/362/366 gauge controllers (mnemonic protocol)"
    UNITS = "mbar|Torr|Pa|mTorr|hPa|V"
    CHANNEL = "gauge"
    ALL_QUERY = "PRX"

    def __init__(self, transport: SerialTransport, options: TPGOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        # ETX stops a power-up or COM stream before what is in flight is dropped.
        self.session = SerialSession(transport, instrument, options.settle, log, resync_with=codec.ETX)

    # ---------------------------------------------------------- the controller's protocol

    def read_pressure(self, channel: int) -> Measurement:
        return self._parse(codec.parse_pressure, self.query(f"PR{channel}"), self.units)

    def read_all_pressures(self) -> list[Measurement]:
        return self._parse(codec.parse_all_pressures, self.query("PRX"), self.units)

    def read_unit(self) -> str:
        return self._parse(codec.parse_unit, self.query("UNI"))

    def baseline(self) -> Baseline:
        """``AYT`` (TPG 36x: model, part number, serial, firmware, hardware), else ``PNR`` (firmware:
        a TPG 26x answers AYT with NAK); the unit (``UNI``) and the gauge type per channel (``TID``)."""
        reader = BaselineReader(self.instrument)
        reader.set_identity(vendor="Pfeiffer Vacuum")
        ayt = reader.ask("AYT", lambda: self._parse(codec.parse_ayt, self.query("AYT")))
        if ayt is not None:
            reader.set_identity(**ayt)
        else:
            firmware = reader.ask("PNR", lambda: self._parse(codec.parse_firmware, self.query("PNR")))
            reader.set_identity(firmware=firmware)
        reader.set_configuration(unit=reader.ask("UNI", self.read_unit))
        gauges = reader.ask("TID", lambda: self._parse(codec.parse_gauge_ids, self.query("TID")))
        for n, gauge in enumerate(gauges or (), start=1):
            reader.set_configuration(**{f"gauge_{n}": gauge})
        return reader.result()

    # ---------------------------------------------------------- dialogue

    def _parse(self, parse: Callable[..., T], frame: bytes, *args: str) -> T:
        """Run a codec parser; a bad frame names this instrument and forces a resync."""
        return self.session.parse(lambda: parse(frame, *args))

    def query(self, mnemonic: str) -> bytes:
        """Mnemonic, ACK, ENQ, data line; returns the data frame."""
        # The protocol is strictly request/response: anything that arrived while idle is
        # stale (a COM stream, a late reply) and would be taken for this command's ACK.
        with self.session.exchange(mnemonic):
            self.transport.write(codec.encode_command(mnemonic))
            self._await_ack(mnemonic)
            self.transport.write(codec.ENQ)
            frame = self.transport.read_until(codec.LINE_END)
        if codec.is_error_word(frame) and mnemonic != "ERR":
            self.session.invalidate()
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

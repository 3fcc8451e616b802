"""SCPI power supplies (Keysight E36300 style, Rigol DP800 style) over a VISA resource.

The driver only asks: measured voltage and current, the programmed setpoints and the output
state per channel, and the error queue. It never sends a command without a reply (``*RST``,
``*CLS``, a setting), because a read after one hangs until timeout and has hung a DP832's LAN
interface (docs/protocols.md 7.5.1), and because a reading bridge has no business changing a supply.

After every poll the error queue is read with ``SYST:ERR?`` until it reports no error: left
alone it fills and overflows (-350, 7.5.3). Entries are logged with the instrument's name (once
while they repeat poll after poll) and kept in :attr:`ScpiPsu.last_errors`. A poll that failed
with a timeout is followed by the same drain: an unknown or refused query gets no reply at all
in SCPI, and the queue says why (-113 undefined header: wrong dialect), so the timeout is then
reported as a :class:`DeviceError` carrying the instrument's error code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from bridge.drivers.base import Channel, Driver, distinct, reads
from bridge.drivers.common.baseline import Baseline, BaselineReader, idn_fields
from bridge.drivers.common.visa_session import VisaSession, VisaSessionOptions
from bridge.drivers.registry import register_driver
from bridge.drivers.scpi_psu import codec
from bridge.drivers.scpi_psu.codec import Dialect, Quantity, ScpiError
from bridge.errors import BridgeError, DeviceError, ProtocolError, TransportTimeout
from bridge.model import Measurement, Reading
from bridge.transports.visa import VisaTransport

log = logging.getLogger("bridge.drivers.scpi_psu")

ChannelNumber = Annotated[int, Field(ge=1, le=8)]


class PsuOptions(VisaSessionOptions):
    #: command set; "auto" picks it from the maker in ``*IDN?`` (unknown makers: keysight)
    dialect: Literal["auto", "keysight", "rigol"] = "auto"
    #: output channels to read
    channels: Annotated[list[ChannelNumber], distinct("a channel is listed twice")] = Field(
        default=[1], min_length=1, max_length=8)
    #: error-queue entries read per drain at most (a Keysight queue holds 20)
    max_errors: int = Field(default=32, ge=1, le=1000)


_DESCRIPTIONS: dict[Quantity, str] = {
    Quantity.VOLTAGE: "measured output voltage",
    Quantity.CURRENT: "measured output current",
    Quantity.VOLTAGE_SETPOINT: "programmed voltage",
    Quantity.CURRENT_SETPOINT: "programmed current limit",
    Quantity.OUTPUT: "output state, true = on",
}


@register_driver("scpi_psu")
class ScpiPsu(Driver[VisaTransport, PsuOptions]):
    """Voltage, current, setpoints and output state per channel; the error queue after each poll."""

    transports = ("visa",)
    Options = PsuOptions
    summary = "SCPI power supplies (Keysight E36300 / Rigol DP800 style) over VISA; error queue drained"

    def __init__(self, transport: VisaTransport, options: PsuOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.session = VisaSession(transport, instrument, options, codec.IDN, log)
        #: the ``*IDN?`` answer read at connect
        self.identity = ""
        self.dialect = Dialect.KEYSIGHT if options.dialect == "auto" else Dialect(options.dialect)
        #: error-queue entries found by the latest drain (empty when the queue was clean)
        self.last_errors: tuple[ScpiError, ...] = ()

    @classmethod
    def channel_table(cls, options: PsuOptions) -> Sequence[Channel[ScpiPsu]]:
        return [
            Channel(f"{q.value}_{n}", codec.UNITS[q], reads(cls.measure, q, n), f"channel {n} {_DESCRIPTIONS[q]}",
                    codec.TYPES[q])
            for n in options.channels
            for q in Quantity
        ]

    # ---------------------------------------------------------- driver hooks

    def connect(self) -> None:
        self.identity = self.session.identify() or ""
        self.dialect = self._choose_dialect(self.identity)
        log.info("%s: %s (dialect %s)", self.instrument, self.identity, self.dialect.value)
        self.drain_errors()  # what piled up before we came: logged, then gone

    def read(self) -> list[Reading]:
        try:
            readings = super().read()
        except TransportTimeout as exc:
            errors = self._errors_after_failure()
            if errors:
                raise DeviceError(f"{exc}; the instrument reports {', '.join(map(str, errors))}",
                                  errors[0].code) from exc
            raise
        try:
            self.drain_errors()
        except BridgeError as exc:  # the readings are good; the next exchange resynchronises
            log.warning("%s: could not read the error queue after the poll: %s", self.instrument, exc)
        return readings

    def baseline(self) -> Baseline:
        """Identity from ``*IDN?`` asked again (maker, model, serial, firmware); configuration: the
        dialect in use and the channels read. Limits (OVP, OCP) are not asked: their queries differ
        by maker and an unknown query costs a timeout in SCPI (7.5.1)."""
        reader = BaselineReader(self.instrument)
        reply = reader.ask(codec.IDN, lambda: self.session.query(codec.IDN))
        if reply is not None:
            reader.set_identity(**idn_fields(reply))
        reader.set_configuration(dialect=self.dialect.value,
                                 channels=",".join(str(n) for n in self.options.channels))
        return reader.result()

    # ---------------------------------------------------------- quantities

    def measure(self, quantity: Quantity, channel: int) -> Measurement:
        reply = self.session.query(codec.command(self.dialect, quantity, channel))
        try:
            return codec.quantity_measurement(quantity, reply)
        except ProtocolError as exc:
            self.session.invalidate()  # perhaps a late reply: resynchronise before the next query
            raise ProtocolError(f"{self.instrument}: channel {channel}: {exc}") from exc

    def drain_errors(self) -> tuple[ScpiError, ...]:
        """Read ``SYST:ERR?`` until the queue is empty; log new entries, keep them in last_errors."""
        errors: list[ScpiError] = []
        for _ in range(self.options.max_errors):
            reply = self.session.query(codec.ERROR_QUERY)
            try:
                entry = codec.parse_error(reply)
            except ProtocolError as exc:
                self.session.invalidate()
                raise ProtocolError(f"{self.instrument}: {exc}") from exc
            if not entry.is_error:
                break
            errors.append(entry)
        else:
            log.warning("%s: error queue not empty after %d entries", self.instrument, self.options.max_errors)
        for entry in errors:
            # The same fault poll after poll (a wrong channel) is worth one warning, not thousands.
            level = logging.DEBUG if entry in self.last_errors else logging.WARNING
            log.log(level, "%s: instrument error %s", self.instrument, entry)
        self.last_errors = tuple(errors)
        return self.last_errors

    # ---------------------------------------------------------- helpers

    def _errors_after_failure(self) -> tuple[ScpiError, ...]:
        try:
            return self.drain_errors()
        except BridgeError as exc:
            log.debug("%s: error queue unreadable after a failed poll: %s", self.instrument, exc)
            return ()

    def _choose_dialect(self, identity: str) -> Dialect:
        detected = codec.dialect_from_idn(identity)
        if self.options.dialect == "auto":
            if detected is None:
                log.warning("%s: no known maker in *IDN? %r; using the keysight dialect (channel lists)",
                            self.instrument, identity)
                return Dialect.KEYSIGHT
            return detected
        chosen = Dialect(self.options.dialect)
        if detected is not None and detected is not chosen:
            log.warning("%s: dialect %s configured, but *IDN? %r looks like %s", self.instrument,
                        chosen.value, identity, detected.value)
        return chosen

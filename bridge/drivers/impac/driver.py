"""LumaSense / Advanced Energy IMPAC IGA/ISR/IS pyrometers over RS-232 or RS-485 (UPP protocol).

Dialogue: ``AAxx[param]`` CR out, data CR back, one exchange at a time. Replies carry no
address, so on a shared RS-485 line a late reply is indistinguishable from the next
pyrometer's answer: after any failed exchange the driver listens for ``settle`` seconds and
drops whatever arrives, and it drops anything unsolicited before each request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Literal, TypeVar

from pydantic import Field, field_validator

from bridge.drivers.base import Channel, Driver, DriverOptions, at_middle, named
from bridge.drivers.common.baseline import Baseline, BaselineReader
from bridge.drivers.common.serial_session import SerialSession
from bridge.drivers.impac import codec
from bridge.drivers.registry import register_driver
from bridge.errors import DeviceError, ProtocolError, TransportError, TransportTimeout
from bridge.model import Measurement
from bridge.transports.serial import SerialTransport

log = logging.getLogger("bridge.drivers.impac")

T = TypeVar("T")
ExposureCode = Annotated[int, Field(ge=0, le=99)]
Seconds = Annotated[float, Field(ge=0, le=3600)]
#: the channel listing's unit: what AAfh reports, else options.unit
UNIT_LABEL = "degC|degF"


class ImpacOptions(DriverOptions):
    #: the pyrometer's address 00-97; 99 (global with reply) only with one pyrometer on the line
    address: int = Field(default=0, ge=0, le=codec.GLOBAL_WITH_REPLY)
    #: unit assumed when the model does not answer AAfh
    unit: Literal["C", "F"] = "C"
    #: re-read AAfh every poll (when the model answered it at connect), so a unit changed with
    #: InfraWin is reported instead of read as a jump of the temperature
    track_unit: bool = True
    #: ratio pyrometers: read one-channel and ratio temperature with one AAek exchange
    ratio: bool = False
    #: publish the emissivity set on the pyrometer (AAem) as a channel
    emissivity: bool = False
    #: publish the exposure time t90 (AAez code looked up in exposure_times) as a channel
    exposure_time: bool = False
    #: AAez code -> seconds; differs per model, copy the table from the pyrometer's manual
    exposure_times: dict[ExposureCode, Seconds] = Field(default_factory=lambda: dict(codec.DEFAULT_EXPOSURE_TIMES))
    #: seconds to listen for (and drop) a late or partial reply after a failed exchange
    settle: float = Field(default=0.1, ge=0, le=5)

    @field_validator("address")
    @classmethod
    def _not_silent_global(cls, v: int) -> int:
        if v == codec.GLOBAL_NO_REPLY:
            raise ValueError("address 98 is the global address without reply; nothing could be read")
        if codec.MAX_ADDRESS < v < codec.GLOBAL_NO_REPLY:
            raise ValueError(f"address must be 00-{codec.MAX_ADDRESS} (or 99, global with reply)")
        return v


@register_driver("impac")
class Impac(Driver[SerialTransport, ImpacOptions]):
    """Temperature (and optionally ratio temperature, emissivity, t90) of one pyrometer."""

    transports = ("serial",)
    Options = ImpacOptions
    summary = "LumaSense/Advanced Energy IMPAC IGA/ISR/IS pyrometers (UPP protocol, 8E1)"

    def __init__(self, transport: SerialTransport, options: ImpacOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.units = codec.FAHRENHEIT if options.unit == "F" else codec.CELSIUS
        #: the model answered AAfh at connect (older ones stay silent or say "no")
        self.unit_readable = False
        self.session = SerialSession(transport, instrument, options.settle, log)
        self._ratio: tuple[Measurement, Measurement] | None = None

    @classmethod
    def channel_table(cls, options: ImpacOptions) -> Sequence[Channel[Impac]]:
        channels: list[Channel[Impac]] = []
        if options.ratio:
            channels += [
                Channel("temperature", UNIT_LABEL, lambda d: d._ratio_pair()[0], "one-channel temperature (AAek)"),
                Channel("temperature_ratio", UNIT_LABEL, lambda d: d._ratio_pair()[1], "ratio temperature (AAek)"),
            ]
        else:
            channels.append(Channel("temperature", UNIT_LABEL, Impac.temperature, "AAms"))
        if options.emissivity:
            channels.append(Channel("emissivity", "1", Impac.emissivity, "emissivity set on the pyrometer (AAem)"))
        if options.exposure_time:
            channels.append(Channel("exposure_time", "s", Impac.exposure_time, "t90 (AAez code, model table)"))
        return channels

    # ---------------------------------------------------------- quantities

    def temperature(self) -> Measurement:
        return self.query("ms", lambda frame: codec.parse_temperature(frame, self.units))

    def ratio_temperatures(self) -> tuple[Measurement, Measurement]:
        """(one-channel, ratio) temperature from one AAek exchange, stamped at its middle."""
        one, ratio = at_middle(lambda: self.query("ek", lambda frame: codec.parse_ratio(frame, self.units)))
        return one, ratio

    def emissivity(self) -> Measurement:
        return self.query("em", codec.parse_emissivity)

    def exposure_time(self) -> Measurement:
        code = self.query("ez", codec.parse_exposure_code)
        return codec.exposure_time(code, self.options.exposure_times)

    def read_unit(self) -> str:
        return self.query("fh", codec.parse_unit)

    def baseline(self) -> Baseline:
        """Identity: ``AAna`` (model name), ``AAsn`` (serial), ``AAve`` (type and firmware version).
        Configuration: the unit (``AAfh``, or the configured one on models without it), the emissivity
        (``AAem``), the exposure time code (``AAez``) and the basic range (``AAmb``, °C [U]).

        Older firmware stays silent on a command it lacks, newer answers ``no`` (docs/protocols.md
        5.1): either is recorded and the next query asked.
        """
        reader = BaselineReader(self.instrument)
        reader.set_identity(vendor="IMPAC (LumaSense / Advanced Energy)")
        for key, command in (("model", "na"), ("serial", "sn"), ("firmware", "ve")):
            reader.set_identity(**{key: reader.ask(f"AA{command}", partial(self.query, command,
                                                                           codec.parse_identity_text))})
        unit = reader.ask("AAfh", self.read_unit) if self.unit_readable else None
        reader.set_configuration(unit=unit or self.units, unit_from="AAfh" if unit else "options.unit")
        emissivity = reader.ask("AAem", self.emissivity)
        reader.set_configuration(emissivity=None if emissivity is None else emissivity.value)
        reader.set_configuration(exposure_code=reader.ask("AAez", lambda: self.query("ez", codec.parse_exposure_code)))
        measuring_range = reader.ask("AAmb", lambda: self.query("mb", codec.parse_range))
        if measuring_range is not None:
            reader.set_configuration(range_low=measuring_range[0], range_high=measuring_range[1])
        return reader.result()

    def set_emissivity(self, emissivity: float) -> None:
        """Set ε (AAemXXXX). Not used while polling; for commissioning scripts."""
        self.setting("em", codec.encode_emissivity(emissivity))

    # ---------------------------------------------------------- driver hooks

    def connect(self) -> None:
        self.session.resync()
        self.units = self._detect_unit()

    def begin_poll(self) -> None:
        if self.options.track_unit and self.unit_readable:
            self.units = self.read_unit()
        self._ratio = self.ratio_temperatures() if self.options.ratio else None

    def _detect_unit(self) -> str:
        """AAfh if the model knows it; otherwise the configured unit (older models: no AAfh)."""
        try:
            units = self.read_unit()
        except (DeviceError, TransportTimeout) as exc:
            self.unit_readable = False
            assumed = codec.FAHRENHEIT if self.options.unit == "F" else codec.CELSIUS
            log.info("%s: AAfh not answered (%s); assuming %s from options.unit", self.instrument, exc, assumed)
            return assumed
        self.unit_readable = True
        return units

    def _ratio_pair(self) -> tuple[Measurement, Measurement]:
        if self._ratio is None:
            raise ProtocolError(f"{self.instrument}: no AAek reading in this poll")
        return self._ratio

    # ---------------------------------------------------------- dialogue

    def query(self, command: str, parse: Callable[[bytes], T], param: str = "") -> T:
        """One read exchange; ``parse`` turns the reply frame into the result."""
        request = codec.encode_command(self.options.address, command, param)

        def receive() -> T:
            frame = self.transport.read_until(codec.CR)
            if codec.is_echo(frame, request):
                log.debug("%s: skipped the echo of %s", self.instrument, codec.show(request))
                frame = self.transport.read_until(codec.CR)
            self._check_refusal(frame, request)
            return parse(frame)

        return self._exchange(request, receive)

    def setting(self, command: str, param: str) -> None:
        """One setting exchange: ``ok``, or the echo of the request (models differ [U])."""
        request = codec.encode_command(self.options.address, command, param)

        def receive() -> None:
            frame = self.transport.read_until(codec.CR)
            self._check_refusal(frame, request)
            if not codec.setting_accepted(frame, request):
                raise ProtocolError(f"expected 'ok' to {codec.show(request)}, got {frame!r}")
            if codec.is_echo(frame, request):
                # An echo-form acknowledgement, or the adapter's local echo with "ok" behind it.
                with contextlib.suppress(TransportTimeout):
                    follow = self.transport.read_until(codec.CR, timeout=self.options.settle)
                    self._check_refusal(follow, request)

        self._exchange(request, receive)

    def _check_refusal(self, frame: bytes, request: bytes) -> None:
        if codec.is_refusal(frame):
            raise DeviceError(
                f"{self.instrument}: {codec.show(request)} answered 'no' "
                "(command or parameter not accepted by this model)", codec.REFUSAL)

    def _exchange(self, request: bytes, receive: Callable[[], T]) -> T:
        # Strictly request/response: anything waiting now is stale, and with no address in the
        # replies it could belong to another pyrometer on the line. A clean "no" (DeviceError)
        # leaves the line in step.
        try:
            with self.session.exchange(codec.show(request), in_step=(DeviceError,)):
                self.transport.write(request)
                return receive()
        except TransportTimeout as exc:
            self._recover()
            raise TransportTimeout(
                f"{exc} (request {codec.show(request)}: a pyrometer stays silent at a wrong address, "
                "a baud/parity mismatch, or an unknown command on older firmware)") from exc
        except ProtocolError as exc:
            self._recover()
            raise ProtocolError(str(named(self.instrument, exc))) from exc

    def _recover(self) -> None:
        """Drop a late or partial reply now, before another exchange on the line can take it."""
        self.session.invalidate()
        with contextlib.suppress(TransportError):
            self.session.resync()

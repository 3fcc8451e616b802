"""The driver API.

A driver declares its channels as a table (name, unit, type, how to read it); ``read()`` and the
channel listing of ``chamber-bridge drivers`` both come from that table, so what a driver says
it produces and what it produces cannot drift apart. A driver is handed an open transport and
never opens one: the poller owns the bus and its recovery.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, Generic, TypeVar, TypeVarTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from bridge import units
from bridge.drivers.common.baseline import Baseline
from bridge.errors import BridgeError, DeviceError, ProtocolError
from bridge.model import DETAIL_MAX, FLOAT, ChannelType, Measurement, Quality, Reading, ValueType

H = TypeVar("H", bound=Hashable)
Args = TypeVarTuple("Args")


class DriverOptions(BaseModel):
    """Base of every driver's ``options:`` model; unknown option keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def distinct(message: str) -> AfterValidator:
    """Validator of a list option whose entries must differ, as in
    ``channels: Annotated[list[int], distinct("a channel is listed twice")]``."""

    def check(values: list[H]) -> list[H]:
        if len(set(values)) != len(values):
            raise ValueError(message)
        return values

    return AfterValidator(check)


def _nonzero_scale(value: float) -> float:
    if value == 0:
        raise ValueError("scale 0 would turn every reading into the offset")
    return value


#: the ``scale`` of ``value * scale + offset`` options: any number but 0
Scale = Annotated[float, AfterValidator(_nonzero_scale)]


def _unit_symbol(value: object) -> object:
    return units.canonical(value) if isinstance(value, str) else value


#: a unit a config names: a symbol (or alias, stored as its symbol) of the vocabulary (docs/units.md)
UnitSymbol = Annotated[str, BeforeValidator(_unit_symbol)]


D = TypeVar("D", bound="Driver[Any, Any]")


@dataclass(frozen=True)
class Channel(Generic[D]):
    """One row of a driver's channel table.

    ``units`` is what the listing shows, a symbol of the unit vocabulary (docs/units.md); a driver
    whose unit is set on the instrument (a gauge controller's display unit) lists the symbols it
    can be (``mbar|Torr|Pa``) and reports the actual unit in each measurement.
    ``type`` is what its values are (a float unless said otherwise); every value read is checked
    against it, so a reading never claims a type its value does not have.
    """

    name: str
    units: str
    read: Callable[[D], Measurement]
    description: str = ""
    type: ChannelType = FLOAT


def reads(method: Callable[[D, *Args], Measurement], *args: *Args) -> Callable[[D], Measurement]:
    """A channel's ``read``: ``method(driver, *args)``, as in ``reads(cls.pressure, 3)``."""
    return lambda driver: method(driver, *args)


def at_middle(exchange: Callable[[], Iterable[Measurement]]) -> list[Measurement]:
    """Run one exchange that answers for several channels; stamp its measurements at its middle."""
    started = time.time()
    measurements = exchange()
    at = (started + time.time()) / 2
    return [replace(m, at=at) for m in measurements]


def named(instrument: str, exc: BridgeError) -> BridgeError:
    """``exc`` with ``instrument: `` in front of its message (same type, same code); ``exc`` itself
    when it names the instrument already. The poller's log must say which device failed."""
    text = str(exc)
    if text.startswith(f"{instrument}: "):
        return exc
    if isinstance(exc, DeviceError):
        return DeviceError(f"{instrument}: {text}", exc.code)
    return type(exc)(f"{instrument}: {text}")


TransportT = TypeVar("TransportT")
OptionsT = TypeVar("OptionsT", bound=DriverOptions)


class Driver(Generic[TransportT, OptionsT]):
    """Base class: subclasses set the class attributes and build their channel table."""

    #: short name used as ``driver:`` in configs; set by the registry
    name: ClassVar[str] = ""
    #: transport kinds of the config this driver works over
    transports: ClassVar[tuple[str, ...]] = ()
    #: pydantic model validating the instrument's ``options:``
    Options: ClassVar[type[DriverOptions]] = DriverOptions
    #: one line for ``chamber-bridge drivers``
    summary: ClassVar[str] = ""
    #: whether ``from_config`` takes ``unit=``: the device's address on a line shared with other
    #: devices (Modbus RTU); others need a transport of their own
    addresses_units: ClassVar[bool] = False

    def __init__(self, transport: TransportT, options: OptionsT, instrument: str) -> None:
        self.transport = transport
        self.options = options
        self.instrument = instrument
        self._channels = self.channel_table(options)

    @classmethod
    def channel_table(cls, options: Any) -> Sequence[Channel[Any]]:
        """The channels this driver produces with these options."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, transport: TransportT, options: dict[str, Any], instrument: str,
                    **kwargs: Any) -> Driver[Any, Any]:
        """``kwargs`` go to the constructor (``unit=`` for a Modbus device on a shared line)."""
        return cls(transport, cls.Options.model_validate(options), instrument, **kwargs)  # type: ignore[arg-type]

    @property
    def channels(self) -> Sequence[Channel[Any]]:
        return self._channels

    def connect(self) -> None:
        """Bring a freshly opened link into a known state (flush, stop streaming, identify)."""

    def begin_poll(self) -> None:
        """Per-poll preparation shared by all channels (e.g. read the display unit once)."""

    def baseline(self) -> Baseline:
        """The instrument's identity and configuration, read now on a connected link.

        Called by whoever owns the bus at connect and at each run's start and stop, never in the
        middle of a poll. A driver asks each query through a
        :class:`~bridge.drivers.common.baseline.BaselineReader`, so a refused query is recorded,
        not raised. The default reads nothing (the config's ``identity:`` may still say who it is).
        """
        return Baseline()

    def read(self) -> list[Reading]:
        """Read every channel once, each stamped at the middle of its own exchange."""
        self.begin_poll()
        readings = []
        for channel in self._channels:
            started = time.time()
            measurement = channel.read(self)
            stamp = (started + time.time()) / 2
            readings.append(self.reading(channel, measurement, stamp))
        return readings

    def reading(self, channel: Channel[Any], m: Measurement, stamp: float) -> Reading:
        """``m`` as a reading of ``channel``, its value checked against the channel's type.

        A value that does not fit (an enum reply outside its choices, a float where a bool is
        declared) is a ProtocolError naming the channel, like any reply that does not parse. An
        ok ``bits`` reading without a detail names its set bits in the detail.
        """
        declared = channel.type
        if m.quality is Quality.OK and (declared.kind is not ValueType.FLOAT or type(m.value) is not float):
            try:
                value = declared.check(m.value)
            except ValueError as exc:
                raise ProtocolError(f"{self.instrument}: {channel.name}: {exc}") from None
            detail = m.detail
            if declared.kind is ValueType.BITS and not detail:
                detail = ", ".join(declared.set_bits(int(value)))[:DETAIL_MAX]
            m = replace(m, value=value, detail=detail)
        try:
            return Reading.of(self.instrument, channel.name, m, stamp, declared.kind)
        except ValueError as exc:  # a float that is not finite: no reading may carry it
            raise ProtocolError(f"{self.instrument}: {channel.name}: {exc}") from None

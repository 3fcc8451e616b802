"""Multi-channel gauge controllers (``pfeiffer_tpg``, ``mks_937b``): what they have in common.

A controller has numbered pressure channels, published as ``pressure_<n>``, all in one display
unit. The unit can be changed on the front panel at any time and the values follow it, so it is
read at connect and at the start of every poll. ``mode: per_channel`` asks for each channel in
turn; ``mode: all`` reads every channel with one exchange per poll, each value stamped at the
middle of that exchange. A driver only says how its protocol reads the unit, one channel and
all channels, and builds its :class:`~bridge.drivers.common.serial_session.SerialSession`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from bridge.drivers.base import Channel, Driver, DriverOptions, at_middle, reads
from bridge.drivers.common.serial_session import SerialSession
from bridge.errors import ProtocolError
from bridge.model import Measurement
from bridge.transports.serial import SerialTransport


class GaugeControllerOptions(DriverOptions):
    #: channel numbers to read (each driver sets their range and default)
    channels: list[int] = Field(min_length=1)
    #: "per_channel" asks for each channel in turn; "all" reads every channel with one exchange
    mode: Literal["per_channel", "all"] = "per_channel"


OptionsT = TypeVar("OptionsT", bound=GaugeControllerOptions)


class GaugeControllerDriver(Driver[SerialTransport, OptionsT]):
    """Pressure per channel, in the unit set on the controller (read every poll)."""

    transports = ("serial",)
    #: the unit column of the channel listing: the vocabulary's symbols the controller can be set to
    UNITS: ClassVar[str] = "mbar"
    #: what messages call a channel, and the query that answers for all of them
    CHANNEL: ClassVar[str] = "channel"
    ALL_QUERY: ClassVar[str] = ""

    #: the dialogue discipline, built by the driver
    session: SerialSession

    def __init__(self, transport: SerialTransport, options: OptionsT, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.units = ""
        self._all: list[Measurement] = []

    @classmethod
    def channel_table(cls, options: GaugeControllerOptions) -> Sequence[Channel[Any]]:
        return [Channel(f"pressure_{n}", cls.UNITS, reads(cls.pressure, n), cls.describe(n))
                for n in options.channels]

    @classmethod
    def describe(cls, channel: int) -> str:
        return f"{cls.CHANNEL} {channel}, in the unit set on the controller"

    def pressure(self, channel: int) -> Measurement:
        if self.options.mode == "per_channel":
            return self.read_pressure(channel)
        if channel > len(self._all):
            raise ProtocolError(f"{self.instrument}: {self.ALL_QUERY} answered {len(self._all)} {self.CHANNEL}s, "
                                f"{self.CHANNEL} {channel} missing")
        return self._all[channel - 1]

    # ---------------------------------------------------------- driver hooks

    def connect(self) -> None:
        self.session.resync()
        self.units = self.read_unit()

    def begin_poll(self) -> None:
        self.units = self.read_unit()
        if self.options.mode == "all":
            self._all = at_middle(self.read_all_pressures)

    # ---------------------------------------------------------- the controller's protocol

    def read_unit(self) -> str:
        raise NotImplementedError

    def read_pressure(self, channel: int) -> Measurement:
        raise NotImplementedError

    def read_all_pressures(self) -> list[Measurement]:
        """Every channel, from one exchange."""
        raise NotImplementedError

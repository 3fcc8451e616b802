"""An instrument ready to read: its transport opened and its driver connected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.config import InstrumentConfig
from bridge.drivers.base import Driver
from bridge.drivers.common.baseline import Baseline
from bridge.drivers.registry import DriverRegistry
from bridge.edge.polling.bus import assemble
from bridge.model import Reading
from bridge.transports.base import Transport


@dataclass
class Instrument:
    config: InstrumentConfig
    transport: Transport
    driver: Driver[Any, Any]

    @property
    def name(self) -> str:
        return self.config.name

    def read(self) -> list[Reading]:
        return self.driver.read()

    def baseline(self) -> Baseline:
        """Identity and configuration as the driver reads them, the config's ``identity:`` filling gaps."""
        return self.driver.baseline().with_identity(self.config.identity)

    def close(self) -> None:
        self.transport.close()


def connect_instrument(config: InstrumentConfig, registry: DriverRegistry | None = None, *,
                       transport: Transport | None = None) -> Instrument:
    """The instrument as a bus of its own (:func:`~bridge.edge.polling.bus.assemble`, as ``poll``
    builds it): open the transport and let the driver bring the link into a known state.

    The transport is closed again if the driver's handshake fails, so a retry starts clean.
    ``transport`` replaces the one the config describes (tests: :mod:`bridge.transports.memory`).
    """
    bus = assemble([config], registry, transport=transport)
    ((_, driver),) = bus.drivers
    bus.transport.open()
    try:
        driver.connect()
    except BaseException:
        bus.transport.close()
        raise
    return Instrument(config, bus.transport, driver)

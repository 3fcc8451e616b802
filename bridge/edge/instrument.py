"""An instrument ready to read: its transport opened and its driver connected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.config import InstrumentConfig
from bridge.drivers.base import Driver
from bridge.drivers.registry import DriverRegistry, default_registry
from bridge.model import Reading
from bridge.transports import open_transport
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

    def close(self) -> None:
        self.transport.close()


def connect_instrument(config: InstrumentConfig, registry: DriverRegistry | None = None) -> Instrument:
    """Open the transport and let the driver bring the link into a known state.

    The transport is closed again if the driver's handshake fails, so a retry starts clean.
    """
    driver_cls = (registry or default_registry()).get(config.driver)
    transport = open_transport(config.transport, config.name)
    transport.open()
    try:
        driver = driver_cls.from_config(transport, config.options, config.name)
        driver.connect()
    except BaseException:
        transport.close()
        raise
    return Instrument(config, transport, driver)

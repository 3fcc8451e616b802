"""A bus's drivers: each instrument's driver on the one transport its bus shares.

What a bus is and which instruments share one: :func:`bridge.transports.settings.bus_key` and
:func:`bridge.config.group_by_bus`.
"""

from __future__ import annotations

from typing import Any, cast

from bridge.config import InstrumentConfig
from bridge.drivers.base import Driver
from bridge.drivers.registry import DriverRegistry
from bridge.errors import ConfigError, ConfigProblem
from bridge.transports.base import Transport
from bridge.transports.settings import TransportConfig


def build_driver(registry: DriverRegistry, config: InstrumentConfig, transport: Transport,
                 bus_config: TransportConfig) -> Driver[Any, Any]:
    """The instrument's driver on the bus's shared transport (no I/O).

    A device whose unit id differs from the one the shared transport was configured with (the
    bus's first instrument's) gets its own unit, if its driver can address one
    (:attr:`~bridge.drivers.base.Driver.addresses_units`: the Modbus drivers).
    """
    cls = registry.get(config.driver)
    unit = getattr(config.transport, "unit", None)
    if unit is None or unit == getattr(bus_config, "unit", None):
        return cls.from_config(transport, config.options, config.name)
    if not cls.addresses_units:
        shared = getattr(bus_config, "unit", None)
        raise ConfigError([ConfigProblem(
            "", f"instrument {config.name!r}: driver {config.driver!r} cannot address unit {unit} on a line "
                f"shared with unit {shared}; give it a connection of its own")])
    return cls.from_config(cast(Any, transport), config.options, config.name, unit=unit)

"""A bus assembled: the one transport its instruments share and each instrument's driver on it.

:func:`assemble` is the only way the bridge turns instrument configs into drivers: ``poll``
(:class:`~bridge.edge.polling.bus_poller.BusPoller`, one per bus) and ``read``
(:func:`bridge.edge.instrument.connect_instrument`, one instrument at a time) both call it, and
so do the driver tests, so what they exercise is what production runs. What a bus is and which
instruments share one: :func:`bridge.transports.settings.bus_key` and
:func:`bridge.config.group_by_bus`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from bridge.config import InstrumentConfig, bus_problems, shared_transport_config, transport_owner
from bridge.drivers.base import Driver
from bridge.drivers.registry import DriverRegistry, default_registry
from bridge.errors import ConfigError, ConfigProblem
from bridge.transports import open_transport
from bridge.transports.base import Transport
from bridge.transports.settings import TransportConfig, bus_key


@dataclass
class Bus:
    """One bus, built but not yet open: its transport and its drivers, in config order."""

    key: str
    #: how the transport names itself in errors: its one instrument, or :data:`~bridge.config.SHARED_OWNER`
    owner: str
    #: the config of the shared transport (the longest timeout of its instruments)
    config: TransportConfig
    transport: Transport
    drivers: list[tuple[InstrumentConfig, Driver[Any, Any]]]


def assemble(instruments: Sequence[InstrumentConfig], registry: DriverRegistry | None = None, *,
             transport: Transport | None = None) -> Bus:
    """The transport of these instruments' bus and each one's driver on it (no I/O).

    The instruments must be on one bus and agree about its line settings. ``transport`` replaces
    the one the config describes (tests hand in a :mod:`bridge.transports.memory` transport).
    """
    if not instruments:
        raise ValueError("a bus needs at least one instrument")
    keys = {bus_key(inst.transport) for inst in instruments}
    if len(keys) != 1:
        raise ValueError(f"instruments of several buses given as one bus: {', '.join(sorted(keys))}")
    problems = bus_problems(instruments)
    if problems:
        raise ConfigError(problems)
    config = shared_transport_config(instruments)
    owner = transport_owner(instruments)
    if transport is None:
        transport = open_transport(config, owner)
    registry = registry or default_registry()
    drivers = [(inst, build_driver(registry, inst, transport, config)) for inst in instruments]
    return Bus(keys.pop(), owner, config, transport, drivers)


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

"""What a bus is: the instruments that must share one transport and take turns on it.

One serial port (device path or pyserial URL) is one bus, whatever speaks on it: two gauges
on one RS-485 adapter, or Modbus RTU controllers at different unit ids. One Modbus TCP
``host:port`` is one bus (a gateway answers one request at a time anyway), and one VISA
resource is one bus. Instruments of one bus get ONE transport: two transports on one port would
interleave their bytes on the wire.

A shared line has one set of line settings; instruments that name the same port with different
settings are a config error (reported by key path, like every config problem). The shared
transport waits as long as the most patient of its instruments (the longest ``timeout``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

from bridge.config import (
    InstrumentConfig,
    ModbusRtuTransportConfig,
    ModbusTcpTransportConfig,
    SerialTransportConfig,
    TransportConfig,
    VisaTransportConfig,
)
from bridge.drivers.base import Driver
from bridge.drivers.modbus.driver import ModbusDriver
from bridge.drivers.registry import DriverRegistry
from bridge.errors import ConfigError, ConfigProblem
from bridge.transports.base import Transport

#: what the transport of a bus of several instruments calls itself in errors (the instrument's
#: name is put in front by the poller; the transport adds the port)
SHARED_OWNER = "shared bus"

#: keys that name the bus (compared through bus_key) or may differ between its instruments
_NOT_LINE_SETTINGS = frozenset({"port", "host", "resource", "timeout", "unit"})


def bus_key(config: TransportConfig) -> str:
    """The bus a transport config is on: ``serial:/dev/ttyUSB0``, ``modbus_tcp:10.0.0.7:502``,
    ``visa:TCPIP::10.0.0.9::5025::SOCKET``. Serial and Modbus RTU on one port share the key (one
    wire); a device path is resolved, so ``/dev/serial/by-id/...`` and the ``/dev/ttyUSB0`` it
    links to are one bus."""
    if isinstance(config, SerialTransportConfig | ModbusRtuTransportConfig):
        port = os.path.realpath(config.port) if config.port.startswith("/") else config.port
        return f"serial:{port}"
    if isinstance(config, ModbusTcpTransportConfig):
        return f"modbus_tcp:{config.host.lower()}:{config.port}"
    if isinstance(config, VisaTransportConfig):
        return f"visa:{config.resource.upper()}"  # VISA resource names are case-insensitive
    raise TypeError(f"no bus for {type(config).__name__}")


def _line_settings(config: TransportConfig) -> dict[str, Any]:
    return config.model_dump(exclude=set(_NOT_LINE_SETTINGS))


def bus_problems(instruments: Sequence[InstrumentConfig]) -> list[ConfigProblem]:
    """Instruments on one bus whose line settings disagree with the first one's on it."""
    first: dict[str, tuple[int, InstrumentConfig]] = {}
    problems = []
    for i, inst in enumerate(instruments):
        key = bus_key(inst.transport)
        if key not in first:
            first[key] = (i, inst)
            continue
        j, other = first[key]
        mine, theirs = _line_settings(inst.transport), _line_settings(other.transport)
        differing = [f"{name} {mine.get(name)!r} vs {theirs.get(name)!r}"
                     for name in sorted(mine.keys() | theirs.keys()) if mine.get(name) != theirs.get(name)]
        if differing:
            problems.append(ConfigProblem(
                f"bridge.instruments[{i}].transport",
                f"on the same bus as {other.name!r} (bridge.instruments[{j}]) but with other settings "
                f"({'; '.join(differing)}); one line has one set of settings"))
    return problems


def group_by_bus(instruments: Sequence[InstrumentConfig]) -> dict[str, list[InstrumentConfig]]:
    """Instruments by :func:`bus_key`, buses and their instruments in config order; raises
    ConfigError when instruments on one bus disagree about its settings."""
    problems = bus_problems(instruments)
    if problems:
        raise ConfigError(problems)
    buses: dict[str, list[InstrumentConfig]] = {}
    for inst in instruments:
        buses.setdefault(bus_key(inst.transport), []).append(inst)
    return buses


def shared_transport_config(instruments: Sequence[InstrumentConfig]) -> TransportConfig:
    """The config of the one transport of these instruments' bus: the first one's, waiting as
    long as the longest timeout among them."""
    longest = max(inst.transport.timeout for inst in instruments)
    return instruments[0].transport.model_copy(update={"timeout": longest})


def transport_owner(instruments: Sequence[InstrumentConfig]) -> str:
    """How the bus's transport names itself in errors: the instrument, or :data:`SHARED_OWNER`."""
    return instruments[0].name if len(instruments) == 1 else SHARED_OWNER


def build_driver(registry: DriverRegistry, config: InstrumentConfig, transport: Transport,
                 bus_config: TransportConfig) -> Driver[Any, Any]:
    """The instrument's driver on the bus's shared transport (no I/O).

    A Modbus device whose unit id differs from the one the shared transport was configured with
    (the bus's first instrument's) gets its own unit: Modbus drivers take ``unit=``.
    """
    cls = registry.get(config.driver)
    unit = getattr(config.transport, "unit", None)
    if unit is None or unit == getattr(bus_config, "unit", None):
        return cls.from_config(transport, config.options, config.name)
    if not issubclass(cls, ModbusDriver):
        shared = getattr(bus_config, "unit", None)
        raise ConfigError([ConfigProblem(
            "", f"instrument {config.name!r}: driver {config.driver!r} cannot address unit {unit} on a line "
                f"shared with unit {shared}; give it a connection of its own")])
    return cls.from_config(cast(Any, transport), config.options, config.name, unit=unit)

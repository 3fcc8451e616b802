"""Buses: the instruments that share one transport, and the settings they must agree on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bridge.config.models import InstrumentConfig
from bridge.errors import ConfigError, ConfigProblem
from bridge.transports.settings import TransportConfig, bus_key, line_settings

log = logging.getLogger("bridge.config")


#: what the transport of a bus of several instruments calls itself in errors (the instrument's
#: name is put in front by the poller; the transport adds the port)
SHARED_OWNER = "shared bus"


def bus_problems(instruments: Sequence[InstrumentConfig]) -> list[ConfigProblem]:
    """Instruments on one bus whose line settings disagree with the first one's on it.

    A shared line has one set of line settings: two instruments naming the same port with
    different settings are a config error, reported by key path like every other one.
    """
    first: dict[str, tuple[int, InstrumentConfig]] = {}
    problems = []
    for i, inst in enumerate(instruments):
        key = bus_key(inst.transport)
        if key not in first:
            first[key] = (i, inst)
            continue
        j, other = first[key]
        mine, theirs = line_settings(inst.transport), line_settings(other.transport)
        differing = [f"{name} {mine.get(name)!r} vs {theirs.get(name)!r}"
                     for name in sorted(mine.keys() | theirs.keys()) if mine.get(name) != theirs.get(name)]
        if differing:
            problems.append(ConfigProblem(
                f"bridge.instruments[{i}].transport",
                f"on the same bus as {other.name!r} (bridge.instruments[{j}]) but with other settings "
                f"({'; '.join(differing)}); one line has one set of settings"))
    return problems


def group_by_bus(instruments: Sequence[InstrumentConfig]) -> dict[str, list[InstrumentConfig]]:
    """Instruments by :func:`~bridge.transports.settings.bus_key`, buses and their instruments in
    config order; raises ConfigError when instruments on one bus disagree about its settings."""
    problems = bus_problems(instruments)
    if problems:
        raise ConfigError(problems)
    buses: dict[str, list[InstrumentConfig]] = {}
    for inst in instruments:
        buses.setdefault(bus_key(inst.transport), []).append(inst)
    return buses


def shared_transport_config(instruments: Sequence[InstrumentConfig]) -> TransportConfig:
    """The config of the one transport of these instruments' bus: the first one's, waiting as
    long as the longest timeout among them (the most patient instrument's)."""
    longest = max(inst.transport.timeout for inst in instruments)
    return instruments[0].transport.model_copy(update={"timeout": longest})


def transport_owner(instruments: Sequence[InstrumentConfig]) -> str:
    """How the bus's transport names itself in errors: the instrument, or :data:`SHARED_OWNER`."""
    return instruments[0].name if len(instruments) == 1 else SHARED_OWNER

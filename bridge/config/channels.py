"""Which channels each instrument produces, from its driver's channel table: what expressions may name.

The driver registry is asked, as the driver check of config loading does: a driver's channel
table follows from its options alone (bridge/drivers/base.py), so this needs no instrument.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bridge.config.models import BASELINE_INTERVAL, InstrumentConfig


class AnyChannel:
    """The channels of an instrument whose driver or options are wrong: every name is let through,
    so an expression is not blamed for what the driver check reports already."""

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def channels_of(driver: Any, options: Any) -> list[str] | None:
    """The channel names of an instrument with ``driver`` and ``options``; None when they cannot be known."""
    from bridge.drivers.registry import default_registry

    registry = default_registry()
    if not isinstance(driver, str) or driver not in registry:
        return None
    cls = registry.get(driver)
    try:
        return [channel.name for channel in cls.channel_table(cls.Options.model_validate(options or {}))]
    except Exception:  # bad options are the driver check's to report
        return None


def catalog(instruments: Iterable[InstrumentConfig]) -> dict[str, list[str]]:
    """Instrument name -> channel names, for a validated config."""
    return {inst.name: channels_of(inst.driver, inst.options) or [] for inst in instruments}


def raw_catalog(raw: Any) -> dict[str, Any]:
    """The same from the raw document, for the check pass that runs even where validation failed."""
    bridge = raw.get("bridge") if isinstance(raw, Mapping) else None
    instruments = bridge.get("instruments") if isinstance(bridge, Mapping) else None
    found: dict[str, Any] = {}
    for inst in instruments if isinstance(instruments, list) else []:
        if isinstance(inst, Mapping) and isinstance(inst.get("name"), str):
            channels = channels_of(inst.get("driver"), inst.get("options"))
            found[inst["name"]] = AnyChannel() if channels is None else channels
    return found


def raw_baseline_only(raw: Any) -> set[str]:
    """The instruments of the raw document with ``interval: baseline``: not polled, so not for expressions."""
    bridge = raw.get("bridge") if isinstance(raw, Mapping) else None
    instruments = bridge.get("instruments") if isinstance(bridge, Mapping) else None
    return {inst["name"] for inst in (instruments if isinstance(instruments, list) else [])
            if isinstance(inst, Mapping) and isinstance(inst.get("name"), str)
            and inst.get("interval") == BASELINE_INTERVAL}

"""Drivers by short name: the built-ins, and third-party ones from the entry-point group.

A lab adds an instrument class in its own package and declares
``[project.entry-points."chamber_bridge.drivers"] my_gauge = "my_pkg:MyGauge"``; no change
to this repository is needed. Two drivers claiming one name is an error, never a silent win.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from bridge.drivers.base import Driver
from bridge.errors import DriverRegistryError

log = logging.getLogger("bridge.drivers")

ENTRY_POINT_GROUP = "chamber_bridge.drivers"
BUILTIN_MODULES = (
    "bridge.drivers.pfeiffer_tpg",
    "bridge.drivers.mks_937b",
    "bridge.drivers.impac",
    "bridge.drivers.eurotherm",
    "bridge.drivers.modbus",
    "bridge.drivers.scpi_psu",
    "bridge.drivers.genesys",
    "bridge.drivers.scpi",
    "bridge.drivers.serial_ascii",
)

DriverClass = type[Driver[Any, Any]]
T = TypeVar("T", bound=DriverClass)


class DriverRegistry:
    def __init__(self) -> None:
        self._drivers: dict[str, DriverClass] = {}
        self._origins: dict[str, str] = {}
        #: entry points that failed to load, by name, with the reason (shown by `drivers`)
        self.broken: dict[str, str] = {}

    def register(self, name: str, cls: DriverClass, origin: str = "built-in") -> None:
        if not name.isidentifier():
            raise DriverRegistryError(f"driver name {name!r} must be an identifier")
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            raise DriverRegistryError(f"driver {name!r} from {origin} is not a Driver subclass")
        existing = self._drivers.get(name)
        if existing is not None and existing is not cls:
            raise DriverRegistryError(
                f"driver name {name!r} is taken by {self._origins[name]} "
                f"({existing.__module__}.{existing.__qualname__}); {origin} cannot register it again")
        cls.name = name
        self._drivers[name] = cls
        self._origins[name] = origin

    def get(self, name: str) -> DriverClass:
        try:
            return self._drivers[name]
        except KeyError:
            raise DriverRegistryError(
                f"unknown driver {name!r} (installed: {', '.join(self.names())})") from None

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._drivers)

    def __contains__(self, name: object) -> bool:
        return name in self._drivers

    def __iter__(self) -> Iterator[tuple[str, DriverClass]]:
        return iter(sorted(self._drivers.items()))

    def load_entry_points(self, found: Iterable[EntryPoint] | None = None) -> None:
        """Register every driver of the entry-point group (or of ``found``); record failures."""
        for ep in entry_points(group=ENTRY_POINT_GROUP) if found is None else found:
            origin = f"entry point {ep.name} = {ep.value}" + (f" ({ep.dist.name})" if ep.dist else "")
            try:
                cls = ep.load()
                self.register(ep.name, cls, origin)
            except DriverRegistryError as exc:
                self.broken[ep.name] = str(exc)
                log.warning("%s", exc)
            except Exception as exc:  # a broken plug-in must not stop the bridge
                self.broken[ep.name] = f"cannot load {ep.value}: {type(exc).__name__}: {exc}"
                log.warning("driver %s: %s", ep.name, self.broken[ep.name])


_builtin_pending: list[tuple[str, DriverClass]] = []
_default: DriverRegistry | None = None


def register_driver(name: str) -> Callable[[T], T]:
    """Class decorator for built-in drivers."""

    def decorate(cls: T) -> T:
        cls.name = name
        _builtin_pending.append((name, cls))
        return cls

    return decorate


def default_registry() -> DriverRegistry:
    """The process-wide registry: built-ins first, then entry points (which cannot shadow them)."""
    global _default
    if _default is None:
        import importlib

        registry = DriverRegistry()
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for name, cls in _builtin_pending:
            registry.register(name, cls)
        registry.load_entry_points()
        _default = registry
    return _default

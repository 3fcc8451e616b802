"""Driver registration: short names, duplicates refused, broken plug-ins reported not fatal."""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from bridge.drivers.pfeiffer_tpg import PfeifferTPG
from bridge.drivers.registry import DriverRegistry, default_registry
from bridge.errors import DriverRegistryError

ROOT = Path(__file__).resolve().parents[2]


class NotADriver:
    pass


def test_builtins_and_installed_plugins_are_registered() -> None:
    registry = default_registry()
    assert registry.get("pfeiffer_tpg") is PfeifferTPG
    assert registry.origin("pfeiffer_tpg") == "built-in"
    assert "loopback_echo" in registry  # tests/plugins/example_driver, installed by the test run
    assert not registry.broken


def test_each_builtin_driver_has_a_folder_a_readme_an_example_and_a_logger_of_its_name() -> None:
    """A newcomer finds a driver by its ``driver:`` name: folder, README, example config, logger."""
    builtins = [(name, cls) for name, cls in default_registry() if default_registry().origin(name) == "built-in"]
    assert len(builtins) >= 8
    for name, cls in builtins:
        assert cls.__module__.startswith(f"bridge.drivers.{name}."), (name, cls.__module__)
        assert (ROOT / "bridge" / "drivers" / name / "README.md").is_file(), name
        assert (ROOT / "configs" / "examples" / f"{name}.yaml").is_file(), name
        module_logger = getattr(importlib.import_module(cls.__module__), "log", None)
        assert isinstance(module_logger, logging.Logger) and module_logger.name == f"bridge.drivers.{name}", name


def test_duplicate_names_are_refused() -> None:
    registry = DriverRegistry()
    registry.register("pfeiffer_tpg", PfeifferTPG)
    registry.register("pfeiffer_tpg", PfeifferTPG)  # the same class again is harmless
    other = type("Other", (PfeifferTPG,), {})
    with pytest.raises(DriverRegistryError, match="driver name 'pfeiffer_tpg' is taken by built-in"):
        registry.register("pfeiffer_tpg", other, "somewhere else")
    assert registry.get("pfeiffer_tpg") is PfeifferTPG


def test_entry_point_cannot_shadow_a_builtin_and_broken_ones_are_recorded() -> None:
    registry = DriverRegistry()
    registry.register("pfeiffer_tpg", PfeifferTPG)
    group = "chamber_bridge.drivers"
    registry.load_entry_points([
        EntryPoint("pfeiffer_tpg", "chamber_bridge_example:LoopbackEcho", group),
        EntryPoint("missing", "no_such_module:Driver", group),
        EntryPoint("not_a_driver", f"{__name__}:NotADriver", group),
        EntryPoint("loopback_echo", "chamber_bridge_example:LoopbackEcho", group),
    ])
    assert registry.get("pfeiffer_tpg") is PfeifferTPG
    assert "is taken by built-in" in registry.broken["pfeiffer_tpg"]
    assert registry.broken["missing"].startswith("cannot load no_such_module:Driver: ModuleNotFoundError")
    assert "is not a Driver subclass" in registry.broken["not_a_driver"]
    assert registry.names() == ["loopback_echo", "pfeiffer_tpg"]


def test_unknown_driver_lists_the_installed_ones() -> None:
    with pytest.raises(DriverRegistryError, match=r"unknown driver 'nope' \(installed: .*pfeiffer_tpg"):
        default_registry().get("nope")
    with pytest.raises(DriverRegistryError, match="identifier"):
        DriverRegistry().register("bad name", PfeifferTPG)


#: options for the drivers whose channels need some (the others' defaults list their channels)
SAMPLE_OPTIONS: dict[str, dict[str, object]] = {
    "eurotherm": {"family": "3500"},
    "modbus": {"channels": [{"name": "p", "table": "input", "address": 0, "type": "float32", "units": "°C"}]},
    "scpi": {"queries": [{"name": "v", "command": "MEAS:VOLT?", "units": "V"}]},
    "serial_ascii": {"queries": [{"name": "t", "command": "T?"}]},
    "impac": {"ratio": True, "emissivity": True, "exposure_time": True},
}


def test_every_builtin_channel_lists_its_unit_from_the_vocabulary() -> None:
    """docs/units.md: a channel's unit is a symbol (or the symbols a setting on the instrument picks from)."""
    from bridge import units

    for name, cls in default_registry():
        if default_registry().origin(name) != "built-in":
            continue
        table = cls.channel_table(cls.Options.model_validate(SAMPLE_OPTIONS.get(name, {})))
        assert table, name
        for channel in table:
            for symbol in channel.units.split("|"):
                assert units.lookup(symbol) is not None and units.canonical(symbol) == symbol, (name, channel)
    modbus = default_registry().get("modbus")
    (register,) = modbus.channel_table(modbus.Options.model_validate(SAMPLE_OPTIONS["modbus"]))
    assert register.units == "degC"  # an alias in the config is kept as its symbol


def test_every_builtin_readme_lists_its_channels_with_their_unit_and_its_baseline() -> None:
    for name, _cls in default_registry():
        if default_registry().origin(name) != "built-in":
            continue
        text = (ROOT / "bridge" / "drivers" / name / "README.md").read_text(encoding="utf-8")
        assert "docs/units.md" in text and "Identity and configuration (baseline)" in text, name

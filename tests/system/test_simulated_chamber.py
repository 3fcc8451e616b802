"""The simulated chamber: every driver reads it at once, and its instruments are coupled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.config import parse_config
from bridge.edge.instrument import connect_instrument
from simulators.chamber.mbe import SimulatedChamber
from tests.helpers.cli import read_json, run_cli, simulate


@pytest.fixture
def chamber() -> Iterator[SimulatedChamber]:
    with SimulatedChamber(seed=5) as chamber:
        yield chamber


def read_one(chamber: SimulatedChamber, name: str, channel: str) -> float | None:
    config = parse_config(chamber.config()).bridge.instrument(name)
    instrument = connect_instrument(config)
    try:
        return next(r.value for r in instrument.read() if r.channel == channel)
    finally:
        instrument.close()


def test_read_reaches_every_instrument_at_once(chamber: SimulatedChamber, tmp_path: Path) -> None:
    path = tmp_path / "chamber.yaml"
    path.write_text(yaml.safe_dump(chamber.config()))
    readings = read_json(path)
    assert {r["instrument"] for r in readings} == {
        "main_gauge", "ion_gauge", "pyrometer", "cell_ga", "cell_al", "heater_psu"}
    by_key = {(r["instrument"], r["channel"]): r for r in readings}
    assert by_key[("main_gauge", "pressure_1")]["quality"] == "ok"
    assert 5e-9 < by_key[("main_gauge", "pressure_1")]["value"] < 1e-6
    assert by_key[("ion_gauge", "pressure_1")]["quality"] == "ok"
    assert by_key[("pyrometer", "temperature")]["units"] in ("°C", "degC", "C")


def test_heater_power_heats_the_substrate_the_pyrometer_sees(chamber: SimulatedChamber) -> None:
    before = read_one(chamber, "pyrometer", "temperature")
    assert before is not None
    chamber.set_heater_voltage(20.0)  # 100 W into 4 ohm
    deadline = time.monotonic() + 20
    while (after := read_one(chamber, "pyrometer", "temperature")) is None or after < before + 30:
        assert time.monotonic() < deadline, f"substrate stayed at {after} degC"
        time.sleep(0.2)
    watts = (read_one(chamber, "heater_psu", "voltage_1") or 0) * (read_one(chamber, "heater_psu", "current_1") or 0)
    assert watts == pytest.approx(100, rel=0.05)


def test_hot_cell_with_open_shutter_raises_the_pressure_the_gauges_see(chamber: SimulatedChamber) -> None:
    cold = read_one(chamber, "ion_gauge", "pressure_1")
    assert cold is not None
    for cell in chamber.cells.loop(1), chamber.cells.loop(2):
        cell.setpoint = 1000.0
    chamber.model.cells["ga"].tau = 0.5  # hurry the cell up; the coupling is what is tested
    chamber.set_shutter("ga", True)
    deadline = time.monotonic() + 20
    heating: list[float] = []  # the controller's output while the cell climbs (0 once it overshoots)
    while (pv := read_one(chamber, "cell_ga", "pv")) is None or pv < 900:
        assert time.monotonic() < deadline, f"cell stayed at {pv} degC"
        heating.append(read_one(chamber, "cell_ga", "output_power") or 0.0)
        time.sleep(0.2)
    hot = read_one(chamber, "ion_gauge", "pressure_1")
    assert hot is not None and hot > 3 * cold
    assert max(heating) > 0


def test_simulate_chamber_command_writes_a_ready_config(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    with simulate("chamber", "--write-config", str(config), "--seed", "3", lines=6, timeout=15) as sim:
        lines = sim.lines
        assert lines[-1] == f"config {config}"
        assert {line.split()[0] for line in lines[:-1]} == {"main_gauge", "ion_gauge", "pyrometer", "heater_psu",
                                                            "cells"}
        check = run_cli("check", str(config), timeout=30)
        assert check.returncode == 0, check.stderr
        result = run_cli("read", str(config))
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) > 10


def test_a_genesys_heats_the_substrate_when_chosen_as_the_heater_supply() -> None:
    with SimulatedChamber(seed=5, heater_supply="genesys") as chamber:
        (heater,) = [i for i in chamber.config()["bridge"]["instruments"] if i["name"] == "heater_psu"]
        assert (heater["driver"], heater["transport"]["kind"]) == ("genesys", "serial")
        assert heater["transport"]["port"].startswith("socket://")
        chamber.set_heater_voltage(20.0)  # 100 W into 4 ohm
        volts, amps = (read_one(chamber, "heater_psu", channel) for channel in ("voltage", "current"))
        assert (volts or 0) * (amps or 0) == pytest.approx(100, rel=0.05)
        assert read_one(chamber, "heater_psu", "mode") == "CV"
        deadline = time.monotonic() + 10
        while chamber.model.heater_power_w < 95:  # the coupling feeds the supply's V x I to the model
            assert time.monotonic() < deadline, f"heater power stayed at {chamber.model.heater_power_w} W"
            time.sleep(0.05)


def test_simulate_chamber_with_a_genesys_heater_supply(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    with simulate("chamber", "--heater-supply", "genesys", "--write-config", str(config), lines=6,
                  timeout=15) as sim:
        assert any(line.startswith("heater_psu socket://") for line in sim.lines)
        readings = {(r["instrument"], r["channel"]): r for r in read_json(config)}
    assert readings[("heater_psu", "output")]["value"] is True
    assert readings[("heater_psu", "mode")]["value"] == "CV"
    assert readings[("heater_psu", "fault")]["value"] == 0

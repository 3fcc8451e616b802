"""The chamber model couples the instruments the way a real chamber does."""

from __future__ import annotations

import pytest

from simulators.chamber.model import AMBIENT_C, ChamberModel
from tests.helpers.clock import FakeClock


@pytest.fixture
def chamber() -> tuple[ChamberModel, FakeClock]:
    clock = FakeClock(0.0)
    model = ChamberModel(clock=clock, seed=7, noise=0.0)
    model.add_cell("ga")
    return model, clock


def test_cold_chamber_sits_at_base_pressure(chamber: tuple[ChamberModel, FakeClock]) -> None:
    model, clock = chamber
    clock.now = 100
    assert model.substrate_temperature() == pytest.approx(AMBIENT_C, abs=1)
    assert model.pressure_mbar() == pytest.approx(model.base_mbar, rel=0.1)


def test_heater_power_raises_substrate_temperature_with_a_lag(chamber: tuple[ChamberModel, FakeClock]) -> None:
    model, clock = chamber
    model.set_heater_power(60)
    clock.now = 5
    early = model.substrate_temperature()
    clock.now = 120
    late = model.substrate_temperature()
    assert AMBIENT_C + 50 < early < late
    model.set_heater_power(0)
    clock.now = 400
    assert model.substrate_temperature() < late / 2


def test_cell_output_heats_cell_and_open_shutter_raises_pressure(chamber: tuple[ChamberModel, FakeClock]) -> None:
    model, clock = chamber
    model.set_cell_output("ga", 70)
    clock.now = 200
    hot = model.cell_temperature("ga")
    closed = model.pressure_mbar()
    model.set_shutter("ga", True)
    opened = model.pressure_mbar()
    assert hot > 800
    assert opened > 5 * closed > 5 * model.base_mbar


def test_integration_does_not_depend_on_how_often_it_is_asked() -> None:
    a_clock, b_clock = FakeClock(0.0), FakeClock(0.0)
    a = ChamberModel(clock=a_clock, noise=0.0)
    b = ChamberModel(clock=b_clock, noise=0.0)
    for m in (a, b):
        m.set_heater_power(40)
    for t in range(1, 301):
        a_clock.now = t / 10
        a.advance()
    b_clock.now = 30.0
    b.advance()
    assert a.substrate_c == pytest.approx(b.substrate_c, rel=1e-6)

"""The unit vocabulary (bridge/units.py, docs/units.md) against pint, and its lookups."""

from __future__ import annotations

import itertools
from pathlib import Path

import pint
import pytest

from bridge import units

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ureg() -> pint.UnitRegistry:
    # case-insensitive: pint spells torr in lower case; the vocabulary keeps the usual Torr and mTorr
    return pint.UnitRegistry(case_sensitive=False)


def pint_unit(ureg: pint.UnitRegistry, unit: units.Unit) -> pint.Unit:
    return ureg.parse_units(unit.pint or unit.symbol)


def test_every_symbol_parses_in_pint_as_the_unit_it_names(ureg: pint.UnitRegistry) -> None:
    for unit in units.VOCABULARY:
        parsed = pint_unit(ureg, unit)
        if unit.symbol not in ("sccm", "slm"):  # standard flows are not pint units: the flow they measure is
            by_symbol = ureg.parse_units(unit.symbol) if unit.symbol != "%" else ureg.percent
            assert by_symbol == parsed or ureg.Quantity(1, by_symbol).to(parsed).magnitude == pytest.approx(1), unit


@pytest.mark.parametrize("kind", sorted(units.CONVERTIBLE))
def test_every_conversion_of_a_kind_agrees_with_pint(ureg: pint.UnitRegistry, kind: str) -> None:
    members = [u for u in units.VOCABULARY if u.kind == kind]
    assert len(members) >= 3
    for source, target in itertools.permutations(members, 2):
        for value in (-40.0, 0.0, 1.0, 23.4, 1e-9, 1013.25, 1500.0):
            expected = ureg.Quantity(value, pint_unit(ureg, source)).to(pint_unit(ureg, target)).magnitude
            got = units.convert(value, source.symbol, target.symbol)
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-12), (value, source.symbol, target.symbol)


def test_the_base_units_are_pascal_and_kelvin() -> None:
    assert units.convert(1.0, "Torr", "Pa") == pytest.approx(133.322368421)
    assert units.convert(0.0, "degC", "K") == pytest.approx(273.15)
    assert units.convert(32.0, "degF", "degC") == pytest.approx(0.0, abs=1e-12)
    assert units.convert(1.5e-7, "mbar", "mbar") == 1.5e-7


def test_instrument_spellings_map_onto_one_symbol() -> None:
    assert [units.canonical(t) for t in ("°C", "degC", "°F", "micron", "MICRON", "TORR", "Torr", "mBAR", "PASCAL",
                                         " K ", "Ω", "%", "1")] == [
        "degC", "degC", "degF", "mTorr", "mTorr", "Torr", "Torr", "mbar", "Pa", "K", "ohm", "%", "1"]
    assert units.kind("°C") == "temperature" and units.kind("hPa") == "pressure" and units.kind("arb") is None
    assert units.symbols("temperature") == ("degC", "degF", "K")


@pytest.mark.parametrize("text", ["C", "arb", "", "Celsius", "mbar ", "torr2"])
def test_a_unit_outside_the_vocabulary_is_named_with_what_is_accepted(text: str) -> None:
    if units.lookup(text) is not None:  # "mbar " is mbar with a blank: accepted
        assert units.canonical(text) == text.strip()
        return
    with pytest.raises(ValueError, match=r"is not in the unit vocabulary \(docs/units.md\): use one of mbar, Pa"):
        units.canonical(text)


def test_conversion_across_kinds_or_to_unknown_units_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot convert Torr \(pressure\) to degC \(temperature\)"):
        units.convert(1.0, "Torr", "degC")
    with pytest.raises(ValueError, match="cannot convert V"):
        units.convert(1.0, "V", "mV")  # not a convertible kind
    with pytest.raises(ValueError, match="not both in the vocabulary"):
        units.convert(1.0, "furlong", "m")


def test_docs_units_md_lists_every_symbol_of_the_table() -> None:
    text = (ROOT / "docs" / "units.md").read_text(encoding="utf-8")
    table = text.split("## The table", 1)[1].split("\n## ", 1)[0]  # not the drivers' table below it
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines()
            if line.startswith("| `") and line.count("|") >= 5}
    assert rows == {u.symbol for u in units.VOCABULARY}

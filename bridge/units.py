"""One unit vocabulary for every reading (docs/units.md).

Instruments name their units in their own ways (``°C`` and ``degC`` in one CSV, ``micron`` for
a millitorr, ``PASCAL``, ``mBAR``); a run that mixes spellings cannot be plotted or compared. Every
driver reports a unit from :data:`VOCABULARY` by its ``symbol``, which pint parses (with
``case_sensitive=False`` for ``Torr`` and ``mTorr``) and which UCUM spells the same where UCUM has
the unit. What an instrument says is mapped onto a symbol once, where it is read
(:func:`canonical`), so nothing downstream sees another spelling.

Pressures and temperatures convert between their units (:func:`convert`): ``bridge.units`` asks
the bridge to report every pressure in, say, ``mbar`` whatever unit the gauge controller is set
to. The factors are a table here rather than pint at run time (the Pi stays light); the test
suite checks every factor and offset against pint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Unit:
    """One row of the vocabulary.

    ``scale`` and ``offset`` take a value in this unit to the base unit of its ``kind``
    (``base = value * scale + offset``: pascal for pressure, kelvin for temperature); only the
    kinds in :data:`CONVERTIBLE` have them. ``aliases`` are spellings instruments or configs use
    that mean exactly this unit. ``pint`` is how pint spells it, when not like the symbol.
    """

    symbol: str
    kind: str
    name: str
    scale: float | None = None
    offset: float = 0.0
    aliases: tuple[str, ...] = ()
    pint: str | None = None


#: The base units of the convertible kinds are pascal and kelvin.
_TORR_PA: Final = 101_325.0 / 760.0
_PSI_PA: Final = 6_894.757293168361

VOCABULARY: Final[tuple[Unit, ...]] = (
    # pressure (base: Pa)
    Unit("mbar", "pressure", "millibar", 100.0, aliases=("mBar", "MBAR", "mBAR")),
    Unit("Pa", "pressure", "pascal", 1.0, aliases=("PA", "PASCAL", "pascal")),
    Unit("hPa", "pressure", "hectopascal", 100.0),
    Unit("kPa", "pressure", "kilopascal", 1000.0),
    Unit("bar", "pressure", "bar", 100_000.0),
    Unit("Torr", "pressure", "torr", _TORR_PA, aliases=("TORR", "torr"), pint="torr"),
    # a "micron" of a vacuum gauge is a micrometre of mercury, about a millitorr; pint's micron is a length
    Unit("mTorr", "pressure", "millitorr", _TORR_PA / 1000.0, aliases=("micron", "MICRON"), pint="millitorr"),
    Unit("psi", "pressure", "pound-force per square inch", _PSI_PA),
    # temperature (base: K)
    Unit("degC", "temperature", "degree Celsius", 1.0, 273.15, aliases=("°C", "℃")),
    Unit("degF", "temperature", "degree Fahrenheit", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0, aliases=("°F", "℉")),
    Unit("K", "temperature", "kelvin", 1.0),
    # electrical
    Unit("V", "voltage", "volt"),
    Unit("mV", "voltage", "millivolt"),
    Unit("kV", "voltage", "kilovolt"),
    Unit("A", "current", "ampere"),
    Unit("mA", "current", "milliampere"),
    Unit("uA", "current", "microampere", aliases=("µA",)),
    Unit("W", "power", "watt"),
    Unit("mW", "power", "milliwatt"),
    Unit("kW", "power", "kilowatt"),
    Unit("ohm", "resistance", "ohm", aliases=("Ohm", "Ω")),
    # time and frequency
    Unit("s", "time", "second"),
    Unit("ms", "time", "millisecond"),
    Unit("min", "time", "minute"),
    Unit("h", "time", "hour"),
    Unit("Hz", "frequency", "hertz"),
    Unit("kHz", "frequency", "kilohertz"),
    Unit("MHz", "frequency", "megahertz"),
    # length and growth rate
    Unit("nm", "length", "nanometre"),
    Unit("um", "length", "micrometre", aliases=("µm",)),
    Unit("mm", "length", "millimetre"),
    Unit("m", "length", "metre"),
    Unit("nm/s", "rate", "nanometre per second"),
    # flow
    Unit("l/min", "flow", "litre per minute"),
    Unit("sccm", "flow", "standard cubic centimetre per minute", pint="cm**3/min"),
    Unit("slm", "flow", "standard litre per minute", pint="l/min"),
    # dimensionless: emissivity, ratios, states; "%" of a range or an output
    Unit("1", "dimensionless", "dimensionless (a ratio, an emissivity, a state)", pint="dimensionless"),
    Unit("%", "dimensionless", "percent", pint="percent"),
    Unit("ppm", "dimensionless", "parts per million"),
)

#: the kinds ``bridge.units`` may convert, and the base unit of each
CONVERTIBLE: Final = {"pressure": "Pa", "temperature": "K"}

_BY_SYMBOL: Final = {u.symbol: u for u in VOCABULARY}
_BY_ALIAS: Final = {alias: u for u in VOCABULARY for alias in u.aliases}


def lookup(text: str) -> Unit | None:
    """The unit ``text`` names (a symbol, or an alias), None if it is not in the vocabulary."""
    stripped = text.strip()
    return _BY_SYMBOL.get(stripped) or _BY_ALIAS.get(stripped)


def canonical(text: str) -> str:
    """``text`` as the vocabulary's symbol (``°C`` -> ``degC``, ``micron`` -> ``mTorr``).

    ValueError naming the accepted symbols for a unit the vocabulary does not have: a config
    that says ``units: C`` is told so when it is checked, not after a month of ambiguous data.
    """
    unit = lookup(text)
    if unit is None:
        raise ValueError(f"unit {text!r} is not in the unit vocabulary (docs/units.md): use one of "
                         f"{', '.join(u.symbol for u in VOCABULARY)}")
    return unit.symbol


def kind(symbol: str) -> str | None:
    """The kind of quantity ``symbol`` measures (``pressure``, ``temperature``, ...), None if unknown."""
    unit = lookup(symbol)
    return None if unit is None else unit.kind


def convert(value: float, from_symbol: str, to_symbol: str) -> float:
    """``value`` in ``from_symbol`` expressed in ``to_symbol``; both of one convertible kind."""
    source, target = lookup(from_symbol), lookup(to_symbol)
    if source is None or target is None:
        raise ValueError(f"cannot convert {from_symbol!r} to {to_symbol!r}: not both in the vocabulary")
    if source.kind != target.kind or source.scale is None or target.scale is None:
        raise ValueError(f"cannot convert {source.symbol} ({source.kind}) to {target.symbol} ({target.kind})")
    if source is target:
        return value
    base = value * source.scale + source.offset
    return (base - target.offset) / target.scale


def symbols(of_kind: str) -> tuple[str, ...]:
    """The symbols of one kind, in the vocabulary's order."""
    return tuple(u.symbol for u in VOCABULARY if u.kind == of_kind)

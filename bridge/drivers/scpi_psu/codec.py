"""SCPI power supplies, text in and values out (docs/protocols.md sections 7.1 and 7.5).

Pure functions only: which query reads which quantity in each dialect, how the identity names
the dialect, and how replies (numbers, output states, error-queue entries) decode. The VISA
dialogue lives in ``driver.py`` and :mod:`bridge.drivers.common.visa_session`; numbers are parsed
by the shared text codec so that every text driver reads ``+1.2E+01`` the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from bridge.drivers.common.text_codec import number_measurement, parse_number
from bridge.errors import ProtocolError
from bridge.model import BOOL, FLOAT, ChannelType, Measurement, Quality


class Dialect(StrEnum):
    #: Keysight E36300 family: channel lists ``(@n)``, ``OUTP?`` answers 0|1
    KEYSIGHT = "keysight"
    #: Rigol DP800: ``CHn`` arguments and ``:SOUR<n>:`` nodes, ``:OUTP?`` answers ON|OFF
    RIGOL = "rigol"


class Quantity(StrEnum):
    VOLTAGE = "voltage"
    CURRENT = "current"
    VOLTAGE_SETPOINT = "voltage_setpoint"
    CURRENT_SETPOINT = "current_setpoint"
    OUTPUT = "output"


UNITS: dict[Quantity, str] = {
    Quantity.VOLTAGE: "V",
    Quantity.CURRENT: "A",
    Quantity.VOLTAGE_SETPOINT: "V",
    Quantity.CURRENT_SETPOINT: "A",
    Quantity.OUTPUT: "1",
}

#: what each quantity's values are: the output is on or off, the rest are numbers
TYPES: dict[Quantity, ChannelType] = {q: BOOL if q is Quantity.OUTPUT else FLOAT for q in Quantity}

_COMMANDS: dict[Dialect, dict[Quantity, str]] = {
    Dialect.KEYSIGHT: {
        Quantity.VOLTAGE: "MEAS:VOLT? (@{n})",
        Quantity.CURRENT: "MEAS:CURR? (@{n})",
        Quantity.VOLTAGE_SETPOINT: "VOLT? (@{n})",
        Quantity.CURRENT_SETPOINT: "CURR? (@{n})",
        Quantity.OUTPUT: "OUTP? (@{n})",
    },
    Dialect.RIGOL: {
        Quantity.VOLTAGE: ":MEAS:VOLT? CH{n}",
        Quantity.CURRENT: ":MEAS:CURR? CH{n}",
        Quantity.VOLTAGE_SETPOINT: ":SOUR{n}:VOLT?",
        Quantity.CURRENT_SETPOINT: ":SOUR{n}:CURR?",
        Quantity.OUTPUT: ":OUTP? CH{n}",
    },
}

IDN = "*IDN?"
ERROR_QUERY = "SYST:ERR?"

#: makers as the first ``*IDN?`` field spells them (upper case) -> dialect
_MAKERS: dict[str, Dialect] = {
    "KEYSIGHT TECHNOLOGIES": Dialect.KEYSIGHT,
    "KEYSIGHT": Dialect.KEYSIGHT,
    "AGILENT TECHNOLOGIES": Dialect.KEYSIGHT,
    "HEWLETT-PACKARD": Dialect.KEYSIGHT,
    "RIGOL TECHNOLOGIES": Dialect.RIGOL,
    "RIGOL": Dialect.RIGOL,
}

#: ``code,"message"``; the code may carry a sign (``+0`` Keysight, ``0`` Rigol [U]), the message
#: may lack quotes or carry detail after a semicolon (``-113,"Undefined header;VOLTS 5"``)
_ERROR_ENTRY = re.compile(r'^\s*([+-]?\d+)\s*,\s*(?:"(.*)"|(.*?))\s*$')

_OUTPUT_STATES: dict[str, bool] = {"0": False, "1": True, "+0": False, "+1": True, "OFF": False, "ON": True}


def command(dialect: Dialect, quantity: Quantity, channel: int) -> str:
    """``(KEYSIGHT, VOLTAGE, 2)`` -> ``"MEAS:VOLT? (@2)"``; ``(RIGOL, OUTPUT, 1)`` -> ``":OUTP? CH1"``."""
    return _COMMANDS[dialect][quantity].format(n=channel)


def dialect_from_idn(identity: str) -> Dialect | None:
    """The dialect of the maker in an ``*IDN?`` answer, None for makers not known here."""
    maker = identity.split(",", 1)[0].strip().upper()
    return _MAKERS.get(maker)


def parse_output_state(reply: str) -> bool:
    """``0|1`` (Keysight) or ``ON|OFF`` (Rigol) -> False / True; either form accepted from both."""
    state = _OUTPUT_STATES.get(reply.strip().upper())
    if state is None:
        raise ProtocolError(f"not an output state (0|1|ON|OFF): {reply!r}")
    return state


def quantity_measurement(quantity: Quantity, reply: str) -> Measurement:
    """A reply to the query of ``quantity`` as a measurement in its unit."""
    units = UNITS[quantity]
    if quantity is Quantity.OUTPUT:
        return Measurement(parse_output_state(reply), Quality.OK, units)
    try:
        number = parse_number(reply)
    except ProtocolError:
        raise ProtocolError(f"{quantity.value} reply {reply!r} is not a number") from None
    return number_measurement(number, units)


@dataclass(frozen=True)
class ScpiError:
    """One entry of the SCPI error queue; code 0 means the queue is empty."""

    code: int
    message: str

    @property
    def is_error(self) -> bool:
        return self.code != 0

    def __str__(self) -> str:
        return f'{self.code},"{self.message}"'


def parse_error(reply: str) -> ScpiError:
    """``-113,"Undefined header"`` -> ScpiError(-113, "Undefined header"); ``+0,"No error"`` -> code 0."""
    match = _ERROR_ENTRY.match(reply)
    if match is None:
        raise ProtocolError(f"not an error-queue entry (code,\"message\"): {reply!r}")
    message = match.group(2) if match.group(2) is not None else match.group(3)
    return ScpiError(int(match.group(1)), message)

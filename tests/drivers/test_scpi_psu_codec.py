"""Exact rules of the SCPI power-supply codec (docs/protocols.md 7.1): commands, identities, replies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.drivers.scpi_psu import PsuOptions, ScpiPsu, codec
from bridge.drivers.scpi_psu.codec import Dialect, Quantity, ScpiError
from bridge.errors import ProtocolError
from bridge.model import Quality


@pytest.mark.parametrize(
    ("quantity", "keysight", "rigol"),
    [
        (Quantity.VOLTAGE, "MEAS:VOLT? (@2)", ":MEAS:VOLT? CH2"),
        (Quantity.CURRENT, "MEAS:CURR? (@2)", ":MEAS:CURR? CH2"),
        (Quantity.VOLTAGE_SETPOINT, "VOLT? (@2)", ":SOUR2:VOLT?"),
        (Quantity.CURRENT_SETPOINT, "CURR? (@2)", ":SOUR2:CURR?"),
        (Quantity.OUTPUT, "OUTP? (@2)", ":OUTP? CH2"),
    ],
)
def test_commands_per_dialect(quantity: Quantity, keysight: str, rigol: str) -> None:
    assert codec.command(Dialect.KEYSIGHT, quantity, 2) == keysight
    assert codec.command(Dialect.RIGOL, quantity, 2) == rigol


def test_every_command_is_a_query() -> None:
    # A command without reply followed by a read hangs (docs/protocols.md 7.5.1): none may be sent.
    for dialect in Dialect:
        for quantity in Quantity:
            assert "?" in codec.command(dialect, quantity, 1)
    assert codec.IDN.endswith("?") and codec.ERROR_QUERY.endswith("?")


@pytest.mark.parametrize(
    ("identity", "dialect"),
    [
        ("Keysight Technologies,E36312A,MY59000001,2.1.0-1.0.4-1.12", Dialect.KEYSIGHT),
        ("Agilent Technologies,E3631A,0,2.1-5.0-1.0", Dialect.KEYSIGHT),
        ("HEWLETT-PACKARD,E3632A,0,1.1-5.0-1.0", Dialect.KEYSIGHT),
        ("RIGOL TECHNOLOGIES,DP832,DP8C19xxxxxxx,00.01.14", Dialect.RIGOL),
        ("Rigol Technologies,DP821A,DP8E0000,00.01.16", Dialect.RIGOL),
        ("LAMBDA,GENX-Y", None),
        ("", None),
    ],
)
def test_dialect_from_identity(identity: str, dialect: Dialect | None) -> None:
    assert codec.dialect_from_idn(identity) is dialect


@pytest.mark.parametrize(
    ("reply", "state"),
    [("0", False), ("1", True), ("+1", True), ("ON", True), ("OFF", False), ("on", True), (" 1 ", True)])
def test_output_states_of_both_dialects(reply: str, state: bool) -> None:
    assert codec.parse_output_state(reply) is state
    assert codec.quantity_measurement(Quantity.OUTPUT, reply).value is state


@pytest.mark.parametrize("reply", ["", "2", "TRUE", "CV"])
def test_unknown_output_state_is_quoted(reply: str) -> None:
    with pytest.raises(ProtocolError, match=f"not an output state .*{reply!r}"):
        codec.parse_output_state(reply)


@pytest.mark.parametrize(
    ("quantity", "reply", "value", "units"),
    [
        (Quantity.VOLTAGE, "+4.99910000E+00", 4.9991, "V"),
        (Quantity.VOLTAGE, "11.998", 11.998, "V"),
        (Quantity.CURRENT, "0.2500", 0.25, "A"),
        (Quantity.CURRENT_SETPOINT, "+1.00000000E+00", 1.0, "A"),
        (Quantity.OUTPUT, "ON", 1.0, "1"),
    ],
)
def test_quantity_measurements(quantity: Quantity, reply: str, value: float, units: str) -> None:
    m = codec.quantity_measurement(quantity, reply)
    assert (m.value, m.quality, m.units) == (pytest.approx(value), Quality.OK, units)


def test_overload_code_is_over_range_without_value() -> None:
    m = codec.quantity_measurement(Quantity.CURRENT, "+9.90000000E+37")
    assert (m.value, m.quality, m.units) == (None, Quality.OVER_RANGE, "A")


def test_bad_number_names_the_quantity_and_quotes_the_reply() -> None:
    with pytest.raises(ProtocolError, match=r"^current reply '1,2' is not a number$"):
        codec.quantity_measurement(Quantity.CURRENT, "1,2")


@pytest.mark.parametrize(
    ("reply", "entry"),
    [
        ('+0,"No error"', ScpiError(0, "No error")),  # Keysight / SCPI standard
        ('0,"No error"', ScpiError(0, "No error")),  # Rigol [U]
        ('-113,"Undefined header"', ScpiError(-113, "Undefined header")),
        ('-350,"Queue overflow"', ScpiError(-350, "Queue overflow")),
        ('-113,"Undefined header;VOLTS 5"', ScpiError(-113, "Undefined header;VOLTS 5")),
        ("-222, Data out of range", ScpiError(-222, "Data out of range")),
        ('  -410 , "Query INTERRUPTED" ', ScpiError(-410, "Query INTERRUPTED")),
        ('+201,"Invalid while in local"', ScpiError(201, "Invalid while in local")),
    ],
)
def test_error_queue_entries(reply: str, entry: ScpiError) -> None:
    assert codec.parse_error(reply) == entry
    assert codec.parse_error(reply).is_error is (entry.code != 0)


@pytest.mark.parametrize("reply", ["", "No error", '"No error",0', "+0x"])
def test_bad_error_entries_are_quoted(reply: str) -> None:
    with pytest.raises(ProtocolError, match="not an error-queue entry"):
        codec.parse_error(reply)


def test_error_entry_prints_as_the_instrument_wrote_it() -> None:
    assert str(ScpiError(-222, "Data out of range")) == '-222,"Data out of range"'


def test_channel_table_and_options() -> None:
    table = ScpiPsu.channel_table(PsuOptions(channels=[2, 1]))
    assert [(c.name, c.units) for c in table[:5]] == [
        ("voltage_2", "V"), ("current_2", "A"), ("voltage_setpoint_2", "V"), ("current_setpoint_2", "A"),
        ("output_2", "1")]
    assert [c.name for c in table[5:]] == [
        "voltage_1", "current_1", "voltage_setpoint_1", "current_setpoint_1", "output_1"]
    assert PsuOptions().dialect == "auto" and PsuOptions().channels == [1]
    with pytest.raises(ValidationError, match="listed twice"):
        PsuOptions(channels=[1, 1])
    with pytest.raises(ValidationError):
        PsuOptions.model_validate({"dialect": "tdk"})

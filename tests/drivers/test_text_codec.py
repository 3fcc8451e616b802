"""Exact rules of the text codec and query table (bridge/drivers/common/: the scpi and serial_ascii drivers)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from bridge.drivers.common import text_codec as codec
from bridge.drivers.common.query_table import Query
from bridge.drivers.scpi import ScpiOptions
from bridge.drivers.serial_ascii import SerialAsciiOptions
from bridge.errors import ProtocolError
from bridge.model import Quality


def test_commands_get_exactly_the_terminator() -> None:
    assert codec.encode_command("T?", b"\r") == b"T?\r"
    assert codec.encode_command("MEAS:VOLT? (@1)", b"\n") == b"MEAS:VOLT? (@1)\n"
    assert codec.encode_command("R", b"\r\n") == b"R\r\n"


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (b"T=23.51C\r", "T=23.51C"),
        (b"  12.5 \r\n", "12.5"),
        (b"\xff\xfe\x00T=1.0C\r", "T=1.0C"),  # line noise before the reply
        (b"\n12.5\r", "12.5"),  # the LF of a CR LF reply read with a CR terminator
    ],
)
def test_decode_reply(frame: bytes, text: str) -> None:
    assert codec.decode_reply(frame) == text


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("12.5", 12.5),
        ("+1.23450000E+01", 12.345),
        ("-4.2e-3", -4.2e-3),
        ("7", 7.0),
        (" 0.0000 ", 0.0),
        (".5", 0.5),
        ("5.", 5.0),
    ],
)
def test_numbers(text: str, number: float) -> None:
    assert codec.parse_number(text) == pytest.approx(number)


@pytest.mark.parametrize("text", ["", "ON", "1,2", "12.5V", "nan", "inf", "1e", "--1", "0x10", "1 2"])
def test_not_numbers_quote_the_text(text: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(repr(text))):
        codec.parse_number(text)


def test_whole_reply_as_number_with_scale_offset_units() -> None:
    m = codec.parse_reply("0.2500", scale=1000.0, offset=-5.0, units="mA")
    assert (m.value, m.quality, m.units) == (pytest.approx(245.0), Quality.OK, "mA")


def test_regex_group_is_the_number() -> None:
    m = codec.parse_reply("T=23.51C", pattern=re.compile(r"T=([-+0-9.]+)C"), offset=273.15, units="K")
    assert m.value == pytest.approx(296.66)
    assert m.units == "K"


def test_regex_is_searched_not_anchored() -> None:
    m = codec.parse_reply("5.000,0.5000,2.500", pattern=re.compile(r",([^,]+)$"), units="W")
    assert m.value == pytest.approx(2.5)


def test_reply_that_is_not_a_number_is_quoted() -> None:
    with pytest.raises(ProtocolError, match=r"^reply 'T=23.51C' is not a number$"):
        codec.parse_reply("T=23.51C")


def test_regex_without_match_quotes_the_reply() -> None:
    with pytest.raises(ProtocolError, match=r"^reply 'T=----C' does not match 'T=\(\[0-9.\]\+\)C'$"):
        codec.parse_reply("T=----C", pattern=re.compile(r"T=([0-9.]+)C"))


def test_regex_group_that_is_not_a_number_quotes_both() -> None:
    with pytest.raises(ProtocolError, match=r"^captured '--' of reply 'T=--C' is not a number$"):
        codec.parse_reply("T=--C", pattern=re.compile(r"T=(\S+)C"))


def test_optional_group_that_captured_nothing() -> None:
    with pytest.raises(ProtocolError, match="captured nothing"):
        codec.parse_reply("T=C", pattern=re.compile(r"T=(\d+)?C"))


@pytest.mark.parametrize(
    ("reply", "quality", "detail"),
    [
        ("+9.90000000E+37", Quality.OVER_RANGE, "overload (+9.9E37)"),
        ("9.9E37", Quality.OVER_RANGE, "overload (+9.9E37)"),
        ("-9.9E+37", Quality.UNDER_RANGE, "overload (-9.9E37)"),
        ("9.91E37", Quality.INVALID, "not a number (9.91E37)"),
    ],
)
def test_scpi_overload_codes_carry_no_value(reply: str, quality: Quality, detail: str) -> None:
    m = codec.parse_reply(reply, scale=2.0, units="V")
    assert (m.value, m.quality, m.units, m.detail) == (None, quality, "V", detail)


def test_large_ordinary_numbers_are_values() -> None:
    assert codec.parse_reply("9.8E37").value == pytest.approx(9.8e37)


# ------------------------------------------------------------------ the query table


def test_query_defaults() -> None:
    q = Query(name="temperature", command="T?")
    assert (q.parse, q.regex, q.scale, q.offset, q.units, q.pattern) == ("number", None, 1.0, 0.0, "1", None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"parse": "regex"}, "needs a 'regex'"),
        ({"parse": "regex", "regex": r"T=\d+"}, "exactly one group, it has 0"),
        ({"parse": "regex", "regex": r"(T)=(\d+)"}, "exactly one group, it has 2"),
        ({"parse": "regex", "regex": r"T=(\d+"}, "invalid regex"),
        ({"regex": r"T=(\d+)"}, "only used with parse: regex"),
        ({"scale": 0}, "scale 0"),
        ({"command": "T?\r"}, "printable ASCII"),
        ({"command": "T°?"}, "printable ASCII"),
        ({"name": "has space"}, "pattern"),
        ({"parse": "json"}, "'number' or 'regex'"),
    ],
)
def test_bad_queries_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Query.model_validate({"name": "t", "command": "T?", **fields})


def test_query_names_must_be_distinct() -> None:
    with pytest.raises(ValidationError, match="used twice: t"):
        ScpiOptions.model_validate({"queries": [{"name": "t", "command": "A?"}, {"name": "t", "command": "B?"}]})


def test_a_table_needs_a_query() -> None:
    with pytest.raises(ValidationError):
        SerialAsciiOptions.model_validate({"queries": []})


def test_transport_specific_options() -> None:
    serial = SerialAsciiOptions.model_validate({"queries": [{"name": "t", "command": "T?"}]})
    assert (serial.terminator, serial.reply_terminator) == ("\r", None)
    scpi = ScpiOptions.model_validate({"queries": [{"name": "t", "command": "T?"}], "sync_command": None})
    assert scpi.sync_command is None
    with pytest.raises(ValidationError, match=r"Extra inputs"):
        ScpiOptions.model_validate({"queries": [{"name": "t", "command": "T?"}], "terminator": "\r"})


@pytest.mark.parametrize(("text", "number"), [("42", 42), ("+42", 42), ("-7", -7), (" 0 ", 0), ("0x1F", 31),
                                              ("0X1f", 31), ("#H1F", 31), ("#h00ff", 255)])
def test_integers_as_instruments_write_them(text: str, number: int) -> None:
    assert codec.parse_integer(text) == number and type(codec.parse_integer(text)) is int


@pytest.mark.parametrize("text", ["", "1.5", "1e3", "0x", "#H", "12 V", "0b101", "++1"])
def test_what_is_not_one_integer_is_quoted(text: str) -> None:
    with pytest.raises(ProtocolError, match=f"not an integer: {re.escape(repr(text))}"):
        codec.parse_integer(text)


@pytest.mark.parametrize(("text", "state"), [("0", False), ("1", True), ("+1", True), ("ON", True), ("off", False),
                                             ("True", True), ("FALSE", False), (" 1 ", True)])
def test_booleans_in_their_usual_spellings(text: str, state: bool) -> None:
    assert codec.parse_bool(text) is state


@pytest.mark.parametrize("text", ["", "2", "YES", "CV", "1.0"])
def test_what_is_not_a_boolean_is_quoted(text: str) -> None:
    with pytest.raises(ProtocolError, match=f"not a boolean .*{re.escape(repr(text))}"):
        codec.parse_bool(text)

"""The expression component on its own: parsing and checking with columns, evaluation, unknown and staleness
(bridge/expressions/, docs/decisions/0006-cel-expressions.md)."""

from __future__ import annotations

import pytest

from bridge.expressions import ExpressionError, Latest, compile_expression
from bridge.model import Quality, Reading, ValueType

CATALOG = {"cell_ga": ["pv", "working_setpoint", "output_power"], "pyrometer": ["temperature"],
           "heater": ["voltage-1"]}
T0 = 1_765_000_000.0


@pytest.mark.parametrize(("text", "message", "column"), [
    ("cell_ga.pvv > 500.0", "unknown channel 'cell_ga.pvv' (cell_ga has: output_power, pv, working_setpoint)", 8),
    ("cell_gb.pv > 500.0", "unknown instrument 'cell_gb' (instruments: cell_ga, heater, pyrometer)", 1),
    ("cell_ga.pv > 500.0 &&", "expected a value, a name or '(', found the end", 22),
    ("cell_ga.pv > 'hot'", "'>' cannot compare a double with a string", 12),
    ("cell_ga.pv == 'hot'", "'==' compares a double with a string, which is never equal", 12),
    ("cell_ga.pv + 1 > 2.0", "'+' mixes a double and an int: CEL does not convert numbers", 12),
    ("cell_ga.pv", "the expression gives a double, not true or false", 8),
    ("cell_ga > 1.0", "'cell_ga' is an instrument, not a value: name one of its channels", 1),
    ("max(cell_ga.pv, 1.0) > 0.0", "unknown function 'max'", 1),
    ("pyrometer.temperature > 1.0 && cell_ga.pv", "'&&' needs true or false, got a double", 29),
    ("cell_ga.?pv > 1.0", "the optional syntax '.?' is not supported", 8),
    ("cell_ga.pv > 1.0)", "unexpected ')' after a complete expression", 17),
    ("cell_ga.pv > 1.0 # comment", "unexpected character '#'", 18),
    ("cell_ga.pv % 2.0 == 0.0", "'%' is not defined for doubles", 12),
])
def test_a_bad_expression_is_refused_with_what_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, CATALOG)
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.column == column


def test_what_only_the_library_refuses_is_refused_too() -> None:
    with pytest.raises(ExpressionError, match=r"not valid CEL: .*invalid double literal"):
        compile_expression("cell_ga.pv > 1e400", CATALOG)


@pytest.mark.parametrize("text", [
    "cell_ga.pv > 500.0 && pyrometer.temperature > 300.0",
    "cell_ga.pv > 500",  # numbers of different types compare
    "!(cell_ga.pv > 500.0) || cell_ga['working_setpoint'] >= 500.0",
    'heater["voltage-1"] > 1.0',  # a channel that is not a CEL name
    "cell_ga.pv - cell_ga.working_setpoint < 2.0 ? true : false",
    "double(int(cell_ga.pv)) / 2.0 >= -1.5 // a comment",
    "size('abc') == 3 && 'GaAs'.startsWith('Ga') && cell_ga.pv in [1.0, 2.0] == false",
])
def test_good_expressions_compile_and_name_their_channels(text: str) -> None:
    assert compile_expression(text, CATALOG).channels


def test_evaluation_sees_the_latest_good_reading_of_each_channel() -> None:
    expression = compile_expression("cell_ga.pv > 500.0 && pyrometer.temperature > 300.0", CATALOG)
    latest = Latest({"cell_ga": 1.0, "pyrometer": 0.5})
    assert expression.evaluate(latest, T0).unknown == {"cell_ga.pv": "no reading",
                                                       "pyrometer.temperature": "no reading"}
    latest.update(Reading("cell_ga", "pv", 600.0, Quality.OK, T0, "degC"))
    latest.update(Reading("pyrometer", "temperature", 400.0, Quality.OK, T0, "degC"))
    result = expression.evaluate(latest, T0 + 1)
    assert (result.value, result.values) == (True, {"cell_ga.pv": 600.0, "pyrometer.temperature": 400.0})
    latest.update(Reading("pyrometer", "temperature", None, Quality.UNDER_RANGE, T0 + 1, "degC"))
    result = expression.evaluate(latest, T0 + 1)
    assert (result.value, result.unknown) == (None, {"pyrometer.temperature": "under_range"})


def test_a_channel_older_than_three_intervals_is_stale() -> None:
    expression = compile_expression("pyrometer.temperature > 300.0", CATALOG)
    latest = Latest({"pyrometer": 0.5})
    latest.update(Reading("pyrometer", "temperature", 400.0, Quality.OK, T0, "degC"))
    assert expression.evaluate(latest, T0 + 1.5).value is True  # exactly 3 intervals: still fresh
    assert expression.evaluate(latest, T0 + 1.51).unknown == {"pyrometer.temperature": "stale"}


def test_an_evaluation_error_is_unknown_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    expression = compile_expression("int(cell_ga.pv) / int(cell_ga.output_power) > 1", CATALOG)
    latest = Latest({"cell_ga": 1.0})
    latest.update(Reading("cell_ga", "pv", 600.0, Quality.OK, T0, "degC"))
    latest.update(Reading("cell_ga", "output_power", 0.0, Quality.OK, T0, "%"))
    with caplog.at_level("WARNING", logger="bridge.expressions.evaluate"):
        results = [expression.evaluate(latest, T0) for _ in range(3)]
    assert {r.value for r in results} == {None} and "division by zero" in (results[0].error or "")
    assert expression.errors == 3
    assert len([r for r in caplog.records if "could not be evaluated" in r.message]) == 1


def test_the_parser_bounds_its_nesting() -> None:
    with pytest.raises(ExpressionError, match="nested more than 64 levels"):
        compile_expression("(" * 200 + "cell_ga.pv > 1.0" + ")" * 200, CATALOG)
    with pytest.raises(ExpressionError, match="nested more than 64 levels"):
        compile_expression("!" * 200 + "(cell_ga.pv > 1.0)", CATALOG)
    with pytest.raises(ExpressionError, match="nested more than 64 levels"):
        compile_expression("1.0 + " * 150 + "cell_ga.pv > 1.0", CATALOG)
    assert compile_expression(" && ".join(["cell_ga.pv > 1.0"] * 40), CATALOG).channels == (("cell_ga", "pv"),)


def test_channels_that_are_not_floats_are_seen_as_doubles_or_unknown() -> None:
    """Expressions type every channel as a double: a bool is 0.0/1.0, an integer or a set of bits its double,
    the text of an enum or string is no number (unknown), so a run is never started on a misread value."""
    catalog = {"psu": ["output_1", "mode"], "cell_ga": ["status"]}
    latest = Latest({"psu": 1.0, "cell_ga": 1.0})
    latest.update(Reading("psu", "output_1", True, Quality.OK, T0, "", type=ValueType.BOOL))
    latest.update(Reading("cell_ga", "status", 33, Quality.OK, T0, "", "alarm 1, sensor break", ValueType.BITS))
    latest.update(Reading("psu", "mode", "CC", Quality.OK, T0, "", type=ValueType.ENUM))
    result = compile_expression("psu.output_1 == 1.0 && cell_ga.status > 0.0", catalog).evaluate(latest, T0)
    assert (result.value, result.values) == (True, {"psu.output_1": 1.0, "cell_ga.status": 33.0})
    assert all(type(v) is float for v in result.values.values())
    unknown = compile_expression("psu.mode > 0.0", catalog).evaluate(latest, T0)
    assert (unknown.value, unknown.unknown) == (None, {"psu.mode": "not a number (enum)"})

"""Evaluating a checked expression against the latest readings: true, false or unknown.

Semantics (docs/runs.md, "Automatic runs"): an expression sees each channel's latest reading of
quality ok as ``instrument.channel``, a double. If any channel it names has no reading yet, a
reading of bad quality, or one older than :data:`STALE_INTERVALS` of its instrument's poll
intervals, the result is **unknown** and says which channels made it so; it is not evaluated
at all. An instrument that is not polled (``interval: baseline``, read only at a run's start
and stop) has no poll interval: its channels are always unknown here, and config loading
refuses an expression that names them (bridge/config/auto_runs.py). An error while evaluating
(an integer division by zero, a type only known at run time) is unknown too, and is logged
once per expression and message, not once per reading.

Time is the instruments' own: ``now`` is the timestamp of the reading that asks, so a
backlog of readings is judged as it happened, not by when it is looked at.

The evaluator is the ``cel`` package (common-expression-language, decision 0006), imported on
first use so a config without expressions costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bridge.expressions.check import Catalog, check
from bridge.expressions.syntax import ExpressionError, parse
from bridge.model import Reading

log = logging.getLogger(__name__)

#: a channel older than this many of its instrument's poll intervals is stale
STALE_INTERVALS: Final = 3.0
#: an expression's text, at most (a config value; a rule is a line, not a program)
MAX_LENGTH: Final = 1000
#: distinct evaluation errors logged per expression, at most (then they are only counted)
_LOGGED_ERRORS: Final = 20


@dataclass(frozen=True, slots=True)
class Result:
    """One evaluation. ``value`` is True, False or None (unknown).

    ``values`` are the channel values it was evaluated with (``"instrument.channel": value``),
    ``unknown`` the channels that made it unknown with why (``"pyrometer.temperature": "stale"``),
    ``error`` the evaluation error, if that was the cause.
    """

    value: bool | None
    values: dict[str, float] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class Latest:
    """The latest reading of each channel, with what an expression needs to judge it: value, time, quality."""

    def __init__(self, intervals: Mapping[str, float | None], stale_intervals: float = STALE_INTERVALS) -> None:
        #: instrument -> how old its readings may be before they are stale (s); None for an instrument
        #: that is not polled (``interval: baseline``), whose readings are never fresh enough to judge by
        self.max_age = {name: None if interval is None else interval * stale_intervals
                        for name, interval in intervals.items()}
        self._latest: dict[tuple[str, str], tuple[float | None, float, str]] = {}

    def update(self, reading: Reading) -> None:
        value = reading.value
        why = reading.quality.value
        if isinstance(value, str):  # an enum's or a string's text: expressions hold doubles (check.py)
            value, why = None, f"not a number ({reading.type})"
        elif value is not None and type(value) is not float:  # a bool (0/1), an int, a set of bits
            value = float(value)
        self._latest[(reading.instrument, reading.channel)] = (value, reading.timestamp, why)

    def value(self, instrument: str, channel: str, now: float) -> tuple[float | None, str]:
        """The channel's value at ``now``, or None and why not (``no reading``, ``stale``, its quality).

        Every channel is a double here, as the checker types it: a bool is 0.0 or 1.0, an integer
        (``int``, ``bits``) its double; the text of an enum or string channel is no number, so such a
        channel is unknown (``not a number (enum)``)."""
        latest = self._latest.get((instrument, channel))
        if latest is None:
            return None, "no reading"
        value, stamp, quality = latest
        max_age = self.max_age.get(instrument, float("inf"))
        if max_age is None:
            return None, "not polled (interval: baseline)"
        if now - stamp > max_age:
            return None, "stale"
        if value is None:
            return None, quality
        return value, "ok"


class Expression:
    """A compiled, checked expression; :func:`compile_expression` makes one."""

    def __init__(self, text: str, channels: tuple[tuple[str, str], ...], program: Any) -> None:
        self.text = text
        #: (instrument, channel) it names, in order of first use
        self.channels = channels
        self.instruments = frozenset(instrument for instrument, _ in channels)
        self._program = program
        self._logged: set[str] = set()
        #: evaluation errors so far (each also makes its result unknown)
        self.errors = 0

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def evaluate(self, latest: Latest, now: float) -> Result:
        context: dict[str, dict[str, float]] = {}
        values: dict[str, float] = {}
        unknown: dict[str, str] = {}
        for instrument, channel in self.channels:
            value, why = latest.value(instrument, channel, now)
            if value is None:
                unknown[f"{instrument}.{channel}"] = why
                continue
            context.setdefault(instrument, {})[channel] = value
            values[f"{instrument}.{channel}"] = value
        if unknown:
            return Result(None, values, unknown)
        try:
            result = self._program.execute(context)
        except Exception as exc:  # the library raises ValueError, TypeError, KeyError, RuntimeError, ZeroDivisionError
            return self._failed(f"{type(exc).__name__}: {exc}", values)
        if not isinstance(result, bool):
            return self._failed(f"gave {type(result).__name__} {result!r:.80}, not true or false", values)
        return Result(result, values)

    def _failed(self, error: str, values: dict[str, float]) -> Result:
        self.errors += 1
        error = " ".join(error.split())[:300]
        if error not in self._logged and len(self._logged) < _LOGGED_ERRORS:
            self._logged.add(error)
            log.warning("expression %r could not be evaluated (%s); counted as unknown (logged once)",
                        self.text, error)
        return Result(None, values, {}, error)


def compile_expression(text: str, catalog: Catalog) -> Expression:
    """Parse, check against ``catalog`` and compile ``text``; :class:`ExpressionError` for the first problem."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression is text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{len(text)} characters; an expression is at most {MAX_LENGTH}")
    checked = check(parse(text), catalog)
    import cel  # the library's own parser has the last word on the syntax

    try:
        program = cel.compile(text)
    except Exception as exc:  # ValueError with the parser's report; its first line says what
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExpressionError(f"not valid CEL: {first}") from None
    return Expression(text, checked.channels, program)

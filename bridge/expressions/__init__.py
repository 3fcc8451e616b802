"""Expressions over the chamber's channels: CEL text checked at config load, evaluated on the readings.

A component of its own: automatic runs (``bridge.runs.auto.start_when`` / ``stop_when``) use it
today, rules and alarms will. It sits in the core layer (it imports only ``bridge.errors`` and
``bridge.model``), so config loading can check an expression where it reads it.

- :func:`compile_expression` (text, catalog of instruments and their channels) parses the text
  (``syntax``), checks names and types (``check``) and compiles it with the CEL library;
  every problem is an :class:`ExpressionError` with the column.
- :class:`Latest` holds the latest reading of each channel; :meth:`Expression.evaluate` gives
  a :class:`Result`: true, false, or unknown with the channels that made it so.

Why CEL, which library, and what it costs: docs/decisions/0006-cel-expressions.md.
"""

from bridge.expressions.check import FUNCTIONS, METHODS, Catalog
from bridge.expressions.evaluate import MAX_LENGTH, STALE_INTERVALS, Expression, Latest, Result, compile_expression
from bridge.expressions.syntax import ExpressionError

__all__ = [
    "FUNCTIONS", "MAX_LENGTH", "METHODS", "STALE_INTERVALS", "Catalog", "Expression", "ExpressionError", "Latest",
    "Result", "compile_expression",
]

"""Names and types of an expression, checked against the instruments and channels a config has.

What the check guarantees: every ``instrument.channel`` exists; no operator meets operands CEL
has no overload for (``cell_ga.pv + 1`` mixes double and int, ``cell_ga.pv > "x"`` compares a
number with a string); only functions the evaluator has are called; the result is a boolean.
Every channel value is a double. Where a type cannot be known before run time (a map or list
element) it is ``dyn`` and is let through; the evaluator turns a run-time type error into
*unknown* (bridge/expressions/evaluate.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from bridge.expressions.syntax import (
    Binary,
    Call,
    Conditional,
    ExpressionError,
    Index,
    ListOf,
    Literal,
    MapOf,
    Name,
    Node,
    Select,
    Unary,
)

#: instrument -> its channel names: what an expression may name
Catalog = Mapping[str, Collection[str]]

NUMBERS: Final = frozenset({"int", "uint", "double"})
#: functions and methods the evaluator has, with what they give back (cel-spec standard definitions)
FUNCTIONS: Final = {"size": "int", "int": "int", "uint": "uint", "double": "double", "string": "string",
                    "dyn": "dyn"}
METHODS: Final = {"size": "int", "contains": "bool", "startsWith": "bool", "endsWith": "bool", "matches": "bool"}
#: how a channel is written in the messages
_SHOWN_CHANNELS: Final = 12


@dataclass(frozen=True, slots=True)
class Checked:
    """What the check found: the channels named, as (instrument, channel), in order of first use."""

    channels: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class _Instrument:
    """The type of a bare instrument name: a namespace of channels, not a value."""

    name: str


_Type = str | _Instrument


class _Checker:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.channels: dict[tuple[str, str], None] = {}

    def channel(self, instrument: str, channel: str, column: int) -> str:
        known = self.catalog[instrument]
        if channel not in known:
            listed = sorted(known)
            shown = ", ".join(listed[:_SHOWN_CHANNELS]) + (", ..." if len(listed) > _SHOWN_CHANNELS else "")
            raise ExpressionError(f"unknown channel '{instrument}.{channel}' ({instrument} has: {shown or 'none'})",
                                  column)
        self.channels.setdefault((instrument, channel))
        return "double"

    def value(self, node: Node) -> str:
        """The type of ``node`` used as a value (an instrument alone is not one)."""
        kind = self.type_of(node)
        if isinstance(kind, _Instrument):
            channels = sorted(self.catalog[kind.name])
            example = f"{kind.name}.{channels[0]}" if channels else kind.name
            raise ExpressionError(f"'{kind.name}' is an instrument, not a value: name one of its channels, "
                                  f"e.g. {example}", node.column)
        return kind

    def type_of(self, node: Node) -> _Type:
        if isinstance(node, Literal):
            return node.kind
        if isinstance(node, Name):
            if node.name in self.catalog:
                return _Instrument(node.name)
            known = ", ".join(sorted(self.catalog)) or "none"
            raise ExpressionError(f"unknown instrument '{node.name}' (instruments: {known})", node.column)
        if isinstance(node, Select):
            operand = self.type_of(node.operand)
            if isinstance(operand, _Instrument):
                return self.channel(operand.name, node.field, node.column)
            if operand in ("map", "dyn"):
                return "dyn"
            raise ExpressionError(f"'.{node.field}' on {_a(operand)}: only instruments and maps have fields",
                                  node.column)
        if isinstance(node, Index):
            return self.index(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            operand = self.value(node.operand)
            if node.op == "!":
                self.boolean(operand, "'!'", node.column)
                return "bool"
            if operand not in NUMBERS and operand != "dyn":
                raise ExpressionError(f"'-' needs a number, got {_a(operand)}", node.column)
            return operand
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Conditional):
            self.boolean(self.value(node.test), "the test of '? :'", node.column)
            then, otherwise = self.value(node.then), self.value(node.otherwise)
            return then if then == otherwise else "dyn"
        if isinstance(node, ListOf):
            for item in node.items:
                self.value(item)
            return "list"
        assert isinstance(node, MapOf)
        for key, item in node.entries:
            key_type = self.value(key)
            if key_type not in ("int", "uint", "bool", "string", "dyn"):
                raise ExpressionError(f"a map key must be an int, uint, bool or string, got {_a(key_type)}", key.column)
            self.value(item)
        return "map"

    def index(self, node: Index) -> str:
        operand = self.type_of(node.operand)
        if isinstance(operand, _Instrument):
            if not (isinstance(node.index, Literal) and node.index.kind == "string"):
                raise ExpressionError(f"a channel of '{operand.name}' must be named as a string, as in "
                                      f"{operand.name}[\"pv\"]", node.column)
            return self.channel(operand.name, _unquote(node.index.text), node.column)
        index = self.value(node.index)
        if operand == "list":
            if index not in ("int", "uint", "dyn"):
                raise ExpressionError(f"a list index must be an int, got {_a(index)}", node.column)
            return "dyn"
        if operand in ("map", "dyn"):
            return "dyn"
        raise ExpressionError(f"{_a(operand)} cannot be indexed", node.column)

    def call(self, node: Call) -> str:
        if node.target is None:
            result = FUNCTIONS.get(node.function)
            if result is None:
                raise ExpressionError(f"unknown function '{node.function}' (functions: {', '.join(FUNCTIONS)}; "
                                      f"methods: {', '.join(METHODS)})", node.column)
            if len(node.args) != 1:
                raise ExpressionError(f"{node.function}() takes one argument, got {len(node.args)}", node.column)
            arg = self.value(node.args[0])
            if node.function == "size" and arg not in ("string", "bytes", "list", "map", "dyn"):
                raise ExpressionError(f"size() of {_a(arg)}: only strings, bytes, lists and maps have a size",
                                      node.column)
            return result
        result = METHODS.get(node.function)
        if result is None:
            raise ExpressionError(f"unknown method '{node.function}' (methods: {', '.join(METHODS)})", node.column)
        target = self.value(node.target)
        args = [self.value(arg) for arg in node.args]
        wanted = 0 if node.function == "size" else 1
        if len(args) != wanted:
            raise ExpressionError(f".{node.function}() takes {wanted} argument{'s' if wanted != 1 else ''}, "
                                  f"got {len(args)}", node.column)
        if node.function != "size" and (target not in ("string", "dyn") or args[0] not in ("string", "dyn")):
            raise ExpressionError(f".{node.function}() works on strings, got {_a(target)}", node.column)
        if node.function == "size" and target not in ("string", "bytes", "list", "map", "dyn"):
            raise ExpressionError(f".size() of {_a(target)}: only strings, bytes, lists and maps have a size",
                                  node.column)
        return result

    def boolean(self, kind: str, what: str, column: int) -> None:
        if kind not in ("bool", "dyn"):
            raise ExpressionError(f"{what} needs true or false, got {_a(kind)}", column)

    def binary(self, node: Binary) -> str:
        left, right = self.value(node.left), self.value(node.right)
        op = node.op
        if op in ("&&", "||"):
            self.boolean(left, f"'{op}'", node.column)
            self.boolean(right, f"'{op}'", node.column)
            return "bool"
        if "dyn" in (left, right):
            return "bool" if op in ("<", "<=", ">", ">=", "==", "!=", "in") else "dyn"
        if op == "in":
            if right not in ("list", "map"):
                raise ExpressionError(f"'in' needs a list or a map on its right, got {_a(right)}", node.column)
            return "bool"
        if op in ("==", "!="):
            if left == right or {left, right} <= NUMBERS or "null" in (left, right):
                return "bool"
            raise ExpressionError(f"'{op}' compares {_a(left)} with {_a(right)}, which is never equal", node.column)
        if op in ("<", "<=", ">", ">="):
            if {left, right} <= NUMBERS or (left == right and left in ("string", "bytes", "bool")):
                return "bool"
            raise ExpressionError(f"'{op}' cannot compare {_a(left)} with {_a(right)}", node.column)
        # arithmetic: CEL never mixes number types here (1 + 2.5 has no overload)
        if left == right and (left in NUMBERS or (op == "+" and left in ("string", "bytes", "list"))):
            if op == "%" and left == "double":
                raise ExpressionError("'%' is not defined for doubles", node.column)
            return left
        if {left, right} <= NUMBERS:
            raise ExpressionError(f"'{op}' mixes {_a(left)} and {_a(right)}: CEL does not convert numbers in "
                                  f"arithmetic (write 500.0 rather than 500, or double(x))", node.column)
        raise ExpressionError(f"'{op}' is not defined for {_a(left)} and {_a(right)}", node.column)


def _a(kind: str) -> str:
    """``kind`` with its article: "a double", "an int"."""
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _unquote(text: str) -> str:
    """The value of a simple string literal (a channel name: no escapes needed, none interpreted)."""
    body = text.lstrip("rR")
    quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    return body[len(quote):-len(quote)]


def check(tree: Node, catalog: Catalog) -> Checked:
    """Check ``tree``'s names against ``catalog`` and its types; :class:`ExpressionError` for the first problem."""
    checker = _Checker(catalog)
    result = checker.value(tree)
    if result not in ("bool", "dyn"):
        raise ExpressionError(f"the expression gives {_a(result)}, not true or false (compare it, as in "
                              f"cell_ga.pv > 500.0)", tree.column)
    return Checked(tuple(checker.channels))

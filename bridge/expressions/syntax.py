"""CEL text to a small syntax tree, so names and types can be checked before anything runs.

The CEL library the bridge evaluates with (``cel``, decision 0006) has no type checker and no
syntax tree it shows; a mistyped channel in ``a.pv > 1.0 && b.tmp > 2.0`` would surface only
at run time, and only when the ``&&`` does not short-circuit. So the config is checked on a
tree of its own, built here by a recursive-descent parser of the grammar in the CEL language
definition (cel-spec ``doc/langdef.md``, "Syntax"). The library still parses the same text
for evaluation, so this parser only has to accept what it accepts; anything it cannot place is
refused with its column, never guessed.

Not supported (refused at check time, with a message naming it): message construction
``Type{field: ...}``, a leading-dot name ``.a``, the optional syntax ``a.?b`` / ``a[?b]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from bridge.errors import BridgeError


class ExpressionError(BridgeError):
    """An expression that cannot be used: ``message`` says why, ``column`` (1-based) where, if known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        super().__init__(message if column is None else f"{message} (column {column})")


# ---------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class Literal:
    column: int
    #: "int", "uint", "double", "string", "bytes", "bool" or "null"
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Name:
    column: int
    name: str


@dataclass(frozen=True, slots=True)
class Select:
    """``operand.field``"""

    column: int
    operand: Node
    field: str


@dataclass(frozen=True, slots=True)
class Index:
    """``operand[index]``"""

    column: int
    operand: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Call:
    """``function(args)``, or ``target.function(args)`` (a method) when ``target`` is set."""

    column: int
    function: str
    args: tuple[Node, ...]
    target: Node | None = None


@dataclass(frozen=True, slots=True)
class Unary:
    column: int
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    column: int
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Conditional:
    """``test ? then : otherwise``"""

    column: int
    test: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True, slots=True)
class ListOf:
    column: int
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class MapOf:
    column: int
    entries: tuple[tuple[Node, Node], ...]


Node = Literal | Name | Select | Index | Call | Unary | Binary | Conditional | ListOf | MapOf


# ---------------------------------------------------------------- tokens

#: cel-spec: identifiers that are not names (language keywords and reserved words)
RESERVED: Final = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if", "import",
    "let", "loop", "package", "namespace", "return", "var", "void", "while",
})

_STRING: Final = (r'(?:[rR][bB]?|[bB][rR]?)?(?:"""(?:\\.|[^\\])*?"""|\'\'\'(?:\\.|[^\\])*?\'\'\''
                  r'|"(?:\\.|[^\\"\n\r])*"|\'(?:\\.|[^\\\'\n\r])*\')')
_TOKENS: Final = re.compile("|".join((
    r"(?P<space>[ \t\n\r\f]+|//[^\n]*)",
    rf"(?P<string>{_STRING})",
    r"(?P<double>(?:\d+\.\d+|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)",
    r"(?P<uint>(?:0[xX][0-9a-fA-F]+|\d+)[uU])",
    r"(?P<int>0[xX][0-9a-fA-F]+|\d+)",
    r"(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)",
    r"(?P<op>\|\||&&|==|!=|<=|>=|\.\?|\[\?|[-+*/%!<>?:.,()\[\]{}])",
)))


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "string", "double", "uint", "int", "name", "op" or "end"
    text: str
    column: int


def tokens(text: str) -> list[Token]:
    out: list[Token] = []
    at = 0
    while at < len(text):
        match = _TOKENS.match(text, at)
        if match is None:
            raise ExpressionError(f"unexpected character {text[at]!r}", at + 1)
        kind = match.lastgroup or "op"
        if kind != "space":
            out.append(Token(kind, match.group(), at + 1))
        at = match.end()
    out.append(Token("end", "", len(text) + 1))
    return out


# ---------------------------------------------------------------- the parser

_RELATIONS: Final = ("<", "<=", ">=", ">", "==", "!=", "in")
#: nesting deeper than this is refused: the parser recurses, and a config is untrusted input
MAX_NESTING: Final = 64


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokens(text)
        self.at = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def accept(self, *texts: str) -> Token | None:
        token = self.token
        if (token.kind == "op" or token.text == "in") and token.text in texts:
            self.at += 1
            return token
        return None

    def expect(self, text: str, what: str) -> Token:
        token = self.accept(text)
        if token is None:
            raise ExpressionError(f"expected {text!r} {what}, found {self.describe(self.token)}", self.token.column)
        return token

    @staticmethod
    def describe(token: Token) -> str:
        return "the end" if token.kind == "end" else repr(token.text)

    def whole(self) -> Node:
        node = self.expr()
        if self.token.kind != "end":
            raise ExpressionError(f"unexpected {self.describe(self.token)} after a complete expression",
                                  self.token.column)
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(f"nested more than {MAX_NESTING} levels deep", self.token.column)
        try:
            test = self.binary(0)
            question = self.accept("?")
            if question is None:
                return test
            then = self.binary(0)
            self.expect(":", "in a conditional (test ? a : b)")
            return Conditional(question.column, test, then, self.expr())
        finally:
            self.depth -= 1

    #: binary operators from the loosest to the tightest, each level left-associative
    LEVELS: Final = (("||",), ("&&",), _RELATIONS, ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self.LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        chained = 0  # a chain a + b + c nests to the left: it counts as nesting for whatever walks the tree
        try:
            while (op := self.accept(*self.LEVELS[level])) is not None:
                chained += 1
                self.depth += 1
                if self.depth > MAX_NESTING:
                    raise ExpressionError(f"nested more than {MAX_NESTING} levels deep", op.column)
                node = Binary(op.column, op.text, node, self.binary(level + 1))
            return node
        finally:
            self.depth -= chained

    def unary(self) -> Node:
        op = self.accept("!", "-")
        if op is None:
            return self.member()
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(f"nested more than {MAX_NESTING} levels deep", op.column)
        try:
            operand = self.unary()
        finally:
            self.depth -= 1
        if op.text == "-" and isinstance(operand, Literal) and operand.kind in ("int", "double") \
                and not operand.text.startswith("-"):
            return Literal(op.column, operand.kind, "-" + operand.text)
        return Unary(op.column, op.text, operand)

    def member(self) -> Node:
        node = self.primary()
        while True:
            if (dot := self.accept(".")) is not None:
                name = self.take()
                if name.kind != "name":
                    raise ExpressionError(f"expected a field name after '.', found {self.describe(name)}", name.column)
                if self.accept("("):
                    node = Call(name.column, name.text, self.arguments(), target=node)
                else:
                    node = Select(dot.column, node, name.text)
            elif (bracket := self.accept("[")) is not None:
                node = Index(bracket.column, node, self.expr())
                self.expect("]", "to close the index")
            elif self.token.text in (".?", "[?") and self.token.kind == "op":
                raise ExpressionError(f"the optional syntax {self.token.text!r} is not supported", self.token.column)
            else:
                return node

    def arguments(self) -> tuple[Node, ...]:
        if self.accept(")"):
            return ()
        args = [self.expr()]
        while self.accept(","):
            args.append(self.expr())
        self.expect(")", "to close the arguments")
        return tuple(args)

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "name":
            if token.text in ("true", "false"):
                return Literal(token.column, "bool", token.text)
            if token.text == "null":
                return Literal(token.column, "null", token.text)
            if token.text in RESERVED:
                raise ExpressionError(f"{token.text!r} is a reserved word of CEL, not a name", token.column)
            if self.accept("("):
                return Call(token.column, token.text, self.arguments())
            if self.token.text == "{" and self.token.kind == "op":
                raise ExpressionError("message construction (Type{field: ...}) is not supported", token.column)
            return Name(token.column, token.text)
        if token.kind in ("int", "uint", "double"):
            return Literal(token.column, token.kind, token.text)
        if token.kind == "string":
            return Literal(token.column, "bytes" if token.text[:2].lower() in ("b'", 'b"', "br", "rb") else "string",
                           token.text)
        if token.kind == "op":
            if token.text == "(":
                node = self.expr()
                self.expect(")", "to close the parenthesis")
                return node
            if token.text == "[":
                return ListOf(token.column, self.items("]"))
            if token.text == "{":
                return MapOf(token.column, self.entries())
            if token.text == ".":
                raise ExpressionError("a name with a leading '.' is not supported", token.column)
        raise ExpressionError(f"expected a value, a name or '(', found {self.describe(token)}", token.column)

    def items(self, close: str) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self.accept(close):
            items.append(self.expr())
            if not self.accept(","):
                self.expect(close, "to close the list")
                break
        return tuple(items)

    def entries(self) -> tuple[tuple[Node, Node], ...]:
        entries: list[tuple[Node, Node]] = []
        while not self.accept("}"):
            key = self.expr()
            self.expect(":", "between a key and its value")
            entries.append((key, self.expr()))
            if not self.accept(","):
                self.expect("}", "to close the map")
                break
        return tuple(entries)


def parse(text: str) -> Node:
    """The syntax tree of ``text``; :class:`ExpressionError` naming the first problem and its column."""
    if not text.strip():
        raise ExpressionError("the expression is empty")
    return _Parser(text).whole()

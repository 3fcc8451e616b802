"""The query table shared by the ``scpi`` and ``serial_ascii`` drivers: one channel per query.

Send ``command``, take the reply as a number or pull the number out of it with a regex (one
group), then ``value * scale + offset`` in ``units``. A query may say its channel is not a
float (``type: int | bool | enum | string | bits``) and how the reply's text becomes the value
(``map: {"ON": true, "OFF": false}``, ``choices`` of an enum, the names of ``bits``). The table
and its parsing are the same whatever the transport; a driver built on :class:`QueryTableDriver` only says how one query
travels (:meth:`~QueryTableDriver.ask`) and how it resynchronises after a reply that did not
parse (:meth:`~QueryTableDriver.reply_failed`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.drivers.base import Channel, Driver, DriverOptions, Scale, UnitSymbol, reads
from bridge.drivers.common import text_codec as codec
from bridge.errors import ProtocolError
from bridge.model import (
    BIT_NAME_MAX,
    STRING_MAX,
    ChannelType,
    Measurement,
    Quality,
    Value,
    ValueType,
    value_fits,
)
from bridge.names import NAME_PATTERN

Word = Annotated[str, Field(min_length=1, max_length=STRING_MAX)]


class Query(BaseModel):
    """One row of the query table: one channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: channel names end up in topics and file columns: the instrument-name rule
    name: str = Field(pattern=NAME_PATTERN)
    command: str = Field(min_length=1)
    parse: Literal["number", "regex"] = "number"
    #: with ``parse: regex``: searched in the reply; exactly one group holds the number
    regex: str | None = None
    scale: Scale = 1.0
    offset: float = 0.0
    #: a symbol of the unit vocabulary (docs/units.md); ``1`` for a dimensionless value
    units: UnitSymbol = "1"
    description: str = ""
    #: what the channel's values are (docs/payload.md); float: a number, scaled
    type: Literal["float", "int", "bool", "enum", "string", "bits"] = "float"
    #: the reply's text (or the regex group) -> the value, for every type; a text not in it is an error
    map: dict[str, bool | int | float | Word] | None = Field(default=None, min_length=1, max_length=1000)
    #: an enum without a map: the replies it may take, as they are
    choices: list[Word] | None = Field(default=None, min_length=1, max_length=1000)
    #: a bits channel: bit number (0 = lowest) -> name
    bits: dict[Annotated[int, Field(ge=0, le=52)], Annotated[str, Field(min_length=1, max_length=BIT_NAME_MAX)]
               ] | None = None
    #: a string channel: longer replies are cut to this many characters (the detail says so)
    max_length: int = Field(default=64, ge=1, le=STRING_MAX)

    @field_validator("command")
    @classmethod
    def _ascii(cls, v: str) -> str:
        if not v.isascii() or any(ord(c) < 0x20 for c in v):
            raise ValueError("the command must be printable ASCII; the terminator is added by the driver")
        return v

    @model_validator(mode="after")
    def _regex_matches_parse(self) -> Query:
        if self.parse == "regex":
            if self.regex is None:
                raise ValueError("parse: regex needs a 'regex' with one group")
            groups = codec.regex_group_count(self.regex)
            if groups != 1:
                raise ValueError(f"regex {self.regex!r} must have exactly one group, it has {groups}")
        elif self.regex is not None:
            raise ValueError("'regex' is only used with parse: regex")
        return self

    @model_validator(mode="after")
    def _typed(self) -> Query:
        """The type's companions present, and each map value of the type: checked at load."""
        kind = ValueType(self.type)
        if kind is not ValueType.FLOAT and {"scale", "offset"} & self.model_fields_set:
            raise ValueError(f"scale and offset apply to float channels, not to type {kind}")
        if self.choices is not None and kind is not ValueType.ENUM:
            raise ValueError("choices are the values of an enum channel (type: enum)")
        if kind is ValueType.ENUM and (self.map is None) == (self.choices is None):
            raise ValueError("an enum channel needs either a map (reply -> word) or its choices")
        if self.bits is not None and kind is not ValueType.BITS:
            raise ValueError("bits name the bits of a bits channel (type: bits)")
        if "max_length" in self.model_fields_set and kind is not ValueType.STRING:
            raise ValueError("max_length bounds a string channel (type: string)")
        for text, value in (self.map or {}).items():
            fits = (value_fits(value, kind) or (kind is ValueType.FLOAT and type(value) is int)
                    or (kind is ValueType.STRING and type(value) is str and len(value) <= self.max_length))
            if not fits:
                raise ValueError(f"map: {text!r} -> {value!r} is not a {kind} value")
        return self

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        return None if self.regex is None else re.compile(self.regex)

    @cached_property
    def value_type(self) -> ChannelType:
        kind = ValueType(self.type)
        if kind is ValueType.ENUM:
            words = self.choices if self.choices is not None else [str(v) for v in (self.map or {}).values()]
            return ChannelType(kind, choices=tuple(dict.fromkeys(words)))
        return ChannelType(kind, bits=tuple(sorted((self.bits or {}).items())),
                           max_length=self.max_length if kind is ValueType.STRING else STRING_MAX)

    def measurement(self, reply: str) -> Measurement:
        kind = ValueType(self.type)
        if kind is ValueType.FLOAT and self.map is None:
            return codec.parse_reply(reply, pattern=self.pattern, scale=self.scale, offset=self.offset,
                                     units=self.units)
        text = (reply if self.pattern is None else codec.extract(reply, self.pattern)).strip()
        return Measurement(self._value(kind, text, reply), Quality.OK, self.units,
                           self._cut(kind, text))

    def _value(self, kind: ValueType, text: str, reply: str) -> Value:
        """The value ``text`` (the reply, or its regex group) stands for; ProtocolError quoting the reply."""
        if self.map is not None:
            if text not in self.map:
                raise ProtocolError(f"reply {reply!r}: {text!r} is not in the map ({', '.join(self.map)})")
            value = self.map[text]
            return float(value) if kind is ValueType.FLOAT else value
        if kind is ValueType.ENUM:
            assert self.choices is not None
            if text not in self.choices:
                raise ProtocolError(f"reply {reply!r}: {text!r} is not one of {', '.join(self.choices)}")
            return text
        if kind is ValueType.STRING:
            return text[:self.max_length]
        if kind is ValueType.BOOL:
            return codec.parse_bool(text)
        number = codec.parse_integer(text)
        if kind is ValueType.BITS and number < 0:
            raise ProtocolError(f"reply {reply!r}: a set of bits is not negative: {text!r}")
        return number

    def _cut(self, kind: ValueType, text: str) -> str:
        """The detail of a string reply cut to ``max_length``; empty otherwise."""
        if kind is ValueType.STRING and self.map is None and len(text) > self.max_length:
            return f"cut to {self.max_length} of its {len(text)} characters"
        return ""


class QueryTableOptions(DriverOptions):
    """The query table, the same for every transport."""

    queries: list[Query] = Field(min_length=1)

    @field_validator("queries")
    @classmethod
    def _distinct_names(cls, v: list[Query]) -> list[Query]:
        names = [q.name for q in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"query name(s) used twice: {', '.join(twice)}")
        return v


TransportT = TypeVar("TransportT")
OptionsT = TypeVar("OptionsT", bound=QueryTableOptions)


class QueryTableDriver(Driver[TransportT, OptionsT]):
    """The table and the parsing; subclasses only say how one query travels."""

    @classmethod
    def channel_table(cls, options: QueryTableOptions) -> Sequence[Channel[QueryTableDriver[Any, Any]]]:
        return [Channel(q.name, q.units, reads(cls.measure, i), q.description or q.command, q.value_type)
                for i, q in enumerate(options.queries)]

    def measure(self, index: int) -> Measurement:
        query = self.options.queries[index]
        reply = self.ask(query.command)
        try:
            return query.measurement(reply)
        except ProtocolError as exc:
            self.reply_failed()
            raise ProtocolError(f"{self.instrument}: {query.name} ({query.command!r}): {exc}") from exc

    def ask(self, command: str) -> str:
        raise NotImplementedError

    def reply_failed(self) -> None:
        """A reply did not parse; it may have been a late one, so resynchronise before the next."""
        raise NotImplementedError

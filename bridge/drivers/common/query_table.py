"""The query table shared by the ``scpi`` and ``serial_ascii`` drivers: one channel per query.

Send ``command``, take the reply as a number or pull the number out of it with a regex (one
group), then ``value * scale + offset`` in ``units``. The table and its parsing are the same
whatever the transport; a driver built on :class:`QueryTableDriver` only says how one query
travels (:meth:`~QueryTableDriver.ask`) and how it resynchronises after a reply that did not
parse (:meth:`~QueryTableDriver.reply_failed`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.drivers.base import Channel, Driver, DriverOptions, Scale, UnitSymbol, reads
from bridge.drivers.common import text_codec as codec
from bridge.errors import ProtocolError
from bridge.model import Measurement
from bridge.names import NAME_PATTERN


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

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        return None if self.regex is None else re.compile(self.regex)

    def measurement(self, reply: str) -> Measurement:
        return codec.parse_reply(reply, pattern=self.pattern, scale=self.scale, offset=self.offset,
                                 units=self.units)


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
        return [Channel(q.name, q.units, reads(cls.measure, i), q.description or q.command)
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

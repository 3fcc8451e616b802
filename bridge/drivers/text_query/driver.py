"""Any instrument that answers text queries, described by a query table in the config.

One channel per query: send ``command``, take the reply as a number or pull the number out of
it with a regex (one group), then ``value * scale + offset`` in ``units``. Two drivers share the
table and the codec and differ only in how the bytes travel:

* ``scpi`` goes through a VISA resource (``TCPIP::host::port::SOCKET``, ``ASRL...``, ``@sim``),
  with the resync of :mod:`bridge.drivers.common.visa_session`;
* ``serial_ascii`` writes ``command + terminator`` on a serial line (device path or
  ``socket://``) and reads up to the reply terminator; stale input is dropped before every
  command and, after a failed exchange or a reply that did not parse, the line is left to settle
  first, so a late reply is never read as the next one. A frame identical to the command
  (2-wire RS-485 echo) is skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import cached_property
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.drivers.base import Channel, Driver, DriverOptions, Scale, reads
from bridge.drivers.common import text_codec as codec
from bridge.drivers.common.serial_session import SerialSession
from bridge.drivers.common.visa_session import VisaSession, VisaSessionOptions
from bridge.drivers.registry import register_driver
from bridge.errors import ProtocolError
from bridge.model import Measurement
from bridge.transports.serial import SerialTransport
from bridge.transports.visa import VisaTransport

log = logging.getLogger("bridge.drivers.text_query")

#: channel names end up in topics and file columns: the config's instrument-name rule
CHANNEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Query(BaseModel):
    """One row of the query table: one channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=CHANNEL_NAME)
    command: str = Field(min_length=1)
    parse: Literal["number", "regex"] = "number"
    #: with ``parse: regex``: searched in the reply; exactly one group holds the number
    regex: str | None = None
    scale: Scale = 1.0
    offset: float = 0.0
    units: str = ""
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


class ScpiOptions(QueryTableOptions, VisaSessionOptions):
    #: query whose fixed answer resynchronises the dialogue after a failure; null: none (then a
    #: late reply after a timeout can be taken for the next one)
    sync_command: str | None = "*IDN?"


Terminator = Annotated[str, Field(min_length=1, max_length=4)]


class SerialAsciiOptions(QueryTableOptions):
    #: appended to every command
    terminator: Terminator = "\r"
    #: ends every reply; default: the same as ``terminator``
    reply_terminator: Terminator | None = None
    #: seconds to let a late reply arrive (and be dropped) after a failed exchange
    settle: float = Field(default=0.1, ge=0, le=5)

    @field_validator("terminator", "reply_terminator")
    @classmethod
    def _ascii_terminator(cls, v: str | None) -> str | None:
        if v is not None and not v.isascii():
            raise ValueError("a terminator must be ASCII")
        return v


TransportT = TypeVar("TransportT")
OptionsT = TypeVar("OptionsT", bound=QueryTableOptions)


class _QueryTableDriver(Driver[TransportT, OptionsT]):
    """The table and the parsing; subclasses only say how one query travels."""

    @classmethod
    def channel_table(cls, options: QueryTableOptions) -> Sequence[Channel[_QueryTableDriver[Any, Any]]]:
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


@register_driver("scpi")
class ScpiText(_QueryTableDriver[VisaTransport, ScpiOptions]):
    """Text queries over VISA, one channel per query."""

    transports = ("visa",)
    Options = ScpiOptions
    summary = "any instrument answering text queries over VISA, from a query table in config"

    def __init__(self, transport: VisaTransport, options: ScpiOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.session = VisaSession(transport, instrument, options, options.sync_command, log)
        #: the sync query's answer at connect (``*IDN?``: the identity), None without one
        self.identity: str | None = None

    def connect(self) -> None:
        self.identity = self.session.identify()
        if self.identity is not None:
            log.info("%s: %s -> %s", self.instrument, self.session.sync_command, self.identity)

    def ask(self, command: str) -> str:
        return self.session.query(command)

    def reply_failed(self) -> None:
        self.session.invalidate()


@register_driver("serial_ascii")
class SerialAscii(_QueryTableDriver[SerialTransport, SerialAsciiOptions]):
    """Text queries on a serial line, one channel per query."""

    transports = ("serial",)
    Options = SerialAsciiOptions
    summary = "any instrument answering text queries on a serial line, from a query table in config"

    #: frames skipped per query (the echo of the command, a blank line from a CR LF split)
    MAX_SKIPPED = 3

    def __init__(self, transport: SerialTransport, options: SerialAsciiOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.terminator = options.terminator.encode("ascii")
        self.reply_terminator = (options.reply_terminator or options.terminator).encode("ascii")
        self.session = SerialSession(transport, instrument, options.settle, log)

    def connect(self) -> None:
        self.session.resync()

    def reply_failed(self) -> None:
        self.session.invalidate()

    def ask(self, command: str) -> str:
        with self.session.exchange(repr(command)):
            self.transport.write(codec.encode_command(command, self.terminator))
            for _ in range(self.MAX_SKIPPED + 1):
                reply = codec.decode_reply(self.transport.read_until(self.reply_terminator))
                if reply and reply != command:
                    return reply
            raise ProtocolError(f"{self.instrument}: only echoes or blank lines in reply to {command!r}")

"""The ``serial_ascii`` driver: any instrument answering text queries on a serial line.

A query table in the config (:mod:`bridge.drivers.common.query_table`), one channel per query:
write ``command + terminator`` on a serial line (device path or ``socket://``) and read up to the
reply terminator. Stale input is dropped before every command and, after a failed exchange or a
reply that did not parse, the line is left to settle first
(:mod:`bridge.drivers.common.serial_session`), so a late reply is never read as the next one. A
frame identical to the command (2-wire RS-485 echo) is skipped.
"""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import Field, field_validator

from bridge.drivers.common import text_codec as codec
from bridge.drivers.common.query_table import QueryTableDriver, QueryTableOptions
from bridge.drivers.common.serial_session import SerialSession
from bridge.drivers.registry import register_driver
from bridge.errors import ProtocolError
from bridge.transports.serial import SerialTransport

log = logging.getLogger("bridge.drivers.serial_ascii")


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



@register_driver("serial_ascii")
class SerialAscii(QueryTableDriver[SerialTransport, SerialAsciiOptions]):
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

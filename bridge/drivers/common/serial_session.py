"""The request/response discipline of the serial drivers (``pfeiffer_tpg``, ``mks_937b``,
``impac``, ``genesys``, ``serial_ascii``): a late reply must never be taken for the next one.

* Before every request, whatever arrived while the line was idle is dropped: a late reply, a
  stream, another unit's answer on a shared RS-485 line.
* After a failed exchange (or a reply that did not parse: it may have been a late one), the
  next exchange first resynchronises: it lets what is still in flight arrive for ``settle``
  seconds and drops it with the rest. A driver whose device streams sends a stop first
  (``resync_with``: ETX on a TPG).

The driver keeps its own protocol (framing, ACK, echoes); this is only the discipline around it::

    with self.session.exchange("PR1"):
        self.transport.write(request)
        frame = self.transport.read_until(b";FF")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from bridge.errors import BridgeError, ProtocolError
from bridge.transports.serial import SerialTransport

T = TypeVar("T")


@dataclass
class SerialSession:
    """Resync after failures and stale-input flushing on one instrument's serial line; messages
    go to the driver's ``log``."""

    transport: SerialTransport
    instrument: str
    settle: float
    log: logging.Logger
    #: sent first at a resync, to stop a stream
    resync_with: bytes = field(default=b"", kw_only=True)
    #: the next exchange resynchronises first (set after a failure, and until the first resync)
    needs_resync: bool = field(default=True, init=False)

    def resync(self) -> None:
        """Let a late reply arrive, then drop it with anything else in flight."""
        if self.resync_with:
            self.transport.write(self.resync_with)
        junk = self.transport.drain(self.settle)
        junk += self.transport.flush_input()
        if junk:
            self.log.debug("%s: dropped %d stale bytes at resync: %r", self.instrument, len(junk), junk[:80])
        self.needs_resync = False

    def invalidate(self) -> None:
        """Resynchronise before the next exchange."""
        self.needs_resync = True

    @contextmanager
    def exchange(self, label: str, *, in_step: tuple[type[BridgeError], ...] = ()) -> Iterator[None]:
        """One exchange (``label`` names it in logs): resync if the last one failed, drop stale
        input; an error raised inside makes the next one resync, unless it is one of ``in_step``
        (a clean refusal, after which the line is known to be in step)."""
        if self.needs_resync:
            self.resync()
        try:
            stale = self.transport.flush_input()
            if stale:
                self.log.debug("%s: dropped %d unsolicited bytes before %s", self.instrument, len(stale), label)
            yield
        except in_step:
            raise
        except BridgeError:
            self.needs_resync = True
            raise

    def parse(self, parse: Callable[[], T], frame: bytes | None = None) -> T:
        """Run a reply parser; a reply that does not parse (perhaps a late one) names the instrument
        (and quotes ``frame``, if given) and makes the next exchange resync."""
        try:
            return parse()
        except ProtocolError as exc:
            self.needs_resync = True
            quoted = "" if frame is None else f" (frame {frame!r})"
            raise ProtocolError(f"{self.instrument}: {exc}{quoted}") from exc

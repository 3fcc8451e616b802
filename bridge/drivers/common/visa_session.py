"""The query dialogue over a VISA resource, shared by the ``scpi`` and ``scpi_psu`` drivers.

Three things go wrong with message-based instruments and are handled here once:

* **A late reply.** After a timeout the instrument may still answer; that reply would be taken
  for the answer to the next query (a current read as a voltage). The next exchange therefore
  starts with a resync: send the sync query (``*IDN?``) and skip replies until its known answer
  comes back (as many times as sync queries went unanswered). A VISA read cannot be flushed
  through :class:`VisaTransport`, a marker can. A reply that does not parse may be a late one
  too: drivers call :meth:`VisaSession.invalidate` and the next exchange resynchronises.
* **A slow first reply.** Some instruments answer the first query after a TCP connect seconds
  late (docs/protocols.md 7.5.5); ``identify`` waits ``first_reply_timeout`` for it, then asks again
  and keeps that answer as the sync marker.
* **Pacing.** Some instruments lose commands sent back to back (7.5.6); ``query_delay`` keeps a
  gap between the end of one exchange and the next command.

Only queries go through here: a command that returns nothing must never be sent with a read
after it (7.5.1), and none of these drivers sends one.
"""

from __future__ import annotations

import logging
import time

from pydantic import Field

from bridge.drivers.base import DriverOptions
from bridge.errors import BridgeError, ProtocolError, TransportTimeout
from bridge.transports.visa import VisaTransport


class VisaSessionOptions(DriverOptions):
    """Options of every driver that talks through :class:`VisaSession`."""

    #: seconds to wait for the first reply after connecting (slow LAN stacks wake up late)
    first_reply_timeout: float = Field(default=10.0, gt=0, le=120)
    #: seconds between the end of one exchange and the next command (0 = none)
    query_delay: float = Field(default=0.0, ge=0, le=5)
    #: late replies skipped while resynchronising before giving up
    max_stale_replies: int = Field(default=8, ge=0, le=100)


class VisaSession:
    """Queries with resync after failures; ``sync_command=None`` disables the resync. Messages go
    to the driver's ``log``."""

    def __init__(self, transport: VisaTransport, instrument: str, options: VisaSessionOptions,
                 sync_command: str | None, log: logging.Logger) -> None:
        self.transport = transport
        self.instrument = instrument
        self.log = log
        self.options = options
        self.sync_command = sync_command
        #: the sync query's answer, learnt by :meth:`identify`; None until then
        self.marker: str | None = None
        self._needs_resync = False
        #: sync queries sent whose answer has not been read yet
        self._owed = 0
        self._last_exchange = float("-inf")

    def identify(self) -> str | None:
        """Wait for the first reply to the sync query, then learn its answer as the marker."""
        self.marker = None
        self._needs_resync = False
        self._owed = 0
        if self.sync_command is None:
            return None
        command = self.sync_command
        self._pace()
        deadline = time.monotonic() + self.options.first_reply_timeout
        try:
            self.transport.write(command)
            while True:
                try:
                    first = self.transport.read()
                    break
                except TransportTimeout as exc:
                    if time.monotonic() >= deadline:
                        raise TransportTimeout(
                            f"{self.instrument}: no reply to {command!r} within "
                            f"{self.options.first_reply_timeout:g} s after connecting") from exc
            self.log.debug("%s: first reply %r", self.instrument, first)
            self._last_exchange = time.monotonic()
            self.marker = self._exchange(command)
        finally:
            self._last_exchange = time.monotonic()
        return self.marker

    def query(self, command: str) -> str:
        """One query and its stripped reply; resynchronises first if an exchange failed before."""
        if self._needs_resync:
            self.resync()
        reply = self._exchange(command)
        if self.marker is not None and reply == self.marker and command != self.sync_command:
            # An unread answer to an earlier sync query: every later reply would be one behind.
            self._needs_resync = True
            raise ProtocolError(f"{self.instrument}: got the late reply {reply!r} to {command!r}; resynchronising")
        return reply

    def invalidate(self) -> None:
        """Resynchronise before the next exchange (a reply did not parse: it may be a late one)."""
        self._needs_resync = True

    def resync(self) -> None:
        """Skip late replies until every sync query sent so far has been answered.

        A resync that timed out leaves its sync query unanswered; its late answer must not be
        taken for the answer to the next one, so answers owed are counted. If the instrument
        goes quiet after at least one answer, the older sync queries were lost (it was not
        listening then) and the newest one was answered: the dialogue is in step.
        """
        if self.sync_command is None or self.marker is None:
            self._needs_resync = False
            return
        self._needs_resync = True
        self._pace()
        reply = ""
        seen = 0
        try:
            self.transport.write(self.sync_command)
            self._owed += 1
            for _ in range(self.options.max_stale_replies + self._owed):
                try:
                    reply = self.transport.read()
                except TransportTimeout:
                    if not seen:
                        raise
                    self.log.debug("%s: %d sync replies never came (lost while not listening)", self.instrument,
                              self._owed)
                    self._owed = 0
                else:
                    if reply != self.marker:
                        self.log.debug("%s: skipped late reply %r while resynchronising", self.instrument, reply)
                        continue
                    seen += 1
                    self._owed -= 1
                if self._owed == 0:
                    self._needs_resync = False
                    return
        finally:
            self._last_exchange = time.monotonic()
        raise ProtocolError(
            f"{self.instrument}: no answer to {self.sync_command!r} among "
            f"{self.options.max_stale_replies + seen} replies while resynchronising (last {reply!r})")

    def _exchange(self, command: str) -> str:
        self._pace()
        try:
            return self.transport.query(command)
        except BridgeError:
            self._needs_resync = True
            raise
        finally:
            self._last_exchange = time.monotonic()

    def _pace(self) -> None:
        wait = self._last_exchange + self.options.query_delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)

"""A generic serial text instrument: answers configured queries, one line each.

The counterpart of the ``serial_ascii`` driver: many small lab devices (thermometers, flow
meters, controllers without a standard command set) take a short command ending in CR and send
back one line with a number somewhere in it. :class:`TextDevice` is a
:class:`~simulators.serving.ByteDevice`, so it runs on a pty (:class:`~simulators.serving.
PtyServer`), behind a TCP serial server (:class:`~simulators.serving.TcpServer`) or in a unit
test with a :class:`~simulators.serving.MemoryLink`.

Replies are templates formatted with named values: ``{"T?": "T={T:.2f}C"}`` with
``{"T": 23.51}`` answers ``T?\\r`` with ``T=23.51C\\r``. Values are set with :meth:`set_value`
or come from a callable (:meth:`set_source`, for a chamber model); a template may be replaced
at any time (:meth:`set_reply`), e.g. by a reading a driver cannot parse (``T=----C``).

Faults (plain attributes, flip them while a server runs), the ones protocols.md section 9 lists
for simple serial devices: :attr:`~TextDevice.silent`, :attr:`~TextDevice.garbage` (noise before
the next reply), :attr:`~TextDevice.split_replies`, :attr:`~TextDevice.reply_delay`,
:attr:`~TextDevice.echo` (a 2-wire RS-485 adapter hearing its own request),
:attr:`~TextDevice.unknown_reply` (what an unknown command gets: nothing, or e.g. ``ERR``).
"""

from __future__ import annotations

import logging
import string
import threading
from collections.abc import Callable, Mapping

from simulators.serving import Link

log = logging.getLogger("simulators.text_device")

#: A host sending more than this without a terminator is talking nonsense; the rest is cut.
MAX_LINE = 256

#: ``log`` keeps at most this many entries.
LOG_LIMIT = 10_000

#: The default instrument: a thermometer with an identity query.
THERMOMETER_QUERIES: dict[str, str] = {"T?": "T={T:.2f}C", "ID?": "TT-100 thermometer"}
THERMOMETER_VALUES: dict[str, float] = {"T": 23.51}

ValueSource = Callable[[], float]


def template_fields(template: str) -> set[str]:
    """The value names a reply template uses (``"T={T:.2f}C"`` -> ``{"T"}``)."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        raise ValueError(f"bad reply template {template!r}: {exc}") from exc


class TextDevice:
    """One text instrument; a :class:`~simulators.serving.ByteDevice`.

    ``queries`` maps a command (without terminator) to its reply template; ``values`` gives the
    named numbers the templates use (without either: the thermometer of
    :data:`THERMOMETER_QUERIES`). ``terminator`` ends commands (CR by default; blanks and a stray
    LF around a command are ignored, so a host sending CR LF is understood), and
    ``reply_terminator`` ends replies (default: the same).
    """

    def __init__(
        self,
        queries: Mapping[str, str] | None = None,
        values: Mapping[str, float] | None = None,
        *,
        terminator: bytes = b"\r",
        reply_terminator: bytes | None = None,
    ) -> None:
        if not terminator:
            raise ValueError("the terminator must not be empty")
        self.terminator = terminator
        self.reply_terminator = reply_terminator or terminator
        self._lock = threading.RLock()
        self._values: dict[str, float] = dict(THERMOMETER_VALUES if values is None and queries is None
                                              else values or {})
        self._sources: dict[str, ValueSource] = {}
        self._queries: dict[str, str] = {}
        for command, template in (THERMOMETER_QUERIES if queries is None else queries).items():
            self.set_reply(command, template)

        # ---- fault knobs: plain attributes, flip them at any time ----
        #: Ignore all input and say nothing (dead device, wrong baud rate).
        self.silent = False
        #: Bytes put in front of the next reply, once (line noise).
        self.garbage = b""
        #: Let the link cut every reply into 1-3 byte pieces a few ms apart.
        self.split_replies = False
        #: Seconds before each reply goes out.
        self.reply_delay = 0.0
        #: Send every received command back before the reply (2-wire RS-485 echo).
        self.echo = False
        #: Reply text for unknown commands; None = say nothing (the host times out).
        self.unknown_reply: str | None = None

        #: The conversation, device's view: ("rx", bytes from host) / ("tx", bytes to host).
        self.log: list[tuple[str, bytes]] = []

        self._link: Link | None = None
        self._buffer = bytearray()

    # ================================================================== ByteDevice

    def connected(self, link: Link) -> None:
        with self._lock:
            self._link = link
            self._buffer.clear()

    def disconnected(self) -> None:
        with self._lock:
            if self._link is not None and not self._link.closed:
                return  # an older connection of a shared simulator ended; ours is alive
            self._link = None
            self._buffer.clear()

    def received(self, data: bytes) -> None:
        with self._lock:
            self._record("rx", data)
            if self.silent:
                return
            self._buffer += data
            while True:
                index = self._buffer.find(self.terminator)
                if index < 0:
                    break
                line = bytes(self._buffer[:index])
                del self._buffer[: index + len(self.terminator)]
                self._command(line)
            if len(self._buffer) > MAX_LINE:
                del self._buffer[:-MAX_LINE]

    def tick(self, now: float) -> None:
        """Nothing is time-driven: the device only speaks when asked."""

    # ================================================================== knobs for tests

    def set_value(self, name: str, value: float) -> None:
        """Fix a named value (a pinned source is released)."""
        with self._lock:
            self._sources.pop(name, None)
            self._values[name] = value

    def set_source(self, name: str, source: ValueSource | None) -> None:
        """Read a named value from ``source`` at every reply (a chamber model); None releases it."""
        with self._lock:
            if source is None:
                self._sources.pop(name, None)
            else:
                self._sources[name] = source

    def set_reply(self, command: str, template: str | None) -> None:
        """Answer ``command`` with ``template`` from now on; None forgets the command."""
        with self._lock:
            if template is None:
                self._queries.pop(command, None)
                return
            template_fields(template)  # refuses a malformed template now, not at the first query
            self._queries[command] = template

    def value(self, name: str) -> float:
        with self._lock:
            source = self._sources.get(name)
            return source() if source is not None else self._values[name]

    @property
    def commands(self) -> list[str]:
        with self._lock:
            return list(self._queries)

    # ================================================================== protocol

    def _command(self, raw: bytes) -> None:
        if self.echo:
            self._send(raw + self.terminator)
        command = raw.decode("ascii", "replace").strip()
        if not command:
            return
        template = self._queries.get(command)
        if template is None:
            if self.unknown_reply is not None:
                self._reply(self.unknown_reply)
            return
        try:
            text = template.format_map({name: self.value(name) for name in template_fields(template)})
        except (KeyError, ValueError, TypeError) as exc:
            # A template naming a value nobody set: the device stays silent, the log says why.
            log.warning("cannot answer %r with %r: %s", command, template, exc)
            return
        self._reply(text)

    def _reply(self, text: str) -> None:
        data = text.encode("ascii", "replace") + self.reply_terminator
        if self.garbage:
            data = self.garbage + data
            self.garbage = b""
        self._send(data, delay=self.reply_delay)

    def _send(self, data: bytes, *, delay: float = 0.0) -> None:
        if self._link is None:
            return
        self._record("tx", data)
        self._link.send(data, split=self.split_replies, delay=delay)

    def _record(self, direction: str, data: bytes) -> None:
        self.log.append((direction, data))
        if len(self.log) > LOG_LIMIT:
            del self.log[: LOG_LIMIT // 2]

"""A generic text instrument answering configured queries, one line each: the ``serial_ascii`` and ``scpi`` simulator.

The counterpart of the ``serial_ascii`` driver (and of ``scpi`` over a raw socket): many small
lab devices (thermometers, flow meters, controllers without a standard command set) take a short
command ending in CR and send back one line with a number somewhere in it. :class:`TextDevice` is a
:class:`~simulators.serving.ByteDevice`, so it runs on a pty (:class:`~simulators.serving.
PtyServer`), behind a TCP serial server (:class:`~simulators.serving.TcpServer`) or in a unit
test with a :class:`~simulators.serving.MemoryLink`.

Replies are templates formatted with named values: ``{"T?": "T={T:.2f}C"}`` with
``{"T": 23.51}`` answers ``T?\\r`` with ``T=23.51C\\r``. A value may be a number or a text, so
the device also answers the typed channels of a query table: an output state (``{"OUT?":
"{OUT}"}`` with ``{"OUT": "ON"}``), a mode word, a status word (``"{ST:d}"``), a name. Values
are set with :meth:`set_value` or come from a callable (:meth:`set_source`, for a chamber
model); a template may be replaced at any time (:meth:`set_reply`), e.g. by a reading a driver
cannot parse (``T=----C``).

Faults (plain attributes, flip them while a server runs), the ones docs/protocols.md section 9 lists
for simple serial devices: :attr:`~TextDevice.silent`, :attr:`~TextDevice.garbage` (noise before
the next reply), :attr:`~TextDevice.split_replies`, :attr:`~TextDevice.reply_delay`,
:attr:`~TextDevice.echo` (a 2-wire RS-485 adapter hearing its own request),
:attr:`~TextDevice.unknown_reply` (what an unknown command gets: nothing, or e.g. ``ERR``).
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Mapping

from simulators.serving.byte_device import SimulatedByteDevice

log = logging.getLogger("simulators.serial_ascii")

#: A host sending more than this without a terminator is talking nonsense; the rest is cut.
MAX_LINE = 256

#: The default instrument: a thermometer with an identity query.
THERMOMETER_QUERIES: dict[str, str] = {"T?": "T={T:.2f}C", "ID?": "TT-100 thermometer"}
THERMOMETER_VALUES: dict[str, Value] = {"T": 23.51}

#: a named value: a number (``T``), an integer (a status word), or a text (``ON``, ``AUTO``)
Value = float | int | str
ValueSource = Callable[[], Value]


def template_fields(template: str) -> set[str]:
    """The value names a reply template uses (``"T={T:.2f}C"`` -> ``{"T"}``)."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        raise ValueError(f"bad reply template {template!r}: {exc}") from exc


class TextDevice(SimulatedByteDevice):
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
        values: Mapping[str, Value] | None = None,
        *,
        terminator: bytes = b"\r",
        reply_terminator: bytes | None = None,
    ) -> None:
        if not terminator:
            raise ValueError("the terminator must not be empty")
        super().__init__()
        self.terminator = terminator
        self.reply_terminator = reply_terminator or terminator
        self._values: dict[str, Value] = dict(THERMOMETER_VALUES if values is None and queries is None
                                              else values or {})
        self._sources: dict[str, ValueSource] = {}
        self._queries: dict[str, str] = {}
        for command, template in (THERMOMETER_QUERIES if queries is None else queries).items():
            self.set_reply(command, template)

        # ---- fault knobs (besides the shared ones): plain attributes, flip them at any time ----
        #: Send every received command back before the reply (2-wire RS-485 echo).
        self.echo = False
        #: Reply text for unknown commands; None = say nothing (the host times out).
        self.unknown_reply: str | None = None

    # ================================================================== ByteDevice

    def _heard(self, data: bytes) -> None:
        if self.silent:
            return
        for line in self._lines(data, self.terminator, limit=MAX_LINE, runaway="tail"):
            self._command(line)

    # ================================================================== knobs for tests

    def set_value(self, name: str, value: Value) -> None:
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

    def value(self, name: str) -> Value:
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
                self._say(self.unknown_reply)
            return
        try:
            text = template.format_map({name: self.value(name) for name in template_fields(template)})
        except (KeyError, ValueError, TypeError) as exc:
            # A template naming a value nobody set: the device stays silent, the log says why.
            log.warning("cannot answer %r with %r: %s", command, template, exc)
            return
        self._say(text)

    def _say(self, text: str) -> None:
        self._reply(text.encode("ascii", "replace") + self.reply_terminator)

"""An instrument's identity and configuration: what a run must record besides its readings.

A reading of 1.2e-7 means little without knowing it came from gauge 2 of controller serial
44990000 set to Torr, or a pyrometer temperature without its emissivity. The bridge reads each
instrument's :class:`Baseline` at connect and at every run's start and stop and logs it in the
ordered log (docs/payload.md, ``baseline``), so a run holds both snapshots and ``runs show``
flags a field that changed in between (an emissivity turned mid-run).

* ``identity``: who the instrument is (``vendor``, ``model``, ``serial``, ``firmware``, and what
  else its protocol says: ``part_number``, ``hardware``), as text.
* ``configuration``: the settings that change how its values must be read (the pressure unit,
  the gauge type per channel, the emissivity, the measuring range, setpoint limits, the decimals).

Identity queries are the least tested part of every protocol (docs/protocols.md marks several
[U]), and some models refuse them. :class:`BaselineReader` asks each query on its own: a refusal
(a NAK, ``no``, a Modbus exception, silence) is recorded in ``errors`` and the others go on, so a
refused identity query never makes an instrument unavailable. A lost link is not a refusal and
is raised for the poller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from bridge.errors import BridgeError, TransportDisconnected, TransportTimeout
from bridge.names import printable

T = TypeVar("T")

#: a configuration value: text, a number, a truth value, or nothing (not set)
Scalar = str | int | float | bool | None

#: identity and configuration texts are cut to this many characters (docs/payload.md bounds them)
TEXT_MAX: Final = 200
#: after this many queries in a row got no answer at all, the rest are not asked: a baseline of a
#: silent instrument must not cost a timeout per query
SILENT_QUERIES_MAX: Final = 2


@dataclass(frozen=True)
class Baseline:
    """One instrument's identity and configuration as read at one moment."""

    identity: Mapping[str, str] = field(default_factory=dict)
    configuration: Mapping[str, Scalar] = field(default_factory=dict)
    #: queries that were refused or not answered: a label naming the query -> why
    errors: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """As one instrument's entry of a ``baseline`` body (docs/payload.md)."""
        body: dict[str, Any] = {"identity": dict(self.identity), "configuration": dict(self.configuration)}
        if self.errors:
            body["errors"] = dict(self.errors)
        return body

    def with_identity(self, defaults: Mapping[str, str]) -> Baseline:
        """Identity fields from elsewhere (the config's ``identity:``) where the instrument said nothing."""
        if not defaults:
            return self
        return Baseline({**defaults, **self.identity}, self.configuration, self.errors)


class BaselineReader:
    """Asks the queries of one baseline one by one and keeps what each answered.

    ``instrument`` is cut from the front of error messages (the snapshot is the instrument's
    already).
    """

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.identity: dict[str, str] = {}
        self.configuration: dict[str, Scalar] = {}
        self.errors: dict[str, str] = {}
        self._silent = 0

    def ask(self, label: str, query: Callable[[], T]) -> T | None:
        """``query()``, or None when it was refused or not answered (the reason kept under ``label``)."""
        if self._silent >= SILENT_QUERIES_MAX:
            self.errors[label] = "not asked: the instrument did not answer the queries before it"
            return None
        try:
            result = query()
        except TransportDisconnected:
            raise
        except BridgeError as exc:
            self._silent = self._silent + 1 if isinstance(exc, TransportTimeout) else 0
            self.errors[label] = printable(str(exc).removeprefix(f"{self.instrument}: "), TEXT_MAX)
            return None
        self._silent = 0
        return result

    def set_identity(self, **fields: str | None) -> None:
        """Identity fields; None and empty ones are left out."""
        for key, value in fields.items():
            if value is not None and value.strip():
                self.identity[key] = printable(value.strip(), TEXT_MAX)

    def set_configuration(self, **fields: Scalar) -> None:
        """Configuration fields; None (not read: ``errors`` says why), empty texts and numbers that are not
        finite are left out, a text is cut to :data:`TEXT_MAX`."""
        for key, value in fields.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if isinstance(value, str):
                self.configuration[key] = printable(value.strip(), TEXT_MAX)
            elif isinstance(value, float) and not math.isfinite(value):
                continue
            else:
                self.configuration[key] = value

    def result(self) -> Baseline:
        return Baseline(dict(self.identity), dict(self.configuration), dict(self.errors))


def idn_fields(reply: str) -> dict[str, str]:
    """An ``*IDN?`` answer as identity fields: ``maker,model,serial,firmware`` (IEEE 488.2 / SCPI).

    Fields beyond the fourth are kept in ``firmware``; missing ones are left out, and ``0`` (what
    488.2 writes for a serial or firmware an instrument does not report) is left out too.
    """
    parts = [p.strip() for p in reply.split(",", 3)]
    names = ("vendor", "model", "serial", "firmware")
    return {name: part for name, part in zip(names, parts, strict=False) if part and part != "0"}

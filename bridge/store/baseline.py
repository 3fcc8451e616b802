"""A run's baselines (identity and configuration at its start and stop) compared, for ``runs show`` and the report.

The manifest keeps ``baseline: {"start": {instrument: snapshot}, "stop": {...}}`` (docs/store.md).
A field *changed* when both snapshots know it and the values differ: an emissivity turned from
0.70 to 0.65 mid-run, a controller switched from mbar to Torr, a gauge head swapped. A field one
snapshot could not read (a refused query, an instrument unavailable at the stop) is shown as not
read, never as a change: nothing is known to have changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

#: the sections of a snapshot that are compared, in the order they are shown
SECTIONS: Final = ("identity", "configuration")
#: the two moments a run's baseline is read
MOMENTS: Final = ("start", "stop")


@dataclass(frozen=True, slots=True)
class Field:
    """One field of one instrument at a run's start and stop; a side is None when it was not read."""

    instrument: str
    section: str
    key: str
    start: Any
    stop: Any
    start_read: bool
    stop_read: bool

    @property
    def name(self) -> str:
        return f"{self.instrument}.{self.section}.{self.key}"

    @property
    def changed(self) -> bool:
        return self.start_read and self.stop_read and not _same(self.start, self.stop)


def fields(baseline: Mapping[str, Any]) -> list[Field]:
    """Every field of every instrument of a run's baseline, instruments in the start's order (then the
    stop's), sections in :data:`SECTIONS` order, keys as first seen."""
    start, stop = (_snapshots(baseline, moment) for moment in MOMENTS)
    result = []
    for instrument in [*start, *(name for name in stop if name not in start)]:
        a, b = start.get(instrument, {}), stop.get(instrument, {})
        for section in SECTIONS:
            left, right = _section(a, section), _section(b, section)
            for key in [*left, *(k for k in right if k not in left)]:
                result.append(Field(instrument, section, str(key), left.get(key), right.get(key),
                                    key in left, key in right))
    return result


def changes(baseline: Mapping[str, Any]) -> list[Field]:
    """The fields that differ between a run's start and stop snapshots."""
    return [field for field in fields(baseline) if field.changed]


def unread(baseline: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(moment, instrument, why) of every instrument that could not be read, or was not in the snapshot
    (an instrument added to the config between start and stop, a stop the bridge could not read)."""
    start, stop = (_snapshots(baseline, moment) for moment in MOMENTS)
    result = []
    names = [*start, *(name for name in stop if name not in start)]
    for moment, snapshots in (("start", start), ("stop", stop)):
        if not snapshots:
            continue
        for name in names:
            snapshot = snapshots.get(name)
            if snapshot is None:
                result.append((moment, name, "not in the snapshot"))
            elif isinstance(snapshot.get("error"), str):
                result.append((moment, name, snapshot["error"]))
    return result


def refused(baseline: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(moment, instrument, query, why) of every query an instrument refused or did not answer."""
    result: list[tuple[str, str, str, str]] = []
    for moment in MOMENTS:
        for name, snapshot in _snapshots(baseline, moment).items():
            errors = snapshot.get("errors")
            if isinstance(errors, Mapping):
                result.extend((moment, name, str(query), str(why)) for query, why in errors.items())
    return result


def _snapshots(baseline: Mapping[str, Any], moment: str) -> dict[str, Mapping[str, Any]]:
    value = baseline.get(moment)
    if not isinstance(value, Mapping):
        return {}
    return {str(name): snapshot for name, snapshot in value.items() if isinstance(snapshot, Mapping)}


def _section(snapshot: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    value = snapshot.get(section)
    return value if isinstance(value, Mapping) else {}


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python, but a setting that went from true to 1 did change its type
    return (type(a) is type(b) and a == b) or (isinstance(a, int | float) and isinstance(b, int | float)
                                            and not isinstance(a, bool) and not isinstance(b, bool) and a == b)

"""Reading runs back from the local store (docs/design.md section 5, the store layout contract).

```
STORE/<data_id>/manifest.json
STORE/<data_id>/chunks/<flow>/<chunk_index:06d>.msgpack
```

The store is written by the uploader's local sink; this module only reads it, through the
contract module :mod:`bridge.store.layout`, which is strict and says exactly which file breaks
the contract: a person debugging a lost run needs the path, not a ``KeyError``. Whatever a run
folder holds (bad JSON, wrong types, absurd timestamps, a symlink out of the store, a 1 GB
file, names with escapes), reading it ends in a :class:`StoreDamaged` naming the file, so
``runs list`` reports that run and goes on with the others.

A run is named the way people name it: by its data id (the run id for the local sink), a unique
prefix of it (the short id ``runs list`` prints), or its stream name when only one run has that
name.

A channel's points are its chunks concatenated in ``chunk_index`` order, per flow. A point is
a timestamp, a value of the channel's type (None where the quality was not ok), its quality,
its detail and its unit; a version 1 store holds ok points only (docs/store.md). Points are kept
as plain lists so that listing and showing runs works on the Pi and without numpy; only the
plot and the Parquet export need the ``server`` extra.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.model import Quality, Value, ValueType
from bridge.names import printable
from bridge.store import layout
from bridge.store.layout import (
    BRIDGE_DOWN,
    CHUNKS,
    MANIFEST,
    SHORT_ID,
    ChannelSummary,
    Event,
    FlowSummary,
    Manifest,
    StoreCorrupt,
    StoreDamaged,
    StoreError,
    StoreLayoutError,
    check_flow,
    chunk_index_of,
    chunks_dir,
    contained,
    is_timestamp,
    parse_manifest,
    read_chunk,
    read_flow_chunks,
)

SERVER_EXTRA = "pip install 'chamber-bridge[server]'"
#: missing chunk ranges listed in one problem line, at most
MAX_RANGES = 10

__all__ = [
    "BRIDGE_DOWN", "CHUNKS", "MANIFEST", "SHORT_ID", "ChannelSummary", "Event", "FlowSummary", "Manifest",
    "MissingExtra", "RunData", "RunLookupError", "RunStore", "Series", "StoreCorrupt", "StoreDamaged", "StoreError",
    "StoreLayoutError", "format_duration", "format_event", "format_gap", "format_time", "load_run", "parse_manifest",
    "read_chunk", "read_manifest",
]


class RunLookupError(StoreError):
    """No store there, or the name given does not pick out exactly one run (bad usage: exit 2)."""


class MissingExtra(StoreError):
    """An optional dependency (matplotlib, pyarrow) is not installed."""

    def __init__(self, what: str, module: str) -> None:
        super().__init__(f"{what} needs {module}, which is not installed: {SERVER_EXTRA}")


def read_manifest(run_dir: Path) -> Manifest:
    """The manifest of the run folder ``run_dir`` (a folder of the store), checked."""
    return layout.read_manifest(run_dir.parent, run_dir.name)


# ---------------------------------------------------------------- chunks and points


@dataclass(slots=True)
class Series:
    """One channel's points in chunk order. ``units`` is per point: a controller's unit can be
    changed during a run, and a point is only meaningful with the unit it was read in; so are
    ``qualities`` (``ok`` where the point has a value), ``details`` and ``types``."""

    channel: str
    flow: str
    timestamps: list[float] = field(default_factory=list)
    values: list[Value | None] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    qualities: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def unit(self) -> str:
        """The unit most of the points were read in (the only one, almost always)."""
        return Counter(self.units).most_common(1)[0][0] if self.units else ""

    @property
    def type(self) -> ValueType:
        """The value type most of the points have (the only one, almost always)."""
        return ValueType(Counter(self.types).most_common(1)[0][0]) if self.types else ValueType.FLOAT

    def quality_counts(self) -> dict[str, int]:
        """Points per quality, ``ok`` first, then by name."""
        counts = Counter(self.qualities)
        return {q: counts[q] for q in sorted(counts, key=lambda q: (q != Quality.OK.value, q))}

    def not_ok_spans(self) -> list[tuple[float, float, str]]:
        """Stretches of consecutive points (in time order) of one quality other than ok:
        ``(start, end, quality)``, from the stretch's first point to the point after its last (the
        instrument said otherwise then), or to its last point when the series ends in it.

        A change of quality starts a new stretch: ``sensor_off`` then ``under_range`` are two."""
        spans: list[tuple[float, float, str]] = []
        current: list[Any] | None = None  # [start, last, quality]
        for i in sorted(range(len(self.timestamps)), key=self.timestamps.__getitem__):
            quality, stamp = self.qualities[i], self.timestamps[i]
            if current is not None and quality == current[2]:
                current[1] = stamp
                continue
            if current is not None:
                spans.append((current[0], stamp, current[2]))
                current = None
            if quality != Quality.OK.value:
                current = [stamp, stamp, quality]
        if current is not None:
            spans.append((current[0], current[1], current[2]))
        return spans


@dataclass(slots=True)
class RunData:
    """A run's manifest and every point its chunk files hold."""

    manifest: Manifest
    #: by channel name, sorted
    series: dict[str, Series]
    #: flow -> chunk indices found on disk, ascending
    chunks: dict[str, list[int]]
    #: channel -> chunk files that hold it
    chunks_per_channel: dict[str, int]
    #: what the chunk files say that the manifest does not (missing chunk files; for a finalized
    #: run also counts that differ); empty when the files and the manifest agree
    problems: list[str]

    @property
    def points(self) -> int:
        return sum(len(s) for s in self.series.values())

    @property
    def chunk_files(self) -> int:
        return sum(len(indices) for indices in self.chunks.values())

    def time_range(self) -> tuple[float, float] | None:
        stamps = [t for s in self.series.values() for t in (s.timestamps[:1] + s.timestamps[-1:])]
        return (min(stamps), max(stamps)) if stamps else None


def _entries(folder: Path, root: Path, what: str) -> list[os.DirEntry[str]]:
    """The entries of a folder of the store, sorted by name; StoreDamaged when it cannot be listed
    or leads outside the store."""
    try:
        contained(root, folder)
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except StoreLayoutError as exc:
        raise StoreDamaged(f"{folder}: {exc}") from None
    except NotADirectoryError:
        raise StoreDamaged(f"{folder}: {what} is not a folder") from None
    except OSError as exc:
        raise StoreDamaged(f"{folder}: cannot list {what}: {exc.strerror or exc}") from None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink into a folder we may not search: not ours, and not a run
        return False


def _chunk_files(root: Path, flow_dir: Path) -> list[int]:
    """The chunk indexes of a flow folder, ascending; other files (a temporary file of an atomic
    write in progress) are not chunks and are skipped."""
    found = []
    for entry in _entries(flow_dir, root, "a flow folder"):
        try:
            index = chunk_index_of(entry.name)
        except StoreLayoutError as exc:
            raise StoreDamaged(f"{flow_dir}/{exc}") from None
        if index is not None:
            found.append(index)
    return sorted(found)


def load_run(manifest: Manifest) -> RunData:
    """Every chunk of the run, concatenated per channel in chunk_index order within its flow.

    Raises StoreDamaged, naming the file or folder, for anything that breaks the contract."""
    root, data_id = manifest.run_dir.parent, manifest.data_id
    folder = chunks_dir(root, data_id)
    flows: list[str] = []
    if os.path.lexists(folder):
        for entry in _entries(folder, root, "the chunks folder"):
            if not _is_dir(entry):
                continue
            try:
                flows.append(check_flow(entry.name))
            except StoreLayoutError as exc:
                raise StoreDamaged(f"{folder}/{printable(entry.name, 80)}: not a flow folder: {exc}") from None
    series: dict[str, Series] = {}
    found: dict[str, list[int]] = {}
    chunks_per_channel: Counter[str] = Counter()
    for flow in flows:
        indexes = _chunk_files(root, folder / flow)
        found[flow] = indexes
        for index, channels in read_flow_chunks(root, data_id, flow, indexes, manifest.version):
            for name, column in channels.items():
                s = series.setdefault(name, Series(name, flow))
                if s.flow != flow:
                    raise StoreDamaged(f"{layout.chunk_path(root, data_id, flow, index)}: channel "
                                       f"{printable(name, 100)} also appears in flow {s.flow}")
                s.timestamps.extend(column.timestamps)
                s.values.extend(column.values)
                s.units.extend([column.units] * len(column.values))
                s.qualities.extend(column.qualities)
                s.details.extend(column.details)
                s.types.extend(column.types)
                chunks_per_channel[name] += 1
    run = RunData(manifest, dict(sorted(series.items())), found, dict(chunks_per_channel), [])
    run.problems = _disagreements(run)
    return run


def _disagreements(run: RunData) -> list[str]:
    problems = []
    m = run.manifest
    for flow, indices in run.chunks.items():
        missing = _missing(indices)
        if missing:
            problems.append(f"flow {flow}: chunk files missing: {_ranges(missing)}")
    if not m.finalized:  # while streaming the manifest's counts lag or lead the files
        return problems
    for flow, info in m.flows.items():
        on_disk = len(run.chunks.get(flow, []))
        if on_disk != info.chunks:
            problems.append(f"flow {printable(flow, 80)}: the manifest says {info.chunks} chunks, "
                            f"{on_disk} files found")
    for name in sorted(set(m.channels) | set(run.series)):
        summary = m.channels.get(name)
        have = len(run.series[name]) if name in run.series else 0
        shown = printable(name, 100)
        if summary is None:
            problems.append(f"channel {shown}: {have} points in chunk files but not in the manifest")
        elif have != summary.points:
            problems.append(f"channel {shown}: the manifest says {summary.points} points, the chunk files hold {have}")
        elif run.chunks_per_channel.get(name, 0) != summary.chunks:
            problems.append(f"channel {shown}: the manifest says {summary.chunks} chunks, "
                            f"{run.chunks_per_channel.get(name, 0)} files hold it")
    return problems


def _missing(indices: list[int]) -> list[tuple[int, int]]:
    """The index ranges absent from the ascending ``indices`` (from 0): computed from the
    neighbours, never by enumerating, so a lone chunk 999999999 costs nothing."""
    spans: list[tuple[int, int]] = []
    expected = 0
    for i in indices:
        if i > expected:
            spans.append((expected, i - 1))
        expected = max(expected, i + 1)
    return spans


def _ranges(spans: list[tuple[int, int]]) -> str:
    """``[(2, 4), (7, 7)]`` -> ``2-4, 7``; at most MAX_RANGES, then how many more."""
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in spans[:MAX_RANGES]]
    more = f" and {len(spans) - MAX_RANGES} more ranges" if len(spans) > MAX_RANGES else ""
    return ", ".join(parts) + more


# ---------------------------------------------------------------- the store


class RunStore:
    """A local store directory: its runs, found by name."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def check(self) -> None:
        if not self.root.exists():
            raise RunLookupError(f"{self.root}: no run store there (give --store DIR or --config CONFIG)")
        if not self.root.is_dir():
            raise RunLookupError(f"{self.root}: not a directory, so not a run store")

    def run_dirs(self) -> list[Path]:
        """Every folder of the store but hidden ones, whatever its name (one that is not a data
        id is reported as damaged when read)."""
        self.check()
        try:
            with os.scandir(self.root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot list the run store: {exc.strerror or exc}") from None
        return [self.root / e.name for e in entries if _is_dir(e) and not e.name.startswith(".")]

    def manifests(self) -> tuple[list[Manifest], list[StoreError]]:
        """Every readable run, oldest first, and one error per run that cannot be read."""
        runs: list[Manifest] = []
        broken: list[StoreError] = []
        for run_dir in self.run_dirs():
            try:
                runs.append(read_manifest(run_dir))
            except StoreError as exc:
                broken.append(exc)
        runs.sort(key=lambda m: (m.started_at, m.data_id))
        return runs, broken

    def find(self, name: str) -> Manifest:
        """The run ``name`` picks out: its data id or run id, a unique prefix of it, or its
        stream name when only one run has it."""
        if not name or name != name.strip() or "/" in name or name in (".", ".."):
            raise RunLookupError(f"{self.root}: {name!r} cannot name a run")
        dirs = self.run_dirs()
        if (self.root / name) in dirs:
            return read_manifest(self.root / name)
        runs, _ = self.manifests()
        by_id = [m for m in runs if m.data_id.startswith(name) or (m.run_id or "").startswith(name)]
        by_name = [m for m in runs if m.stream_name == name]
        matches = {m.data_id: m for m in (by_id + by_name)}
        if len(matches) == 1:
            return next(iter(matches.values()))
        if not matches:
            unreadable = [d for d in dirs if d.name.startswith(name)]
            if unreadable:  # its manifest is the problem: say that, not "no such run"
                return read_manifest(unreadable[0])
            raise RunLookupError(f"{self.root}: no run {name!r} ({len(runs)} runs; "
                                 f"see chamber-bridge runs list --store {self.root})")
        listed = ", ".join(f"{m.short_id} ({printable(m.stream_name, 40)}, {format_time(m.started_at)})"
                           for m in sorted(matches.values(), key=lambda m: m.started_at)[:MAX_RANGES])
        more = f" and {len(matches) - MAX_RANGES} more" if len(matches) > MAX_RANGES else ""
        what = "stream name" if by_name and not by_id else "name"
        raise RunLookupError(f"{self.root}: {what} {name!r} matches {len(matches)} runs: {listed}{more}; "
                             "give more of the data id")

    def load(self, name: str) -> RunData:
        return load_run(self.find(name))


# ---------------------------------------------------------------- formatting shared by the CLI and the plot


def format_time(ts: float | None, *, seconds: bool = True) -> str:
    """Unix seconds as ``2025-11-21 04:40:00`` UTC (the store's clock is the bridge's, in UTC)."""
    if ts is None:
        return "-"
    if not is_timestamp(ts):  # the layout refuses these on reading; a caller's own number may still be one
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def format_duration(seconds: float | None) -> str:
    """``45s``, ``12m30s``, ``1h05m``, ``2d03h``: as long as it needs to be, no longer."""
    if seconds is None:
        return "-"
    if not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_gap(gap: Mapping[str, Any]) -> str:
    """One manifest gap: ``seq 120-130 (chamber-a, epoch 1a2b3c4d): missing at grace expiry``, or for
    the time a bridge was down while the run went on ``2025-11-21 04:40:00 to 04:40:03 UTC (3s),
    before seq 1234 (...): bridge_down``; escaped and cut for printing (its texts come from a file)."""
    if gap.get("cause") == BRIDGE_DOWN:
        span = _down(gap.get("from_time"), gap.get("to_time"))
        if gap.get("at_seq") is not None:
            span += f", before seq {printable(gap['at_seq'], 40)}"
    else:
        lo, hi = gap.get("from_seq"), gap.get("to_seq")
        span = f"seq {printable(lo, 40)}" if lo == hi else f"seq {printable(lo, 40)}-{printable(hi, 40)}"
    where = ", ".join(printable(x, 80) for x in (gap.get("site"), _short(gap.get("epoch"))) if x)
    cause = f": {printable(gap['cause'], 200)}" if gap.get("cause") else ""
    return f"{span}" + (f" ({where})" if where else "") + cause


def _down(start: object, end: object) -> str:
    """``2025-11-21 04:40:00 to 04:40:03 UTC (3s)``: an interval of the manifest, whatever it holds."""
    if not (is_timestamp(start) and is_timestamp(end)):
        return f"from {printable(start, 40)} to {printable(end, 40)}"
    assert isinstance(start, int | float) and isinstance(end, int | float)
    first, last = format_time(start), format_time(end)
    if first[:10] == last[:10]:
        last = last[11:]
    return f"{first} to {last} UTC ({format_duration(end - start)})"


def format_event(event: Event) -> str:
    """``2025-11-21 04:40:00.123 UTC  [cli] Ga shutter open (shutter)``, escaped and cut for printing."""
    stamp = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    tags = f" ({', '.join(printable(t, 64) for t in event.tags[:32])})" if event.tags else ""
    return f"{stamp} UTC  [{printable(event.source or '-', 40)}] {printable(event.text, 1000)}{tags}"


def _short(epoch: object) -> str | None:
    return f"epoch {str(epoch)[:SHORT_ID]}" if epoch else None

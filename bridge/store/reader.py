"""Reading runs back from the local store (DESIGN.md section 5, the store layout contract).

```
STORE/<data_id>/manifest.json
STORE/<data_id>/chunks/<flow>/<chunk_index:06d>.msgpack
```

The store is written by the uploader's local sink; this module only reads it, so it is strict
about the contract and says exactly which file breaks it: a person debugging a lost run needs
the path, not a ``KeyError``. A run is named the way people name it: by its data id (the run id
for the local sink), a unique prefix of it (the short id ``runs list`` prints), or its stream
name when only one run has that name.

A channel's points are its chunks concatenated in ``chunk_index`` order, per flow. Points are
kept as plain lists of floats so that listing and showing runs works on the Pi and without
numpy; only the plot and the Parquet export need the ``server`` extra.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from bridge.errors import BridgeError

MANIFEST = "manifest.json"
CHUNKS = "chunks"
#: ``<chunk_index:06d>.msgpack``; anything else in a flow directory (a temporary file of an
#: atomic write in progress, say) is not a chunk
CHUNK_NAME = re.compile(r"^(\d{6,})\.msgpack$")
#: the short id ``runs list`` prints; lookups accept any unique prefix
SHORT_ID = 8
SERVER_EXTRA = "pip install 'chamber-bridge[server]'"


class StoreError(BridgeError):
    """The store or a run in it cannot be read (a runtime failure: exit 1)."""


class StoreCorrupt(StoreError):
    """A file breaks the store contract; the message names the file."""


class RunLookupError(StoreError):
    """No store there, or the name given does not pick out exactly one run (bad usage: exit 2)."""


class MissingExtra(StoreError):
    """An optional dependency (matplotlib, pyarrow) is not installed."""

    def __init__(self, what: str, module: str) -> None:
        super().__init__(f"{what} needs {module}, which is not installed: {SERVER_EXTRA}")


# ---------------------------------------------------------------- the manifest


@dataclass(frozen=True, slots=True)
class ChannelSummary:
    """One channel as the manifest counts it."""

    name: str
    flow: str
    units: str
    points: int
    bad_quality: int
    chunks: int


@dataclass(frozen=True, slots=True)
class FlowSummary:
    name: str
    points: int
    chunks: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """``manifest.json`` of one run, checked against the contract; ``raw`` keeps every key."""

    path: Path
    raw: dict[str, Any]
    data_id: str
    stream_name: str
    site: str | None
    run_id: str | None
    physical_sample: str | None
    synth_source_id: str | None
    project_id: str | None
    tags: tuple[str, ...]
    points_per_chunk: int | None
    started_at: float
    stopped_at: float | None
    exit_status: str | None
    finalized: bool
    finalized_at: float | None
    channels: dict[str, ChannelSummary]
    flows: dict[str, FlowSummary]
    gaps: tuple[dict[str, Any], ...]
    report: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def short_id(self) -> str:
        return self.data_id[:SHORT_ID]

    @property
    def complete(self) -> bool | None:
        """The completeness report's verdict; None while streaming or when there is no report."""
        value = self.report.get("complete")
        return value if isinstance(value, bool) else None

    @property
    def total_points(self) -> int:
        """Values in the run over all channels: the rows of a long-format export."""
        return sum(c.points for c in self.channels.values())

    @property
    def duration(self) -> float | None:
        return None if self.stopped_at is None else self.stopped_at - self.started_at

    @property
    def state(self) -> str:
        """``open``, ``finalized, complete`` or ``finalized, incomplete (2 gaps)``: one glance."""
        if not self.finalized:
            return "open"
        complete = self.complete
        if complete is None:
            return "finalized"
        if complete:
            return "finalized, complete"
        gaps = len(self.gaps)
        return f"finalized, incomplete ({gaps} gap{'' if gaps == 1 else 's'})" if gaps else "finalized, incomplete"


class _Fields:
    """Typed access to a JSON object, raising :class:`StoreCorrupt` that names the file and key."""

    def __init__(self, path: Path, obj: Mapping[str, Any], where: str = "") -> None:
        self.path = path
        self.obj = obj
        self.where = where

    def bad(self, key: str, expected: str) -> StoreCorrupt:
        value = self.obj.get(key)
        shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
        return StoreCorrupt(f"{self.path}: {self.where}{key} should be {expected}, not {shown}")

    def text(self, key: str, *, optional: bool = False) -> str | None:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.bad(key, "text" + (" or null" if optional else ""))
        return value

    def required_text(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str) or not value:
            raise self.bad(key, "non-empty text")
        return value

    def number(self, key: str, *, optional: bool = False) -> float | None:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.bad(key, "a number" + (" or null" if optional else ""))
        return float(value)

    def count(self, key: str, default: int | None = 0) -> int:
        value = self.obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.bad(key, "a count (integer >= 0)")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.bad(key, "an object")
        return value


def parse_manifest(path: Path, raw: object) -> Manifest:
    """Check a decoded ``manifest.json`` against the contract (unknown keys are kept, not errors)."""
    if not isinstance(raw, dict):
        raise StoreCorrupt(f"{path}: not a JSON object")
    f = _Fields(path, raw)
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise f.bad("tags", "a list of text")
    ppc = raw.get("points_per_chunk")
    if ppc is not None and (isinstance(ppc, bool) or not isinstance(ppc, int) or ppc < 1):
        raise f.bad("points_per_chunk", "a positive integer")
    finalized = raw.get("finalized", False)
    if not isinstance(finalized, bool):
        raise f.bad("finalized", "true or false")
    channels: dict[str, ChannelSummary] = {}
    for name, info in f.mapping("channels").items():
        if not isinstance(info, dict):
            raise StoreCorrupt(f"{path}: channels.{name} should be an object")
        c = _Fields(path, info, f"channels.{name}.")
        flow = c.text("flow", optional=True) or name.split("/", 1)[0]
        channels[name] = ChannelSummary(name, flow, c.text("units", optional=True) or "", c.count("points"),
                                        c.count("bad_quality"), c.count("chunks"))
    flows: dict[str, FlowSummary] = {}
    for name, info in f.mapping("flows").items():
        if not isinstance(info, dict):
            raise StoreCorrupt(f"{path}: flows.{name} should be an object")
        c = _Fields(path, info, f"flows.{name}.")
        flows[name] = FlowSummary(name, c.count("points"), c.count("chunks"))
    gaps = raw.get("gaps") or []
    if not isinstance(gaps, list) or not all(isinstance(g, dict) for g in gaps):
        raise f.bad("gaps", "a list of objects")
    started_at = f.number("started_at")
    assert started_at is not None
    return Manifest(
        path=path, raw=raw, data_id=f.required_text("data_id"), stream_name=f.required_text("stream_name"),
        site=f.text("site", optional=True), run_id=f.text("run_id", optional=True),
        physical_sample=f.text("physical_sample", optional=True),
        synth_source_id=_id_text(f, "synth_source_id"), project_id=_id_text(f, "project_id"),
        tags=tuple(tags), points_per_chunk=ppc, started_at=started_at,
        stopped_at=f.number("stopped_at", optional=True), exit_status=f.text("exit_status", optional=True),
        finalized=finalized, finalized_at=f.number("finalized_at", optional=True),
        channels=dict(sorted(channels.items())), flows=dict(sorted(flows.items())), gaps=tuple(gaps),
        report=f.mapping("report"),
    )


def _id_text(f: _Fields, key: str) -> str | None:
    """Ids the platform hands out may arrive as numbers; show them as text either way."""
    value = f.obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f.text(key, optional=True)


def read_manifest(run_dir: Path) -> Manifest:
    path = run_dir / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreCorrupt(f"{run_dir}: no {MANIFEST} (not a run, or its manifest was lost)") from None
    except OSError as exc:
        raise StoreCorrupt(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise StoreCorrupt(f"{path}: not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreCorrupt(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    manifest = parse_manifest(path, raw)
    if manifest.data_id != run_dir.name:
        raise StoreCorrupt(f"{path}: data_id {manifest.data_id!r} does not match its directory {run_dir.name!r}")
    return manifest


# ---------------------------------------------------------------- chunks and points


@dataclass(slots=True)
class Series:
    """One channel's points in chunk order. ``units`` is per point: a controller's unit can be
    changed during a run, and a point is only meaningful with the unit it was read in."""

    channel: str
    flow: str
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    units: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def unit(self) -> str:
        """The unit most of the points were read in (the only one, almost always)."""
        return Counter(self.units).most_common(1)[0][0] if self.units else ""


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


def _chunk_files(flow_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in flow_dir.iterdir():
        match = CHUNK_NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_chunk(path: Path, data_id: str, chunk_index: int) -> dict[str, tuple[list[float], list[float], str]]:
    """One chunk file: channel -> (timestamps, values, units), checked against the contract."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise StoreCorrupt(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        body = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise StoreCorrupt(f"{path}: not a valid msgpack chunk ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict):
        raise StoreCorrupt(f"{path}: not a chunk (a msgpack map with data_id, chunk_index, channels)")
    if body.get("data_id") != data_id:
        raise StoreCorrupt(f"{path}: data_id {body.get('data_id')!r} is not this run's {data_id!r}")
    if body.get("chunk_index") != chunk_index or isinstance(body.get("chunk_index"), bool):
        raise StoreCorrupt(f"{path}: chunk_index {body.get('chunk_index')!r} does not match the file name")
    channels = body.get("channels")
    if not isinstance(channels, dict):
        raise StoreCorrupt(f"{path}: channels should be a map, not {type(channels).__name__}")
    out: dict[str, tuple[list[float], list[float], str]] = {}
    for name, data in channels.items():
        if not isinstance(name, str) or not isinstance(data, dict):
            raise StoreCorrupt(f"{path}: channel {name!r} should be a map with timestamps, values, units")
        units = data.get("units")
        if not isinstance(units, str):
            raise StoreCorrupt(f"{path}: channel {name}: units should be text, not {units!r}")
        stamps = _numbers(path, name, "timestamps", data.get("timestamps"))
        values = _numbers(path, name, "values", data.get("values"))
        if len(stamps) != len(values):
            raise StoreCorrupt(f"{path}: channel {name}: {len(stamps)} timestamps but {len(values)} values")
        out[name] = (stamps, values, units)
    return out


def _numbers(path: Path, channel: str, key: str, seq: object) -> list[float]:
    if not isinstance(seq, list):
        raise StoreCorrupt(f"{path}: channel {channel}: {key} should be a list, not {type(seq).__name__}")
    for i, x in enumerate(seq):
        if isinstance(x, bool) or not isinstance(x, float | int):
            raise StoreCorrupt(f"{path}: channel {channel}: {key}[{i}] is not a number: {x!r}")
    return [float(x) for x in seq]


def load_run(manifest: Manifest) -> RunData:
    """Every chunk of the run, concatenated per channel in chunk_index order within its flow."""
    chunks_dir = manifest.run_dir / CHUNKS
    flows = sorted(p for p in chunks_dir.iterdir() if p.is_dir()) if chunks_dir.is_dir() else []
    series: dict[str, Series] = {}
    found: dict[str, list[int]] = {}
    chunks_per_channel: Counter[str] = Counter()
    for flow_dir in flows:
        flow = flow_dir.name
        files = _chunk_files(flow_dir)
        found[flow] = [index for index, _ in files]
        for index, path in files:
            for name, (stamps, values, units) in read_chunk(path, manifest.data_id, index).items():
                s = series.setdefault(name, Series(name, flow))
                if s.flow != flow:
                    raise StoreCorrupt(f"{path}: channel {name} also appears in flow {s.flow}")
                s.timestamps.extend(stamps)
                s.values.extend(values)
                s.units.extend([units] * len(values))
                chunks_per_channel[name] += 1
    run = RunData(manifest, dict(sorted(series.items())), found, dict(chunks_per_channel), [])
    run.problems = _disagreements(run)
    return run


def _disagreements(run: RunData) -> list[str]:
    problems = []
    m = run.manifest
    for flow, indices in run.chunks.items():
        missing = sorted(set(range(indices[-1] + 1)) - set(indices)) if indices else []
        if missing:
            problems.append(f"flow {flow}: chunk files missing: {_ranges(missing)}")
    if not m.finalized:  # while streaming the manifest's counts lag or lead the files
        return problems
    for flow, info in m.flows.items():
        on_disk = len(run.chunks.get(flow, []))
        if on_disk != info.chunks:
            problems.append(f"flow {flow}: the manifest says {info.chunks} chunks, {on_disk} files found")
    for name in sorted(set(m.channels) | set(run.series)):
        summary = m.channels.get(name)
        have = len(run.series[name]) if name in run.series else 0
        if summary is None:
            problems.append(f"channel {name}: {have} points in chunk files but not in the manifest")
        elif have != summary.points:
            problems.append(f"channel {name}: the manifest says {summary.points} points, the chunk files hold {have}")
        elif run.chunks_per_channel.get(name, 0) != summary.chunks:
            problems.append(f"channel {name}: the manifest says {summary.chunks} chunks, "
                            f"{run.chunks_per_channel.get(name, 0)} files hold it")
    return problems


def _ranges(indices: Iterable[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``2-4, 7``."""
    parts: list[str] = []
    start = prev = None
    for i in indices:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


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
        self.check()
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

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
        listed = ", ".join(f"{m.short_id} ({m.stream_name}, {format_time(m.started_at)})"
                           for m in sorted(matches.values(), key=lambda m: m.started_at))
        what = "stream name" if by_name and not by_id else "name"
        raise RunLookupError(f"{self.root}: {what} {name!r} matches {len(matches)} runs: {listed}; "
                             "give more of the data id")

    def load(self, name: str) -> RunData:
        return load_run(self.find(name))


# ---------------------------------------------------------------- formatting shared by the CLI and the plot


def format_time(ts: float | None, *, seconds: bool = True) -> str:
    """Unix seconds as ``2025-11-21 04:40:00`` UTC (the store's clock is the bridge's, in UTC)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def format_duration(seconds: float | None) -> str:
    """``45s``, ``12m30s``, ``1h05m``, ``2d03h``: as long as it needs to be, no longer."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_gap(gap: Mapping[str, Any]) -> str:
    """One manifest gap: ``seq 120-130 (chamber-a, epoch 1a2b3c4d): missing at grace expiry``."""
    lo, hi = gap.get("from_seq"), gap.get("to_seq")
    span = f"seq {lo}" if lo == hi else f"seq {lo}-{hi}"
    where = ", ".join(str(x) for x in (gap.get("site"), _short(gap.get("epoch"))) if x)
    return f"{span}" + (f" ({where})" if where else "") + (f": {gap['cause']}" if gap.get("cause") else "")


def _short(epoch: object) -> str | None:
    return f"epoch {str(epoch)[:SHORT_ID]}" if epoch else None

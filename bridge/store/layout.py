"""The local store's contract in one module: where every file lives and what it must hold (docs/store.md).

```
STORE/<data_id>/manifest.json
STORE/<data_id>/chunks/<flow>/<chunk_index:06d>.msgpack
```

The writer (``bridge.uploader.sinks.local``) builds every path with the builders here, and the
readers (``bridge.store.reader`` and through it ``chamber-bridge runs``) read every file through
:func:`read_manifest` and :func:`read_chunk`. Both sides therefore agree on one rule set, and
neither can be talked into a path outside the store:

- each component is checked on its own: a ``data_id`` and a ``flow`` are names
  (:data:`bridge.names.NAME_PATTERN`: no ``/``, no ``..``, no control characters, at most 64
  characters); a ``chunk_index`` is an int in ``0..CHUNK_INDEX_MAX``;
- the path, once resolved, must still lie under the resolved root, which catches a symlink
  planted in the store (a run folder, a ``chunks`` or flow folder, a file pointing elsewhere).

``data_id`` accepts any name, not only a run id (32 lowercase hex digits, what the bridge makes
and what the local sink uses): the ids the Atomscale API hands out are names too, and the
store's safety rests on the name rule, not on who made the id.

Reading is bounded as well: a file is opened without following a final symlink and without
blocking (a FIFO planted as ``manifest.json`` would hang a reader), must be a regular file, and
is read only up to :data:`MANIFEST_MAX_BYTES` or :data:`CHUNK_MAX_BYTES`. Every failure is a
:class:`StoreDamaged` naming the file and the reason, never a library's exception.

Not covered: someone who can write to the store swapping a folder for a symlink between the
check and the write. Whoever can do that can write the store's files directly anyway.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from bridge.errors import BridgeError
from bridge.model import Quality, Value, ValueType, value_fits
from bridge.names import check_name, printable

#: ``v`` of manifest.json as written: 2 keeps every reading (quality and type) in the chunks
MANIFEST_VERSION: Final = 2
#: versions a reader takes; any other is refused (a newer writer's manifest may mean more). Version 1
#: left readings whose quality was not ok out of the chunks and held floats only
READ_VERSIONS: Final = (1, 2)
MANIFEST: Final = "manifest.json"
CHUNKS: Final = "chunks"
#: chunk files are named ``<chunk_index:06d>.msgpack``: 6 digits, up to 9 for the largest indexes
#: (a flow of ``points_per_chunk: 1`` polled at 10 Hz passes 999,999 chunks after 28 hours)
CHUNK_INDEX_MAX: Final = 999_999_999
CHUNK_NAME: Final = re.compile(r"^(\d{6,9})\.msgpack$")
#: what looks like a chunk file but is not one of ours (an index past CHUNK_INDEX_MAX): damage
CHUNK_LIKE: Final = re.compile(r"^-?\d+\.msgpack$")
#: a manifest of thousands of channels and gaps is well under 1 MiB
MANIFEST_MAX_BYTES: Final = 16 * 1024 * 1024
#: a chunk of 100,000 points (the largest points_per_chunk) of ~35 channels
CHUNK_MAX_BYTES: Final = 64 * 1024 * 1024
#: timestamps are Unix seconds from 1970 up to 9999-12-31T23:59:59Z: what a date can show (a Pi
#: without a real-time clock starts in 1970, so early times are kept, not refused)
TIMESTAMP_MIN: Final = 0.0
TIMESTAMP_MAX: Final = 253_402_300_799.0
#: the short id ``runs list`` prints; lookups accept any unique prefix
SHORT_ID: Final = 8
#: values shown in an error message are cut to this many characters
_SHOWN: Final = 60


class StoreError(BridgeError):
    """The store or a run in it cannot be read or written (a runtime failure: exit 1)."""


class StoreDamaged(StoreError):
    """A file or folder breaks the store contract; the message names it and says why."""


#: the name the reader has always used
StoreCorrupt = StoreDamaged


class StoreLayoutError(StoreError, ValueError):
    """A path component (data id, flow, chunk index) that cannot be part of the store, or a path
    that resolves outside it; the message names the component."""


def shown(value: object) -> str:
    """``value`` for an error message: its repr, escaped and cut."""
    return printable(repr(value), _SHOWN)


# ---------------------------------------------------------------- components and paths


def check_data_id(value: object) -> str:
    """A data id: a run id, or any name (the Atomscale API hands out its own ids)."""
    try:
        return check_name(value, "data_id")
    except ValueError as exc:
        raise StoreLayoutError(str(exc)) from None


def check_flow(value: object) -> str:
    try:
        return check_name(value, "flow")
    except ValueError as exc:
        raise StoreLayoutError(str(exc)) from None


def check_chunk_index(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= CHUNK_INDEX_MAX:
        raise StoreLayoutError(f"chunk_index must be an integer 0..{CHUNK_INDEX_MAX}, got {shown(value)}")
    return value


def chunk_file_name(chunk_index: int) -> str:
    return f"{check_chunk_index(chunk_index):06d}.msgpack"


def chunk_index_of(file_name: str) -> int | None:
    """The index a chunk file's name gives, or None for a file that is not a chunk (a temporary
    file of an atomic write, say). A name that looks like a chunk but is out of range is damage."""
    match = CHUNK_NAME.match(file_name)
    if match:
        return int(match.group(1))
    if CHUNK_LIKE.match(file_name):
        raise StoreLayoutError(f"{printable(file_name, _SHOWN)}: not a chunk file name "
                               f"(6 to 9 digits: a chunk_index 0..{CHUNK_INDEX_MAX})")
    return None


def contained(root: Path | str, path: Path) -> Path:
    """``path`` if, with every symlink resolved, it lies under the resolved ``root``; else
    StoreLayoutError. Works for paths that do not exist yet (the folders a writer is about to make)."""
    try:
        base = Path(root).resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise StoreLayoutError(f"{printable(str(path), 300)} cannot be resolved: {printable(exc, 100)}") from None
    if resolved != base and not resolved.is_relative_to(base):
        raise StoreLayoutError(f"{printable(str(path), 300)} leads outside the store {base} "
                               f"(to {printable(str(resolved), 200)}): a symbolic link?")
    return path


def run_dir(root: Path | str, data_id: object) -> Path:
    return contained(root, Path(root) / check_data_id(data_id))


def manifest_path(root: Path | str, data_id: object) -> Path:
    return contained(root, Path(root) / check_data_id(data_id) / MANIFEST)


def chunks_dir(root: Path | str, data_id: object) -> Path:
    return contained(root, Path(root) / check_data_id(data_id) / CHUNKS)


def flow_dir(root: Path | str, data_id: object, flow: object) -> Path:
    return contained(root, Path(root) / check_data_id(data_id) / CHUNKS / check_flow(flow))


def chunk_path(root: Path | str, data_id: object, flow: object, chunk_index: object) -> Path:
    name = chunk_file_name(check_chunk_index(chunk_index))
    return contained(root, Path(root) / check_data_id(data_id) / CHUNKS / check_flow(flow) / name)


# ---------------------------------------------------------------- bounded reads


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` (FileNotFoundError passes through).

    The caller has checked with :func:`contained` that the folder of ``path`` lies in the store;
    the file itself is opened without following a symlink (one planted as the file is refused,
    wherever it points) and without blocking, so a FIFO or a device planted in the store cannot
    hang the reader."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        reason = ("a symbolic link (the store holds none; refused wherever it points)" if exc.errno == errno.ELOOP
                  else f"cannot read: {exc.strerror or exc}")
        raise StoreDamaged(f"{path}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreDamaged(f"{path}: not a regular file")
        if info.st_size > limit:
            raise StoreDamaged(f"{path}: {info.st_size} bytes, more than a {what} may have ({limit})")
        parts: list[bytes] = []
        size = 0
        while size <= limit:  # the size said is not trusted: the file may grow while read
            part = os.read(fd, min(1 << 20, limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
        if size > limit:
            raise StoreDamaged(f"{path}: more than the {limit} bytes a {what} may have")
        return b"".join(parts)
    except OSError as exc:
        raise StoreDamaged(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the manifest


@dataclass(frozen=True, slots=True)
class ChannelSummary:
    """One channel as the manifest counts it.

    ``points`` are the points its chunk files hold: every reading in a version 2 store, the ok
    ones only in version 1 (which left the others out and counted them in ``bad_quality``).
    ``qualities`` counts readings per quality (version 1 knows only the ok ones); ``not_numeric``
    the ok readings an Atomscale body had no number for (an enum's, a string's)."""

    name: str
    flow: str
    units: str
    points: int
    bad_quality: int
    chunks: int
    type: str = ValueType.FLOAT.value
    qualities: dict[str, int] = field(default_factory=dict)
    not_numeric: int = 0


@dataclass(frozen=True, slots=True)
class FlowSummary:
    name: str
    points: int
    chunks: int


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a run (an annotation): when, what, its tags, who logged it, its seq in the bridge's log."""

    time: float
    text: str
    tags: tuple[str, ...]
    source: str
    seq: int | None


#: the cause of a gap of time (the bridge was down, the run went on) rather than of seqs that never arrived
BRIDGE_DOWN: Final = "bridge_down"


@dataclass(frozen=True, slots=True)
class Manifest:
    """``manifest.json`` of one run, checked against the contract; ``raw`` keeps every key.

    Texts (stream name, sample, tags, ...) are kept as written, however long or strange: they
    are data. Whoever prints them escapes and cuts them (:func:`bridge.names.printable`)."""

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
    #: ``manual`` or ``auto`` (a manifest written before automatic runs says nothing: manual)
    trigger: str = "manual"
    #: why an automatic trigger opened (``start``) and closed (``stop``) the run: expression and values
    why: dict[str, Any] = field(default_factory=dict)
    #: the run's events (annotations) in log order
    events: tuple[Event, ...] = ()
    #: ``v``: 1 (readings of a bad quality left out of the chunks, floats only) or 2 (every reading, typed)
    version: int = MANIFEST_VERSION
    #: identity and configuration of every instrument at the run's ``start`` and ``stop``:
    #: moment -> instrument -> snapshot (``identity``, ``configuration``, ``errors``, ``error``, ``t``)
    baseline: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

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
        """Points in the run's chunk files over all channels: the rows of a long-format export."""
        return sum(c.points for c in self.channels.values())

    @property
    def keeps_every_reading(self) -> bool:
        """Whether the chunks hold readings of every quality (version 2), not only the ok ones."""
        return self.version >= 2

    @property
    def duration(self) -> float | None:
        return None if self.stopped_at is None else self.stopped_at - self.started_at

    @property
    def missing_gaps(self) -> tuple[dict[str, Any], ...]:
        """The gaps of seqs that never arrived; not the time a bridge was down while the run went on."""
        return tuple(g for g in self.gaps if g.get("cause") != BRIDGE_DOWN)

    @property
    def bridge_down(self) -> float:
        """Seconds the bridge was down while the run went on (its ``bridge_down`` gaps), 0 when never."""
        return sum(max(0.0, float(g["to_time"]) - float(g["from_time"])) for g in self.gaps
                   if g.get("cause") == BRIDGE_DOWN and is_timestamp(g.get("from_time"))
                   and is_timestamp(g.get("to_time")))

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
        gaps = len(self.missing_gaps)
        return f"finalized, incomplete ({gaps} gap{'' if gaps == 1 else 's'})" if gaps else "finalized, incomplete"


def is_timestamp(value: object) -> bool:
    """A number of Unix seconds a date can be made of (see TIMESTAMP_MAX); ints are compared
    before any conversion, so 10**400 is refused rather than overflowing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return TIMESTAMP_MIN <= value <= TIMESTAMP_MAX


class _Fields:
    """Typed access to a JSON object, raising :class:`StoreDamaged` that names the file and key."""

    def __init__(self, path: Path, obj: Mapping[str, Any], where: str = "") -> None:
        self.path = path
        self.obj = obj
        self.where = where

    def bad(self, key: str, expected: str) -> StoreDamaged:
        value = self.obj.get(key)
        text = repr(value)
        return StoreDamaged(f"{self.path}: {printable(self.where + key, 100)} should be {expected}, not "
                            f"{printable(text, 40) if len(text) <= 40 else type(value).__name__}")

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

    def timestamp(self, key: str, *, optional: bool = False) -> float | None:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if not is_timestamp(value) or not isinstance(value, int | float):  # (the second test for mypy)
            raise self.bad(key, "a number of Unix seconds (1970..9999)" + (" or null" if optional else ""))
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

    def id_text(self, key: str) -> str | None:
        """Ids the platform hands out may arrive as numbers; show them as text either way."""
        value = self.obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return self.text(key, optional=True)


def parse_manifest(path: Path, raw: object) -> Manifest:
    """Check a decoded ``manifest.json`` against the contract (unknown keys are kept, not errors).

    Required: ``v`` (:data:`MANIFEST_VERSION`), ``data_id``, ``stream_name``, ``started_at``; every
    other key may be missing or null until the run is finalized, but has its type when present."""
    if not isinstance(raw, dict):
        raise StoreDamaged(f"{path}: not a JSON object")
    f = _Fields(path, raw)
    version = raw.get("v")
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise StoreDamaged(f"{path}: manifest version {shown(version)}; this chamber-bridge reads versions "
                           f"{', '.join(map(str, READ_VERSIONS))} (a newer writer, or not a manifest)")
    data_id = f.required_text("data_id")
    if data_id != path.parent.name:
        raise StoreDamaged(f"{path}: data_id {shown(data_id)} does not match its directory {shown(path.parent.name)}")
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
            raise StoreDamaged(f"{path}: channels.{printable(name, 100)} should be an object")
        c = _Fields(path, info, f"channels.{name}.")
        flow = c.text("flow", optional=True) or name.split("/", 1)[0]
        points, bad = c.count("points"), c.count("bad_quality")
        if version == 1:  # the ok readings only: the others were left out and counted
            kind, qualities, not_numeric = ValueType.FLOAT.value, ({"ok": points} if points else {}), 0
        else:
            kind = c.text("type", optional=True) or ValueType.FLOAT.value
            if kind not in _VALUE_TYPES:
                raise c.bad("type", f"one of {', '.join(_VALUE_TYPES)}")
            qualities = _counts(c, "qualities")
            not_numeric = c.count("not_numeric")
        channels[name] = ChannelSummary(name, flow, c.text("units", optional=True) or "", points, bad,
                                        c.count("chunks"), kind, qualities, not_numeric)
    flows: dict[str, FlowSummary] = {}
    for name, info in f.mapping("flows").items():
        if not isinstance(info, dict):
            raise StoreDamaged(f"{path}: flows.{printable(name, 100)} should be an object")
        c = _Fields(path, info, f"flows.{name}.")
        flows[name] = FlowSummary(name, c.count("points"), c.count("chunks"))
    gaps = raw.get("gaps") or []
    if not isinstance(gaps, list) or not all(isinstance(g, dict) for g in gaps):
        raise f.bad("gaps", "a list of objects")
    started_at = f.timestamp("started_at")
    assert started_at is not None
    trigger = f.text("trigger", optional=True) or "manual"
    why = f.mapping("why")
    if not all(isinstance(v, dict) or v is None for v in why.values()):
        raise f.bad("why", "an object of objects (start, stop)")
    return Manifest(
        path=path, raw=raw, data_id=data_id, stream_name=f.required_text("stream_name"),
        site=f.text("site", optional=True), run_id=f.text("run_id", optional=True),
        physical_sample=f.text("physical_sample", optional=True),
        synth_source_id=f.id_text("synth_source_id"), project_id=f.id_text("project_id"),
        tags=tuple(tags), points_per_chunk=ppc, started_at=started_at,
        stopped_at=f.timestamp("stopped_at", optional=True), exit_status=f.text("exit_status", optional=True),
        finalized=finalized, finalized_at=f.timestamp("finalized_at", optional=True),
        channels=dict(sorted(channels.items())), flows=dict(sorted(flows.items())), gaps=tuple(gaps),
        report=f.mapping("report"), trigger=trigger, why=why, events=_events(path, raw.get("events")),
        version=version, baseline=_baseline(path, f.mapping("baseline")),
    )


_VALUE_TYPES: Final = tuple(t.value for t in ValueType)
_QUALITIES: Final = frozenset(q.value for q in Quality)


def _counts(fields: _Fields, key: str) -> dict[str, int]:
    """``{"ok": 120, "sensor_off": 61}``: readings per quality, each a known quality and a count."""
    counts = fields.mapping(key)
    for quality, count in counts.items():
        if quality not in _QUALITIES or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise fields.bad(key, "an object of quality: count")
    return counts


def _baseline(path: Path, raw: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The manifest's ``baseline``, each snapshot checked for its types (moments other than start and stop,
    from a newer writer, are left in ``raw``)."""
    checked: dict[str, dict[str, dict[str, Any]]] = {}
    for moment in ("start", "stop"):
        snapshots = raw.get(moment)
        if snapshots is None:
            continue
        if not isinstance(snapshots, dict):
            raise StoreDamaged(f"{path}: baseline.{moment} should be an object of instruments")
        checked[moment] = {}
        for name, snapshot in snapshots.items():
            where = f"baseline.{moment}.{printable(name, 64)}"
            if not isinstance(snapshot, dict):
                raise StoreDamaged(f"{path}: {where} should be an object")
            s = _Fields(path, snapshot, f"{where}.")
            for key, allowed, expected in (("identity", (str,), "an object of texts"),
                                           ("configuration", (str, int, float, bool, type(None)),
                                            "an object of texts, numbers and truth values"),
                                           ("errors", (str,), "an object of texts")):
                if not all(isinstance(v, allowed) for v in s.mapping(key).values()):
                    raise s.bad(key, expected)
            s.text("error", optional=True)
            s.timestamp("t", optional=True)
            checked[moment][name] = snapshot
    return checked


def _events(path: Path, raw: object) -> tuple[Event, ...]:
    """The manifest's ``events``, each checked: a time, a text, tags, a source, a seq (optional)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise StoreDamaged(f"{path}: events should be a list of objects, not {type(raw).__name__}")
    events = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise StoreDamaged(f"{path}: events[{n}] should be an object")
        e = _Fields(path, item, f"events[{n}].")
        stamp = e.timestamp("time")
        assert stamp is not None
        tags = item.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise e.bad("tags", "a list of text")
        seq = item.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise e.bad("seq", "a seq (integer >= 0) or null")
        events.append(Event(stamp, e.required_text("text"), tuple(tags), e.text("source", optional=True) or "",
                            seq))
    return tuple(events)


def _damaged_folder(root: Path | str, name: str, exc: StoreLayoutError) -> StoreDamaged:
    return StoreDamaged(f"{Path(root) / printable(name, 80)}: not a run folder: {exc}")


def read_manifest(root: Path | str, data_id: str) -> Manifest:
    """The manifest of run folder ``data_id`` of the store ``root``, checked; StoreDamaged otherwise
    (a folder name that is not a data id, a manifest that leads outside the store, is missing, too
    large, not UTF-8 JSON, or breaks the schema)."""
    try:
        path = manifest_path(root, data_id)
    except StoreLayoutError as exc:
        raise _damaged_folder(root, data_id, exc) from None
    try:
        blob = read_bounded(path, MANIFEST_MAX_BYTES, "manifest")
    except FileNotFoundError:
        raise StoreDamaged(f"{path.parent}: no {MANIFEST} (not a run, or its manifest was lost)") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreDamaged(f"{path}: not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreDamaged(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # an integer of 5,000 digits; [[[[...]]]] nested too deep
        raise StoreDamaged(f"{path}: not readable JSON: {printable(exc, 100)}") from None
    try:
        return parse_manifest(path, raw)
    except StoreError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        # a shape the schema checks did not foresee: still the file's fault, still one line
        raise StoreDamaged(f"{path}: breaks the manifest schema ({type(exc).__name__}: {printable(exc, 100)})"
                           ) from None


# ---------------------------------------------------------------- chunks


class ChunkColumn(NamedTuple):
    """One channel of one chunk as read: a point is (timestamp, value, quality, detail, type)."""

    timestamps: list[float]
    #: typed as stored; None where the quality is not ok
    values: list[Value | None]
    units: str
    qualities: list[str]
    details: list[str]
    types: list[str]


#: a chunk as read: channel -> its column
ChunkChannels = dict[str, ChunkColumn]


def read_chunk(root: Path | str, data_id: str, flow: str, chunk_index: int,
               version: int = MANIFEST_VERSION) -> ChunkChannels:
    """One chunk file, checked against the contract of store ``version``: channel -> column.

    Timestamps must be Unix seconds a date can be made of, and each channel's lists must be as
    long as each other. Version 1 values are numbers (what the instrument said); version 2 values
    are of the channel's type where the quality is ok, and nil where it is not."""
    try:
        path = chunk_path(root, data_id, flow, chunk_index)
    except StoreLayoutError as exc:
        raise StoreDamaged(f"{Path(root) / printable(data_id, 80)}: {exc}") from None
    return _read_chunk_file(path, data_id, chunk_index, version)


def read_flow_chunks(root: Path | str, data_id: str, flow: str, indexes: Iterable[int],
                     version: int = MANIFEST_VERSION) -> Iterator[tuple[int, ChunkChannels]]:
    """The chunks ``indexes`` of one flow, in that order, each as :func:`read_chunk` gives it.

    The flow folder is checked once (resolving a path costs as much as reading a small chunk),
    each file then opened without following a symlink: the same guarantee, for a whole run."""
    try:
        folder = flow_dir(root, data_id, flow)
    except StoreLayoutError as exc:
        raise StoreDamaged(f"{Path(root) / printable(data_id, 80)}: {exc}") from None
    for index in indexes:
        try:
            name = chunk_file_name(index)
        except StoreLayoutError as exc:
            raise StoreDamaged(f"{folder}: {exc}") from None
        yield index, _read_chunk_file(folder / name, data_id, index, version)


def _read_chunk_file(path: Path, data_id: str, chunk_index: int, version: int) -> ChunkChannels:
    try:
        blob = read_bounded(path, CHUNK_MAX_BYTES, "chunk")
    except FileNotFoundError:
        raise StoreDamaged(f"{path}: vanished while being read") from None
    try:
        body = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise StoreDamaged(f"{path}: not a valid msgpack chunk ({type(exc).__name__}: {printable(exc, 100)})"
                           ) from None
    try:
        return parse_chunk(path, body, data_id, chunk_index, version)
    except StoreError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        raise StoreDamaged(f"{path}: breaks the chunk schema ({type(exc).__name__}: {printable(exc, 100)})"
                           ) from None


def parse_chunk(path: Path, body: object, data_id: str, chunk_index: int,
                version: int = MANIFEST_VERSION) -> ChunkChannels:
    """A decoded chunk body checked against the contract of store ``version``."""
    if not isinstance(body, dict):
        raise StoreDamaged(f"{path}: not a chunk (a msgpack map with data_id, chunk_index, channels)")
    if body.get("data_id") != data_id:
        raise StoreDamaged(f"{path}: data_id {shown(body.get('data_id'))} is not this run's {shown(data_id)}")
    if body.get("chunk_index") != chunk_index or isinstance(body.get("chunk_index"), bool):
        raise StoreDamaged(f"{path}: chunk_index {shown(body.get('chunk_index'))} does not match the file name")
    channels = body.get("channels")
    if not isinstance(channels, dict):
        raise StoreDamaged(f"{path}: channels should be a map, not {type(channels).__name__}")
    out: ChunkChannels = {}
    for name, data in channels.items():
        if not isinstance(name, str) or not name or not isinstance(data, dict):
            raise StoreDamaged(f"{path}: channel {shown(name)} should be a map with timestamps, values, units")
        shown_name = printable(name, 100)
        units = data.get("units")
        if not isinstance(units, str):
            raise StoreDamaged(f"{path}: channel {shown_name}: units should be text, not {shown(units)}")
        stamps = _numbers(path, shown_name, "timestamps", data.get("timestamps"), timestamps=True)
        n = len(stamps)
        if version == 1:
            values: list[Value | None] = list(_numbers(path, shown_name, "values", data.get("values"),
                                                       timestamps=False))
            if len(values) != n:
                raise StoreDamaged(f"{path}: channel {shown_name}: {n} timestamps but {len(values)} values")
            out[name] = ChunkColumn(stamps, values, units, ["ok"] * n, [""] * n, ["float"] * n)
            continue
        out[name] = _typed_column(path, shown_name, data, stamps, units)
    return out


def _texts(path: Path, channel: str, data: Mapping[str, Any], key: str, n: int, default: str,
           allowed: frozenset[str] | tuple[str, ...] | None = None) -> list[str]:
    """A per-point list of text (``quality``, ``detail``, ``types``), or ``default`` n times when absent."""
    seq = data.get(key)
    if seq is None:
        return [default] * n
    if not isinstance(seq, list) or len(seq) != n:
        raise StoreDamaged(f"{path}: channel {channel}: {key} should be a list of {n} (one per timestamp), not "
                           f"{shown(seq) if not isinstance(seq, list) else f'{len(seq)} items'}")
    for i, x in enumerate(seq):
        if not isinstance(x, str) or (allowed is not None and x not in allowed):
            raise StoreDamaged(f"{path}: channel {channel}: {key}[{i}] is not "
                               f"{'one of ' + ', '.join(sorted(allowed)) if allowed is not None else 'text'}: "
                               f"{shown(x)}")
    return seq


def _typed_column(path: Path, channel: str, data: Mapping[str, Any], stamps: list[float], units: str
                  ) -> ChunkColumn:
    """A version 2 column: each value of its point's type where the quality is ok, nil where it is not."""
    n = len(stamps)
    kind = data.get("type", ValueType.FLOAT.value)
    if kind not in _VALUE_TYPES:
        raise StoreDamaged(f"{path}: channel {channel}: type should be one of {', '.join(_VALUE_TYPES)}, not "
                           f"{shown(kind)}")
    types = _texts(path, channel, data, "types", n, kind, _VALUE_TYPES)
    qualities = _texts(path, channel, data, "quality", n, Quality.OK.value, _QUALITIES)
    details = _texts(path, channel, data, "detail", n, "")
    values = data.get("values")
    if not isinstance(values, list):
        raise StoreDamaged(f"{path}: channel {channel}: values should be a list, not {type(values).__name__}")
    if len(values) != n:
        raise StoreDamaged(f"{path}: channel {channel}: {n} timestamps but {len(values)} values")
    out: list[Value | None] = []
    for i, value in enumerate(values):
        point_type = ValueType(types[i])
        if qualities[i] != Quality.OK.value:
            if value is not None:
                raise StoreDamaged(f"{path}: channel {channel}: values[{i}] of quality {qualities[i]} should be "
                                   f"nil, not {shown(value)}")
            out.append(None)
        elif point_type is ValueType.FLOAT:
            if isinstance(value, bool) or not isinstance(value, float | int):
                raise StoreDamaged(f"{path}: channel {channel}: values[{i}] is not a number: {shown(value)}")
            out.append(float(value))
        elif value_fits(value, point_type):
            out.append(value)
        else:
            raise StoreDamaged(f"{path}: channel {channel}: values[{i}] is not of type {point_type}: {shown(value)}")
    return ChunkColumn(stamps, out, units, qualities, details, types)


def _numbers(path: Path, channel: str, key: str, seq: object, *, timestamps: bool) -> list[float]:
    if not isinstance(seq, list):
        raise StoreDamaged(f"{path}: channel {channel}: {key} should be a list, not {type(seq).__name__}")
    for i, x in enumerate(seq):
        if isinstance(x, bool) or not isinstance(x, float | int):
            raise StoreDamaged(f"{path}: channel {channel}: {key}[{i}] is not a number: {shown(x)}")
        if timestamps and not is_timestamp(x):
            raise StoreDamaged(f"{path}: channel {channel}: {key}[{i}] is not a time (Unix seconds, "
                               f"1970..9999): {shown(x)}")
    return [float(x) for x in seq]


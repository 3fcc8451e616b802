"""A run as a table: CSV or Parquet, long format, one row per point.

Long rather than wide: the flows of a run have their own timestamps (each instrument is polled
on its own interval), so a wide table would be mostly empty cells or invented alignment. One
row per point keeps every value with its own timestamp, unit and quality, loses nothing, and is
what ``pandas.read_csv(...).pivot(...)`` or a spreadsheet pivot table wants anyway.

Columns (both formats): ``timestamp_iso`` (UTC), ``timestamp`` (Unix seconds, the bridge's
clock), ``channel`` (``instrument/channel``), ``value``, ``units``, ``quality`` (``ok``, or why
there is no value: ``sensor_off``, ``under_range``...), ``detail`` (what the instrument said
about it, empty where it said nothing) and ``type`` (``float``, ``int``, ``bool``, ``enum``,
``string``, ``bits``). A point whose quality is not ok has an empty ``value``. A version 1 store
holds ok points only (docs/store.md), so its export has no other quality. A run's events
(``runs export --events``) are a table of their own, in log order: ``timestamp_iso``,
``timestamp``, ``seq``, ``source``, ``text``, ``tags`` (joined with ``;``). Rows are sorted by
channel, then time (stable, so chunk order breaks ties). Numbers are written with Python's
shortest round-trip representation, so ``float(cell)`` gives back exactly the stored double; an
integer as its digits, a bool as ``true`` or ``false``, a text as it is.

In Parquet ``timestamp_iso`` is a real ``timestamp[us, UTC]`` column (Parquet has no use for a
date string), ``timestamp`` is float64, ``value`` float64 (null without a value; a bool as 0 or
1, an integer exact), ``value_text`` the value of an enum or string channel (null otherwise),
and the units of each channel are also attached as field metadata of ``value``; the file
metadata carries the run's manifest.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple

from bridge.model import Value
from bridge.store.reader import Manifest, MissingExtra, RunData, StoreError

COLUMNS = ("timestamp_iso", "timestamp", "channel", "value", "units", "quality", "detail", "type")
EVENT_COLUMNS = ("timestamp_iso", "timestamp", "seq", "source", "text", "tags")
#: joins an event's tags in one cell (a tag may hold anything but control characters; ``;`` reads well)
TAG_SEPARATOR = ";"
FORMATS = ("csv", "parquet")


class Row(NamedTuple):
    timestamp: float
    channel: str
    value: Value | None
    units: str
    quality: str = "ok"
    detail: str = ""
    type: str = "float"


def rows(run: RunData) -> Iterator[Row]:
    """Every point of the run, by channel then time."""
    for name, s in run.series.items():
        order = sorted(range(len(s)), key=s.timestamps.__getitem__)
        for i in order:
            yield Row(s.timestamps[i], name, s.values[i], s.units[i], s.qualities[i], s.details[i], s.types[i])


def cell(value: Value | None) -> str:
    """A value as a CSV cell that reads back exactly: ``1.5e-07``, ``42``, ``true``, ``CV``; empty for none."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def number(value: Value | None) -> float | None:
    """A value as a Parquet ``value`` (float64): numbers and bools (0, 1); None for none and for text."""
    if value is None or isinstance(value, str):
        return None
    return float(value)


def iso(ts: float) -> str:
    """``2025-11-21T04:40:00.123456Z``: microseconds, the precision a float timestamp has."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: characters of the stream name kept in a default file name (file systems allow 255 bytes)
STEM_MAX = 64


def default_name(manifest: Manifest, fmt: str, what: str = "") -> Path:
    """``GaN-17-1a2b3c4d.csv`` (``GaN-17-1a2b3c4d-events.csv`` for ``what="events"``) in the current
    directory: the stream name a person recognises, the short id that keeps two runs of the same
    name apart.

    The stream name is only a hint: anything but ASCII letters, digits, ``.``, ``_``, ``-`` becomes
    ``_`` (no ``/``, so no ``..`` path) and it is cut to STEM_MAX characters, so whatever the
    manifest says the file lands in the current folder with a name every file system takes."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", manifest.stream_name)[:STEM_MAX].strip("._") or "run"
    return Path(f"{stem}-{manifest.short_id}{'-' + what if what else ''}.{fmt}")


def write_csv_to(run: RunData, stream: IO[str]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for r in rows(run):
        writer.writerow((iso(r.timestamp), repr(r.timestamp), r.channel, cell(r.value), r.units, r.quality, r.detail,
                         r.type))
        count += 1
    return count


def write_csv(run: RunData, out: Path | None) -> int:
    """The run as CSV to ``out`` (atomically), or to stdout when ``out`` is None; the row count."""
    if out is None:
        return write_csv_to(run, sys.stdout)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        return write_csv_to(run, handle)


def write_parquet(run: RunData, out: Path) -> int:
    """The run as Parquet (needs pyarrow, the ``server`` extra); the row count."""
    try:
        import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra("export --format parquet", "pyarrow") from None
    table_rows = list(rows(run))
    units = {name: s.unit for name, s in run.series.items()}
    schema = pa.schema(
        [
            pa.field("timestamp_iso", pa.timestamp("us", tz="UTC"), nullable=False,
                     metadata={"description": "time of the reading, UTC"}),
            pa.field("timestamp", pa.float64(), nullable=False,
                     metadata={"description": "time of the reading, Unix seconds (the bridge's clock)",
                               "units": "s"}),
            pa.field("channel", pa.dictionary(pa.int32(), pa.string()), nullable=False),
            pa.field("value", pa.float64(), nullable=True,
                     metadata={"units": json.dumps(units, ensure_ascii=False),
                               "description": "the value; null without one (quality not ok) or for text"}),
            pa.field("units", pa.dictionary(pa.int32(), pa.string()), nullable=False),
            pa.field("quality", pa.dictionary(pa.int32(), pa.string()), nullable=False),
            pa.field("detail", pa.string(), nullable=False),
            pa.field("type", pa.dictionary(pa.int32(), pa.string()), nullable=False),
            pa.field("value_text", pa.string(), nullable=True,
                     metadata={"description": "the value of an enum or string channel"}),
        ],
        metadata={"chamber_bridge.manifest": json.dumps(run.manifest.raw, ensure_ascii=False),
                  "chamber_bridge.columns": "long format: one row per point, sorted by channel then time"},
    )
    stamps = [r.timestamp for r in table_rows]
    table = pa.table(
        {
            "timestamp_iso": pa.array([round(t * 1_000_000) for t in stamps], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")),
            "timestamp": pa.array(stamps, pa.float64()),
            "channel": pa.array([r.channel for r in table_rows], pa.string()).dictionary_encode(),
            "value": pa.array([number(r.value) for r in table_rows], pa.float64()),
            "units": pa.array([r.units for r in table_rows], pa.string()).dictionary_encode(),
            "quality": pa.array([r.quality for r in table_rows], pa.string()).dictionary_encode(),
            "detail": pa.array([r.detail for r in table_rows], pa.string()),
            "type": pa.array([r.type for r in table_rows], pa.string()).dictionary_encode(),
            "value_text": pa.array([r.value if isinstance(r.value, str) else None for r in table_rows],
                                   pa.string()),
        },
        schema=schema,
    )
    with atomic_path(out) as tmp:
        pq.write_table(table, str(tmp))
    return len(table_rows)


def write_events_csv(manifest: Manifest, out: Path | None) -> int:
    """The run's events as CSV to ``out`` (atomically), or to stdout when ``out`` is None; the row count."""
    if out is None:
        return _events_csv_to(manifest, sys.stdout)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        return _events_csv_to(manifest, handle)


def _events_csv_to(manifest: Manifest, stream: IO[str]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EVENT_COLUMNS)
    for e in manifest.events:
        writer.writerow((iso(e.time), repr(e.time), "" if e.seq is None else e.seq, e.source, e.text,
                         TAG_SEPARATOR.join(e.tags)))
    return len(manifest.events)


def write_events_parquet(manifest: Manifest, out: Path) -> int:
    """The run's events as Parquet (needs pyarrow); ``tags`` a list column; the row count."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtra("export --events --format parquet", "pyarrow") from None
    events = manifest.events
    table = pa.table({
        "timestamp_iso": pa.array([round(e.time * 1_000_000) for e in events], pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "timestamp": pa.array([e.time for e in events], pa.float64()),
        "seq": pa.array([e.seq for e in events], pa.int64()),
        "source": pa.array([e.source for e in events], pa.string()),
        "text": pa.array([e.text for e in events], pa.string()),
        "tags": pa.array([list(e.tags) for e in events], pa.list_(pa.string())),
    }).replace_schema_metadata({"chamber_bridge.manifest": json.dumps(manifest.raw, ensure_ascii=False)})
    with atomic_path(out) as tmp:
        pq.write_table(table, str(tmp))
    return len(events)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write, renamed to ``path`` on success: a failed export never leaves a
    half-written file that looks like a good one."""
    if not path.name or path.name in (".", ".."):
        raise StoreError(f"{path}: not a file name to write to")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)

"""The uploader's durable intake: every log entry of every bridge, once, before anything is acknowledged.

Why: the bridge trims its outbox as soon as the uploader's ack covers a seq, so the ack may
only be sent after the entry is on the uploader's disk (docs/design.md section 3). Entries are
keyed by (site, epoch, seq): duplicates, which the bridge's resends make certain, are dropped
here (``seq <= contiguous`` or already held). For each source (site, epoch) the spool keeps
``contiguous``, the highest seq such that every seq up to it is held: that is the ack.

Storage: one SQLite database ``{uploader.state_dir}/spool.sqlite``, WAL, ``synchronous=FULL``,
shared with the ledger (bridge/uploader/ledger.py), which cuts the held entries into chunks
and deletes them once their run is finalized. Readings are stored as columns, not as their
msgpack body, so the ledger builds chunks without decoding anything.

The spool is bounded: past ``max_entries`` held entries it raises its alarm (status topic,
log) and stops taking new messages; they are not acknowledged, so they stay in the bridges'
outboxes and come again. Nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bridge.crashpoints import crash_point
from bridge.durable import connect_durable, lock_exclusively
from bridge.errors import BridgeError
from bridge.uploader import quarantine
from bridge.uploader.quarantine import BadInput
from bridge.wire.contract import Batch, pack

log = logging.getLogger(__name__)

SPOOL_FILE: Final = "spool.sqlite"

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    # one row per log entry not yet finalized; readings as columns, markers with their body
    "CREATE TABLE IF NOT EXISTS entries (site TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,"
    " kind TEXT NOT NULL, time REAL NOT NULL, flow TEXT, channel TEXT, value REAL, quality TEXT, t REAL,"
    " units TEXT, detail TEXT, body BLOB, poll REAL, vtype TEXT, vtext TEXT, PRIMARY KEY (site, epoch, seq))"
    " WITHOUT ROWID",
    # one row per bridge outbox seen: where its log stands here
    "CREATE TABLE IF NOT EXISTS sources (site TEXT NOT NULL, epoch TEXT NOT NULL,"
    " contiguous INTEGER NOT NULL DEFAULT 0, max_seq INTEGER NOT NULL DEFAULT 0,"
    " cursor INTEGER NOT NULL DEFAULT 0, open_run TEXT, gap_since REAL, first_seen REAL NOT NULL,"
    " last_arrival REAL NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0,"
    " idle_trimmed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (site, epoch)) WITHOUT ROWID",
    # the ledger (bridge/uploader/ledger.py)
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, site TEXT NOT NULL, epoch TEXT NOT NULL,"
    " start_seq INTEGER NOT NULL, start TEXT NOT NULL, started_at REAL NOT NULL, stop_seq INTEGER, stop TEXT,"
    " stopped_at REAL, data_id TEXT, state TEXT NOT NULL, gaps TEXT NOT NULL DEFAULT '[]',"
    " retries INTEGER NOT NULL DEFAULT 0, finalized_at REAL, report TEXT, first_seq INTEGER) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS flows (run_id TEXT NOT NULL, flow TEXT NOT NULL, cutter TEXT NOT NULL,"
    " PRIMARY KEY (run_id, flow)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS chunks (run_id TEXT NOT NULL, flow TEXT NOT NULL, chunk_index INTEGER NOT NULL,"
    " first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, points INTEGER NOT NULL,"
    " confirmed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, flow, chunk_index)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS chunks_pending ON chunks (confirmed, run_id, first_seq)",
    # every event (annotation) the bridges logged, kept after its run is finalized: a run's are in its
    # manifest too, those outside runs only here (the history: docs/store.md)
    "CREATE TABLE IF NOT EXISTS events (site TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,"
    " time REAL NOT NULL, run_id TEXT, text TEXT NOT NULL, tags TEXT NOT NULL, source TEXT NOT NULL,"
    " PRIMARY KEY (site, epoch, seq)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS events_run ON events (run_id, seq)",
    *quarantine.SCHEMA,
)


#: columns named: a spool migrated from an older format has them in the same order, but say so
_INSERT: Final = ("INSERT OR IGNORE INTO entries (site, epoch, seq, kind, time, flow, channel, value, quality, t,"
                  " units, detail, body, poll, vtype, vtext) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a spool written by an earlier version up to this schema (columns are only ever added)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    if "poll" not in columns:  # the poll mark (docs/payload.md ``p``), added after format 1 shipped
        db.execute("ALTER TABLE entries ADD COLUMN poll REAL")
    # a reading's value type (docs/payload.md ``y``, NULL for a float) and the text of an enum or
    # string value: the REAL column would turn a text like "1.5" into a number
    for column in ("vtype", "vtext"):
        if column not in columns:
            db.execute(f"ALTER TABLE entries ADD COLUMN {column} TEXT")
    # a run whose delivery failed: why, when it is tried again, how often it failed (docs/security.md)
    run_columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    # ... where an automatic run's pre-roll begins (null: at its start marker), and the run's
    # baselines, {"start": {...}, "stop": {...}} (docs/store.md)
    for column, kind in (("failure", "TEXT"), ("retry_at", "REAL"), ("failures", "INTEGER NOT NULL DEFAULT 0"),
                         ("first_seq", "INTEGER"), ("baseline", "TEXT")):
        if column not in run_columns:
            db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
    # the highest idle reading given up as older than the longest pre-roll (bridge/uploader/ledger.py)
    if "idle_trimmed" not in {row[1] for row in db.execute("PRAGMA table_info(sources)")}:
        db.execute("ALTER TABLE sources ADD COLUMN idle_trimmed INTEGER NOT NULL DEFAULT 0")


class SpoolError(BridgeError):
    """The spool cannot be opened or cannot commit (disk full, I/O error, already in use).

    ``data_error`` is true when the data, not the disk, was the cause (a value SQLite cannot
    store): retrying the same messages would fail forever, so they are quarantined instead.
    """

    def __init__(self, message: str, *, data_error: bool = False) -> None:
        super().__init__(message)
        self.data_error = data_error


def open_spool_db(state_dir: Path) -> sqlite3.Connection:
    """A connection to the spool database (each thread takes its own)."""
    try:
        db = connect_durable(state_dir / SPOOL_FILE, SCHEMA, [("format", 1)])
        _migrate(db)
        # the pass reads back what intake has just written: keep it in memory (64 MiB; a lab server)
        db.execute("PRAGMA cache_size=-65536")
        return db
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open the spool {state_dir / SPOOL_FILE}: {exc}") from exc


@dataclass(slots=True)
class Intake:
    """What one commit did: per source, the new contiguous seq, plus counts for status and logs."""

    contiguous: dict[tuple[str, str], int] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    new_sources: list[tuple[str, str]] = field(default_factory=list)


class Spool:
    """The intake side: commits batches and keeps each source's contiguous seq. One thread uses it."""

    def __init__(self, state_dir: Path, *, max_entries: int = 20_000_000,
                 write_lock: threading.Lock | None = None) -> None:
        self.path = state_dir / SPOOL_FILE
        try:
            self._lock_fd = lock_exclusively(self.path, f"the spool {self.path} is in use by another process"
                                             " (is a second uploader running on this state_dir?)")
        except BlockingIOError as exc:
            raise SpoolError(str(exc)) from None
        self._db = open_spool_db(state_dir)
        self._write_lock = write_lock or threading.Lock()
        self.max_entries = max_entries
        (self._held,) = self._db.execute("SELECT count(*) FROM entries").fetchone()

    @property
    def held(self) -> int:
        """Entries in the spool (received and not yet part of a finalized run), as of the last commit."""
        return int(self._held)

    @property
    def full(self) -> bool:
        return bool(self._held >= self.max_entries)

    def refresh_held(self) -> int:
        (self._held,) = self._db.execute("SELECT count(*) FROM entries").fetchone()
        return self.held

    def commit(self, batches: Iterable[Batch], now: float | None = None, bad: list[BadInput] | None = None) -> Intake:
        """Store the batches' new entries in one durable transaction; duplicates are dropped.

        Entries the contract refused (``Batch.refused``) whose seq is known are held as
        ``refused`` placeholders, so the source's log moves on past them and the run's report
        names them; ``bad`` (refused messages and entries) is quarantined in the same transaction.
        """
        now = time.time() if now is None else now
        intake = Intake()
        db = self._db
        with self._write_lock:
            return self._commit(db, batches, now, intake, bad or [])

    def _commit(self, db: sqlite3.Connection, batches: Iterable[Batch], now: float, intake: Intake,
                bad: list[BadInput]) -> Intake:
        try:
            db.execute("BEGIN IMMEDIATE")
            quarantine.record(db, bad, now)
            sources: dict[tuple[str, str], list[int]] = {}  # contiguous, max_seq, duplicates
            duplicates_before = 0
            for batch in batches:
                key = (batch.site, batch.epoch)
                state = sources.get(key)
                if state is None:
                    row = db.execute("SELECT contiguous, max_seq, duplicates FROM sources WHERE site=? AND epoch=?",
                                     key).fetchone()
                    if row is None:
                        db.execute("INSERT INTO sources (site, epoch, first_seen, last_arrival) VALUES (?, ?, ?, ?)",
                                   (*key, now, now))
                        intake.new_sources.append(key)
                        row = (0, 0, 0)
                    state = sources[key] = list(row)
                    duplicates_before += state[2]
                contiguous = state[0]
                rows: list[tuple[Any, ...]] = []
                for e in batch.entries:
                    if e.seq <= contiguous:
                        state[2] += 1
                        continue
                    if e.kind == "reading":
                        b = e.body
                        v = b.get("v")
                        text = v if type(v) is str else None  # an enum's or a string's value
                        rows.append((batch.site, batch.epoch, e.seq, e.kind, e.time, b.get("i"), b.get("c"),
                                     None if text is not None else v, b.get("q"), b.get("t"), b.get("u"), b.get("d"),
                                     None, b.get("p"), b.get("y"), text))
                    else:
                        rows.append((batch.site, batch.epoch, e.seq, e.kind, e.time, None, None, None, None, None,
                                     None, None, pack(e.body), None, None, None))
                for r in batch.refused:
                    if r.seq is not None and r.seq > contiguous:
                        rows.append((batch.site, batch.epoch, r.seq, "refused", now, None, None, None, None, None,
                                     None, None, pack({"reason": r.reason, "detail": r.detail[:1000]}), None, None,
                                     None))
                if rows:
                    before = db.total_changes
                    db.executemany(_INSERT, rows)
                    stored = db.total_changes - before
                    intake.stored += stored
                    state[2] += len(rows) - stored
                    state[1] = max(state[1], max(r[2] for r in rows))
            for key, (before, max_seq, duplicates) in sources.items():
                contiguous = self._advance(key, before, max_seq)
                # gap_since dates the first missing seq: if contiguous moved, the hole now in front is
                # another one, whose grace period starts now (not when the filled one was first missed)
                gap_since = None if contiguous >= max_seq else now
                db.execute(
                    "UPDATE sources SET contiguous=?, max_seq=max(max_seq, ?), duplicates=?, last_arrival=?,"
                    " gap_since=CASE WHEN ? IS NULL THEN NULL WHEN ? THEN ? ELSE coalesce(gap_since, ?) END"
                    " WHERE site=? AND epoch=?",
                    (contiguous, max_seq, duplicates, now, gap_since, contiguous > before, now, now, *key))
                intake.contiguous[key] = contiguous
            crash_point("spool.before_commit")
            db.execute("COMMIT")
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            # OperationalError is the disk's (full, I/O, locked); anything else is the data's
            raise SpoolError(f"cannot commit to the spool {self.path}: {exc}",
                             data_error=not isinstance(exc, sqlite3.OperationalError)) from exc
        self._held += intake.stored
        intake.duplicates = sum(state[2] for state in sources.values()) - duplicates_before
        return intake

    def epochs(self, site: str) -> list[str]:
        """The outbox epochs seen from ``site``, oldest first."""
        return [e for (e,) in self._db.execute("SELECT epoch FROM sources WHERE site=? ORDER BY first_seen", (site,))]

    def _advance(self, key: tuple[str, str], contiguous: int, max_seq: int) -> int:
        """Walk forward from ``contiguous`` over the seqs held without a hole."""
        while contiguous < max_seq:
            seqs = [s for (s,) in self._db.execute(
                "SELECT seq FROM entries WHERE site=? AND epoch=? AND seq>? ORDER BY seq LIMIT 10000",
                (*key, contiguous))]
            for seq in seqs:
                if seq != contiguous + 1:
                    return contiguous
                contiguous = seq
            if len(seqs) < 10000:
                break
        return contiguous

    def close(self) -> None:
        self._db.close()
        os.close(self._lock_fd)

"""The bridge's durable, ordered log: every reading and run marker, kept until the uploader acknowledges it.

Why it exists: a QoS1 PUBACK does not make a message safe (a slow subscriber past the broker's
queue limit, a broker crash between autosaves, an MQTT v5 session without expiry all lose
PUBACKed messages), and paho keeps its queue in memory only (docs/design.md section 12). So each entry
is first committed here under the next ``seq`` of this outbox's ``epoch``, published from
here, and trimmed only when the uploader's ack on ``{prefix}/{site}/ack`` covers it.

How it is stored (docs/design.md section 3): one SQLite database in WAL mode with
``synchronous=FULL`` (WAL+NORMAL can roll back a committed transaction on power loss), and
**group commit**: :meth:`Outbox.append` only buffers; a committer thread writes the buffer in
one transaction at most ``commit_interval`` seconds after its first entry or as soon as it
holds ``commit_rows`` rows. Measured by benchmarks/outbox_disk_bytes.py: one transaction per
reading writes about 8.4 KB per reading; group commit about 0.5 KB at the nominal 300
readings/s and about 0.15 KB at full speed.
Markers (:meth:`Outbox.append_marker`: run markers and events) are committed at once, with
everything buffered before them, because a CLI is waiting for them.

Seq: one counter per outbox, handed out in append order, never reused. The highest seq ever
committed is the larger of the highest seq in ``entries`` and ``meta.last_seq``, which every
trim (the only place rows leave) records in the transaction that deletes them; so trimming
every entry and restarting still continues after it, and group commits need not rewrite the
meta page (a fifth less written per reading at the nominal load). Entries buffered but not
committed when the process dies were never visible to anyone (only committed entries are
published), so their numbers are free again and the log stays gap-free, which the
uploader's "highest contiguous seq" relies on.

**Overflow policy** (also in docs/payload.md): when :meth:`Outbox.depth` (committed plus
buffered, unacknowledged) reaches ``max_entries``, the alarm is raised; while it is at or
above the limit, new *readings* are refused and counted in :attr:`Outbox.overflow` (they get
no seq, so no gap appears in the log); markers are always accepted, so a run can still be
closed and an operator's annotation is never refused. The alarm clears when depth falls below
90 % of ``max_entries``. The oldest data is kept rather than overwritten: it is the start of
the run the uploader is still waiting for.

A commit that fails (disk full, I/O error) keeps its rows buffered and is retried with capped
backoff by the committer; :meth:`Outbox.flush` and :meth:`Outbox.append_marker` raise
:class:`OutboxError` so no caller is told data is durable when it is not.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from time import time as wall_clock
from types import TracebackType
from typing import Any, Final

from bridge.crashpoints import crash_point
from bridge.durable import connect_durable, lock_exclusively
from bridge.errors import BridgeError
from bridge.wire.contract import ENTRY_KINDS, MARKERS, EntryKind, LogEntry, StoredEntry, pack, unpack_body

log = logging.getLogger(__name__)

#: the overflow alarm clears when depth falls below this fraction of ``max_entries``
CLEAR_FRACTION: Final = 0.9
#: the longest the committer waits between retries of a failing commit
MAX_RETRY_DELAY: Final = 2.0

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, time REAL NOT NULL,"
    " body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
)

#: run state the bridge keeps across restarts beside the open run, as JSON in ``meta``
#: (bridge/edge/runs.py): whether automatic runs are switched on (null: as configured), and the
#: metadata ``next-run`` set for the next run
STATE_KEYS: Final = ("auto", "next_run")

_Row = tuple[int, str, float, bytes]


class OutboxError(BridgeError):
    """The outbox cannot be opened or cannot commit (disk full, I/O error, already in use)."""


@dataclass(frozen=True, slots=True)
class OverflowState:
    """The overflow alarm and how many readings were refused since this outbox was opened."""

    alarm: bool
    refused: int


class _Keep(enum.Enum):
    KEEP = enum.auto()


#: ``append_marker(..., open_run=KEEP)`` leaves the persisted open run as it is
KEEP: Final = _Keep.KEEP


class Outbox:
    """The seq-numbered log in one SQLite file; thread-safe. See the module docstring for the policy."""

    def __init__(self, path: Path, *, max_entries: int = 5_000_000, commit_interval: float = 0.1,
                 commit_rows: int = 500) -> None:
        if max_entries < 1 or commit_rows < 1 or not commit_interval > 0:
            raise ValueError("max_entries and commit_rows must be >= 1 and commit_interval > 0")
        self.path = Path(path)
        self._max = max_entries
        self._interval = commit_interval
        self._rows = commit_rows
        self._lock_fd = _lock_exclusively(self.path)
        opened: list[sqlite3.Connection] = []
        try:
            self._db = _connect(self.path)
            opened.append(self._db)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            (max_seq,) = self._db.execute("SELECT max(seq) FROM entries").fetchone()
            # pending() reads through a connection of its own: WAL lets it read while a commit
            # waits for the disk, so the publisher is not held up by fsyncs (slow on an SD card)
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            opened.append(self._reader)
            self._reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            for connection in opened:
                connection.close()
            os.close(self._lock_fd)
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc
        self.epoch: str = str(meta["epoch"])
        self._acked: int = int(meta["acked_seq"])
        self._last: int = max(int(meta["last_seq"]), max_seq or 0)
        self._last_at_open = self._last
        self._open_run_json: str = str(meta["open_run"])
        self._state_json: dict[str, str] = {key: str(meta[key]) for key in STATE_KEYS}
        # the time of the last entry ever committed: the newest row's, or (every row trimmed) the
        # one recorded beside last_seq at the last trim; it says how long a restarted bridge was down
        last_time = None
        if max_seq is not None:  # rows are left only above the last trim, so the newest is the last committed
            (last_time,) = self._db.execute("SELECT time FROM entries WHERE seq = ?", (max_seq,)).fetchone()
        elif meta["last_time"] is not None:
            last_time = meta["last_time"]
        self._last_time: float | None = None if last_time is None else float(last_time)
        # _db_lock serialises use of the connection and is held from taking the buffer to the
        # end of its commit, so commits land in seq order; _lock guards the buffer and counters
        # and is only ever taken inside _db_lock, never around it.
        self._db_lock = threading.Lock()
        self._reader_lock = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._next = self._last + 1
        self._buffer: list[_Row] = []
        self._first_buffered = 0.0
        self._alarm = False
        self._refused = 0
        self._stopping = False
        self._stop = threading.Event()
        self._failing = False
        self._commit_error: str | None = None
        self._committer = threading.Thread(target=self._commit_loop, name=f"outbox-{self.path.name}", daemon=True)
        self._committer.start()

    # ---------------------------------------------------------------- writing

    def append(self, kind: EntryKind, body: dict[str, Any], time: float | None = None) -> int | None:
        """Buffer one entry; the committer makes it durable within ``commit_interval``. Its seq, or None if refused.

        A reading is refused (and counted in :attr:`overflow`) while the outbox is full.
        ``time`` defaults to now on the bridge's clock.

        A marker (:meth:`append_marker`) commits everything buffered before it in its own
        transaction, so a marker may name an earlier seq that is only buffered yet: an automatic
        run's ``pre_roll_from``, the first reading of its pre-roll (bridge/edge/triggers.py).
        """
        if kind not in ENTRY_KINDS:
            raise ValueError(f"unknown entry kind {kind!r} (expected one of {', '.join(ENTRY_KINDS)})")
        blob = pack(body)
        stamp = wall_clock() if time is None else time
        with self._lock:
            if self._stopping:
                raise OutboxError(f"the outbox {self.path} is closed")
            if kind not in MARKERS and self._next - 1 - self._acked >= self._max:
                self._refused += 1
                self._raise_alarm()
                return None
            seq = self._next
            self._buffer.append((seq, kind, stamp, blob))
            self._next += 1
            buffered = len(self._buffer)
            if buffered == 1:
                self._first_buffered = monotonic()
                self._wake.notify()
            elif buffered == self._rows:
                self._wake.notify()
            if self._next - 1 - self._acked >= self._max:
                self._raise_alarm()
            return seq

    def append_marker(self, kind: EntryKind, body: dict[str, Any],
                      open_run: dict[str, Any] | _Keep | None = KEEP, *, state: Mapping[str, Any] | None = None,
                      time: float | None = None) -> int:
        """Commit a marker now, after everything buffered before it, and return its seq.

        ``open_run`` (the open run's start body, or None once it is closed) and ``state`` (keys of
        :data:`STATE_KEYS`) are persisted in the same transaction, so a crash cannot leave a
        marker without the matching run state. ``time`` defaults to now on the bridge's clock.
        """
        if kind not in MARKERS:
            raise ValueError(f"{kind!r} is not a marker (expected one of {', '.join(sorted(MARKERS))})")
        blob = pack(body)
        run_json = None if open_run is KEEP else json.dumps(open_run)
        states = self._state_rows(state or {})
        stamp = wall_clock() if time is None else time
        # _lock is held through the commit so no append takes a seq after the marker's: if the
        # commit fails, the marker's seq is handed back and the log stays gap-free.
        with self._db_lock, self._lock:
            if self._stopping:
                raise OutboxError(f"the outbox {self.path} is closed")
            seq = self._next
            rows = [*self._buffer, (seq, kind, stamp, blob)]
            self._write(rows, run_json, states)
            self._buffer = []
            self._next = seq + 1
            if self._next - 1 - self._acked >= self._max:
                self._raise_alarm()
            if run_json is not None:
                self._open_run_json = run_json
            self._state_json.update(states)
            return seq

    def flush(self) -> int | None:
        """Commit everything buffered now; the last committed seq (None if nothing ever was)."""
        with self._db_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
            if rows:
                try:
                    self._write(rows, None)
                except OutboxError:
                    with self._lock:
                        self._buffer[:0] = rows
                    raise
            return self._last or None

    @property
    def open_run(self) -> dict[str, Any] | None:
        """The open run's start body as persisted, or None; a crashed run is still open here on restart."""
        value: dict[str, Any] | None = json.loads(self._open_run_json)
        return value

    @open_run.setter
    def open_run(self, value: dict[str, Any] | None) -> None:
        run_json = json.dumps(value)
        with self._db_lock:
            self._write([], run_json)
            self._open_run_json = run_json

    def state(self, key: str) -> Any:
        """A persisted run state value (:data:`STATE_KEYS`), as it was last set; None if never."""
        if key not in STATE_KEYS:
            raise KeyError(f"{key!r} is not an outbox state key (expected one of {', '.join(STATE_KEYS)})")
        return json.loads(self._state_json[key])

    def set_state(self, **values: Any) -> None:
        """Persist run state values (:data:`STATE_KEYS`) durably now, without logging an entry."""
        states = self._state_rows(values)
        with self._db_lock:
            self._write([], None, states)
            self._state_json.update(states)

    @staticmethod
    def _state_rows(values: Mapping[str, Any]) -> dict[str, str]:
        unknown = [key for key in values if key not in STATE_KEYS]
        if unknown:
            raise KeyError(f"{unknown[0]!r} is not an outbox state key (expected one of {', '.join(STATE_KEYS)})")
        return {key: json.dumps(value) for key, value in values.items()}

    @property
    def last_entry_time(self) -> float | None:
        """The ``time`` of the last entry ever committed, trimmed or not (None for a new outbox).

        A bridge that restarts reads it to know how long it was down (docs/runs.md, resume).
        """
        return self._last_time

    # ---------------------------------------------------------------- reading and trimming

    def pending(self, after_seq: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` committed entries with seq > ``after_seq``, in seq order."""
        return [LogEntry(seq, kind, time, unpack_body(body))  # type: ignore[arg-type]
                for seq, kind, time, body in self.pending_stored(after_seq, limit)]

    def pending_stored(self, after_seq: int, limit: int) -> list[StoredEntry]:
        """The same with bodies as stored (msgpack), for the publisher to splice into a batch."""
        if self._last <= after_seq:
            return []  # nothing committed beyond it: no query (the publisher asks every few ms)
        with self._reader_lock:
            rows: list[StoredEntry] = self._reader.execute(
                "SELECT seq, kind, time, body FROM entries WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit),
            ).fetchall()
        return rows

    def acknowledge(self, epoch: str, seq: int) -> int:
        """Trim every entry up to ``seq`` of ``epoch`` and persist it as acknowledged; the rows trimmed.

        An ack for another epoch (an uploader that remembers a wiped outbox) or an old ack is
        ignored; an ack beyond the last committed seq is trimmed only to that seq.
        """
        if epoch != self.epoch:
            log.debug("ignoring an ack for epoch %s (this outbox is %s)", epoch, self.epoch)
            return 0
        with self._db_lock:
            target = min(seq, self._last)
            if target <= self._acked:
                return 0
            if seq > self._last:
                log.warning("ack for seq %d is beyond the last committed seq %d; trimming up to it", seq, target)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                trimmed = self._db.execute("DELETE FROM entries WHERE seq <= ?", (target,)).rowcount
                # rows leave only here, with the highest committed seq recorded beside them (module docstring)
                self._db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                     [(target, "acked_seq"), (self._last, "last_seq"),
                                      (self._last_time, "last_time")])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._commit_error = str(exc)
                raise OutboxError(f"cannot trim the outbox {self.path}: {exc}") from exc
            with self._lock:
                self._acked = target
                if self._alarm and self._next - 1 - self._acked < CLEAR_FRACTION * self._max:
                    self._alarm = False
                    log.info("outbox below %d%% of its %d entries again; accepting readings",
                             CLEAR_FRACTION * 100, self._max)
            return int(trimmed)

    @property
    def acked_seq(self) -> int:
        """The highest seq the uploader has acknowledged (0 before the first ack)."""
        return self._acked

    @property
    def committed_at_open(self) -> int:
        """The highest seq committed before this process opened the outbox (0 for a new one).

        A previous process of this epoch may have published any of these, so an ack up to it is
        legitimate even before this process has published anything (the publisher's ack check).
        """
        return self._last_at_open

    @property
    def handed_out(self) -> int:
        """The highest seq given to an entry so far, committed or still buffered (0 for a new outbox)."""
        with self._lock:
            return self._next - 1

    @property
    def last_seq(self) -> int | None:
        """The highest seq ever committed, trimmed or not (None for a new outbox)."""
        return self._last or None

    def depth(self) -> int:
        """Entries not yet acknowledged, committed or still buffered."""
        with self._lock:
            return self._next - 1 - self._acked

    def oldest_unacked_time(self) -> float | None:
        """The ``time`` of the oldest unacknowledged entry, None if there is none."""
        with self._db_lock:
            row = self._db.execute("SELECT time FROM entries ORDER BY seq LIMIT 1").fetchone()
            if row is not None:
                return float(row[0])
            with self._lock:
                return self._buffer[0][2] if self._buffer else None

    @property
    def commit_error(self) -> str | None:
        """Why commits fail right now (disk full, I/O error), None while they succeed: the status alarm."""
        return self._commit_error

    @property
    def overflow(self) -> OverflowState:
        with self._lock:
            return OverflowState(self._alarm, self._refused)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop the committer, commit what is buffered, close the database; idempotent."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._wake.notify_all()
        self._stop.set()
        self._committer.join()
        try:
            self.flush()
        finally:
            with self._db_lock, self._reader_lock:
                self._reader.close()
                self._db.close()
            os.close(self._lock_fd)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _raise_alarm(self) -> None:
        """With _lock held: the outbox is full."""
        if not self._alarm:
            self._alarm = True
            log.warning("outbox full (%d entries unacknowledged): refusing new readings until the uploader "
                        "acknowledges; run markers are still accepted", self._max)

    def _write(self, rows: list[_Row], open_run_json: str | None, states: Mapping[str, str] | None = None) -> None:
        """With _db_lock held: commit ``rows`` (in seq order) and the run state in one transaction."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if rows:
                self._db.executemany("INSERT INTO entries (seq, kind, time, body) VALUES (?, ?, ?, ?)", rows)
            if open_run_json is not None:
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'open_run'", (open_run_json,))
            if states:
                self._db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                     [(value, key) for key, value in states.items()])
            crash_point("outbox.before_commit")
            self._db.execute("COMMIT")
            crash_point("outbox.after_commit")
        except sqlite3.Error as exc:
            self._rollback()
            if not self._failing:
                log.error("outbox %s: commit failed, keeping %d entries buffered: %s", self.path, len(rows), exc)
            self._failing = True
            self._commit_error = str(exc)
            raise OutboxError(f"cannot commit to the outbox {self.path}: {exc}") from exc
        if self._failing:
            log.info("outbox %s: commits succeed again", self.path)
            self._failing = False
            self._commit_error = None
        if rows:
            self._last = rows[-1][0]
            self._last_time = rows[-1][2]

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("outbox %s: rollback failed", self.path)

    def _commit_loop(self) -> None:
        """Group commit: wait for a first entry, then for ``commit_rows`` rows or ``commit_interval``."""
        delay = self._interval
        while True:
            with self._lock:
                while not self._buffer and not self._stopping:
                    self._wake.wait()
                deadline = self._first_buffered + self._interval
                while not self._stopping and len(self._buffer) < self._rows:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                if self._stopping:
                    return  # close() commits the rest
            try:
                self.flush()
                delay = self._interval
            except OutboxError:
                if self._stop.wait(delay):  # back off rather than spin on a full disk
                    return
                delay = min(delay * 2, MAX_RETRY_DELAY)


def _lock_exclusively(path: Path) -> int:
    try:
        return lock_exclusively(path, f"the outbox {path} is in use by another process (is a second bridge running?)")
    except BlockingIOError as exc:
        raise OutboxError(str(exc)) from None


def _connect(path: Path) -> sqlite3.Connection:
    return connect_durable(path, _SCHEMA, [
        ("format", 1), ("epoch", uuid.uuid4().hex), ("acked_seq", 0), ("last_seq", 0), ("open_run", "null"),
        ("last_time", None), *((key, "null") for key in STATE_KEYS),
    ])

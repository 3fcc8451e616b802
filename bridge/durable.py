"""SQLite opened the one way both durable queues (the bridge's outbox, the uploader's spool) need.

WAL with ``synchronous=FULL``: anything that gates an acknowledgement must survive a power cut,
and WAL+NORMAL can roll back a committed transaction (docs/design.md section 12). A lock file beside the
database stops a second process from using it: two writers would hand out or acknowledge the
same seqs.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def lock_exclusively(path: Path, in_use: str) -> int:
    """Hold an advisory lock on ``path``.lock; BlockingIOError carries ``in_use`` if another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BlockingIOError(in_use) from None
    return fd


def connect_durable(path: Path, schema: Sequence[str], meta: Sequence[tuple[str, Any]] = ()) -> sqlite3.Connection:
    """Open (creating if new) the database: WAL, synchronous=FULL, schema and ``meta`` rows in one transaction.

    ``meta`` rows go into a ``meta(key, value)`` table the schema must create; existing keys keep their value.
    """
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise sqlite3.OperationalError(f"WAL mode is not available here (journal_mode is {mode})")
        db.execute("PRAGMA synchronous=FULL")
        # a large delete after a long outage can grow the WAL; give the space back after checkpoints
        db.execute("PRAGMA journal_size_limit=16777216")
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("BEGIN IMMEDIATE")
        for statement in schema:
            db.execute(statement)
        if meta:
            db.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", meta)
        db.execute("COMMIT")
    except sqlite3.Error:
        db.close()
        raise
    return db

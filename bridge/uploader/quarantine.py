"""Messages and entries that failed the wire contract: counted per site and reason, a copy kept.

Why: a bad message must never be retried forever nor block others (a poison message held
unacknowledged fills the broker's in-flight window and starves every site), yet it must not
vanish either. So the uploader acknowledges it on its own, counts it durably per site and per
reason (the ``bad_messages`` of its status), logs it once per reason and minute, and keeps the
last :data:`KEEP` of them, each cut to :data:`PAYLOAD_MAX` bytes, for ``chamber-bridge
upload-quarantine`` to show. The tables live in the spool database, so a quarantined entry and
the commit that skipped it are one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final

from bridge.names import printable

log = logging.getLogger("bridge.uploader.quarantine")

#: quarantined copies kept, newest first
KEEP: Final = 1_000
#: bytes of a payload kept in a copy
PAYLOAD_MAX: Final = 64 * 1024
#: a reason is logged at most once per this many seconds per site
LOG_EVERY: Final = 60.0

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY, time REAL NOT NULL, topic TEXT NOT NULL,"
    " site TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, size INTEGER NOT NULL, payload BLOB)",
    "CREATE TABLE IF NOT EXISTS bad_counts (site TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL,"
    " last_time REAL NOT NULL, PRIMARY KEY (site, reason)) WITHOUT ROWID",
)


@dataclass(frozen=True, slots=True)
class BadInput:
    """One refused message or entry. ``site`` is the topic's, made printable."""

    topic: str
    site: str
    reason: str
    detail: str
    payload: bytes


def bad_input(topic: str, site: str, reason: str, detail: str, payload: bytes) -> BadInput:
    return BadInput(printable(topic, 200), printable(site, 80), reason, printable(detail, 1000), payload)


_last_logged: dict[tuple[str, str], tuple[float, int]] = {}


def record(db: sqlite3.Connection, items: list[BadInput], now: float | None = None) -> None:
    """Count and keep ``items`` inside the caller's transaction; log each (site, reason) at most once a minute."""
    if not items:
        return
    now = time.time() if now is None else now
    db.executemany("INSERT INTO bad_counts (site, reason, count, last_time) VALUES (?, ?, 1, ?)"
                   " ON CONFLICT (site, reason) DO UPDATE SET count=count+1, last_time=excluded.last_time",
                   [(b.site, b.reason, now) for b in items])
    db.executemany("INSERT INTO quarantine (time, topic, site, reason, detail, size, payload)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(now, b.topic, b.site, b.reason, b.detail, len(b.payload), b.payload[:PAYLOAD_MAX])
                    for b in items[-KEEP:]])
    db.execute("DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?", (KEEP,))
    for b in items:
        _log_rate_limited(b, now)


def _log_rate_limited(b: BadInput, now: float) -> None:
    key = (b.site, b.reason)
    last, suppressed = _last_logged.get(key, (float("-inf"), 0))
    if now - last < LOG_EVERY:
        _last_logged[key] = (last, suppressed + 1)
        return
    more = f" ({suppressed} more of this kind since the last report)" if suppressed else ""
    log.error("quarantined a message from site %s (%s) on %s: %s%s", b.site, b.reason, b.topic, b.detail, more)
    _last_logged[key] = (now, 0)


def counts(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """``{site: {reason: count}}`` since the spool was created."""
    found: dict[str, dict[str, int]] = {}
    for site, reason, count in db.execute("SELECT site, reason, count FROM bad_counts ORDER BY site, reason"):
        found.setdefault(site, {})[reason] = count
    return found


def listing(db: sqlite3.Connection, limit: int = KEEP) -> list[dict[str, Any]]:
    """The kept copies, newest first (payloads as they arrived, cut to :data:`PAYLOAD_MAX`)."""
    return [{"time": t, "topic": topic, "site": site, "reason": reason, "detail": detail, "size": size,
             "payload": payload}
            for t, topic, site, reason, detail, size, payload in db.execute(
                "SELECT time, topic, site, reason, detail, size, payload FROM quarantine ORDER BY id DESC LIMIT ?",
                (limit,))]

"""The ledger: which readings belong to which run, which chunks were cut, which the sink confirmed.

It works through each source's log in seq order, only as far as the spool holds it without a
hole (``contiguous``), so a run's chunks are cut from complete data and always cut the same
way. Everything it decides (run boundaries, chunks, where each flow's cutter stands, the
cursor) is committed in one transaction with the spool it read, so a crash resumes at the last
commit and a chunk that was cut is never cut differently.

Delivery state: a chunk is ``confirmed`` only after the sink said so; a run is ``finalized``
only after every chunk is confirmed and the sink confirmed the finalize. The manifest sent with
the finalize is stored first (state ``finalizing``), so a finalize repeated after a crash
sends the same manifest.

Holes: a seq missing for longer than ``grace`` seconds is given up on. The hole's age is measured
on this process's monotonic clock from when the pass first found it blocking, never on the wall
clock: a clock step (NTP, an operator, a machine that booted without a real-time clock) would
otherwise make a fresh hole look a day old and give it up while the bridge is still resending it
(fault matrix row 19). After a restart a hole is timed again from zero, so it may wait up to one
grace period more; it is never given up early. The hole is recorded in
the open run's gap list (the completeness report), the source's contiguous seq moves past it
(so the bridge may trim it; it has had the grace period to resend) and anything of it that
still arrives is dropped as late. A run left open by a bridge whose outbox was replaced (a new
epoch for the same site) is closed as ``abort`` once that source has been quiet for ``grace``.

Readings outside runs wait: an automatic run's start marker may claim them as its pre-roll
(``pre_roll_from``), so they leave the spool only once a start marker has decided about them or
they are older than the longest pre-roll (a pre-roll the spool no longer holds is a gap). A
``run_resume`` marker is a gap of time (``bridge_down``), not of seqs: the run stays complete.
Events leave the entries for the ``events`` table, the run's (a pre-roll's included) or the
history's (docs/runs.md, docs/store.md).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

from bridge.config import PRE_ROLL_MAX
from bridge.errors import ProtocolError
from bridge.names import is_run_id, printable
from bridge.store.baseline import changes
from bridge.store.layout import MANIFEST_VERSION
from bridge.uploader import quarantine
from bridge.uploader.chunker import CutChunk, FlowCutter, channel_name, chunk_body
from bridge.uploader.sinks.base import ChunkBody, StreamInfo
from bridge.uploader.spool import SpoolError, open_spool_db
from bridge.wire.contract import (
    baseline_body,
    event_body,
    run_resume_body,
    run_start_body,
    run_stop_body,
    unpack_body,
)

log = logging.getLogger(__name__)

#: entries read per step of the pass (bounds memory and transaction length)
PAGE: Final = 20_000
#: chunks whose readings the pass keeps in memory for their first push, at most
CACHED_CHUNKS: Final = 1_000
#: the cause of a gap of time, not of seqs: the bridge was down and the run went on (docs/store.md)
BRIDGE_DOWN: Final = "bridge_down"
#: a run's events listed in its manifest, at most (the rest stay in the spool's events table and are counted)
MANIFEST_EVENTS_MAX: Final = 10_000
#: the columns of an entry the pass reads, in this order
_ROW: Final = ("seq, kind, time, flow, channel, t, quality, units, body, coalesce(value, vtext), poll, detail,"
               " vtype")


class Source(NamedTuple):
    site: str
    epoch: str
    contiguous: int
    max_seq: int
    cursor: int
    open_run: str | None
    gap_since: float | None
    first_seen: float
    last_arrival: float


class PendingChunk(NamedTuple):
    run_id: str
    site: str
    epoch: str
    data_id: str
    flow: str
    chunk_index: int
    first_seq: int
    last_seq: int


@dataclass(slots=True)
class Progress:
    """What a pass did, for the service: sources whose contiguous seq moved past a hole (to ack)."""

    entries: int = 0
    chunks: int = 0
    runs_stopped: list[str] = field(default_factory=list)
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)


#: a run or source whose delivery failed is tried again after this many seconds, doubling up to the cap
RETRY_FIRST: Final = 30.0
RETRY_CAP: Final = 3600.0


def retry_delay(failures: int, first: float = RETRY_FIRST) -> float:
    return float(min(RETRY_CAP, first * 2 ** min(max(failures - 1, 0), 20)))


@dataclass(slots=True)
class SourceFailure:
    """A source whose pass raised: skipped (others go on) until ``retry_at`` on the monotonic clock."""

    reason: str
    since: float
    failures: int
    retry_at: float


class Ledger:
    """The worker's side of the spool database. One thread uses it."""

    def __init__(self, state_dir: Path, *, points_per_chunk: int = 100, keep_idle: bool = False,
                 grace: float = 600.0, write_lock: threading.Lock | None = None,
                 clock: Callable[[], float] = time.monotonic, retry_first: float = RETRY_FIRST) -> None:
        self._db = open_spool_db(state_dir)
        #: first delay before a failed run or source is tried again (doubling up to RETRY_CAP)
        self.retry_first = retry_first
        # shared with the Spool in one process: writers hand over at once instead of polling
        # SQLite's busy handler, which sleeps in steps of up to 100 ms
        self._write_lock = write_lock or threading.Lock()
        self.path = state_dir
        self.points_per_chunk = points_per_chunk
        self.keep_idle = keep_idle
        self.grace = grace
        #: the clock holes are aged on (monotonic: immune to steps of the wall clock)
        self._clock = clock
        #: per source, the hole the pass is blocked at: (contiguous seq before it, first seen on ``_clock``)
        self._holes: dict[tuple[str, str], tuple[int, float]] = {}
        # The pass has every reading in hand when it cuts a chunk; it keeps them for the chunk's
        # first push so the hot path need not read them back. Only an optimisation: a lane exists
        # only for chunks begun in this process, anything missing is rebuilt from the spool, and
        # the rows are the same rows in the same order, so the bytes are the same either way.
        self._building: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        self._staged: dict[tuple[str, str, int], list[tuple[Any, ...]]] = {}
        self._ready: dict[tuple[str, str, int], list[tuple[Any, ...]]] = {}
        #: sources whose pass failed with something other than the disk (docs/security.md)
        self.failed_sources: dict[tuple[str, str], SourceFailure] = {}
        #: per source, the newest entry time at which idle readings were last trimmed (:meth:`_trim_idle`),
        #: and the cursor at which a quiet source's were all dropped (:meth:`_forget_quiet_idle`)
        self._trimmed_at: dict[tuple[str, str], float] = {}
        self._quiet: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------ transactions

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        with self._write_lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._forget_cache()
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise SpoolError(f"ledger commit failed in {self.path}: {exc}") from exc
            except BaseException:
                self._forget_cache()
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if self._staged:
                room = CACHED_CHUNKS - len(self._ready)
                for key in list(self._staged)[:max(0, room)]:
                    self._ready[key] = self._staged[key]
                self._staged.clear()

    def _forget_cache(self) -> None:
        self._building.clear()
        self._staged.clear()

    # ------------------------------------------------------------ the pass: runs and chunks

    def sources(self) -> list[Source]:
        return [Source(*row) for row in self._db.execute(
            "SELECT site, epoch, contiguous, max_seq, cursor, open_run, gap_since, first_seen, last_arrival"
            " FROM sources ORDER BY first_seen")]

    def advance(self, now: float | None = None) -> Progress:
        """Work through every source as far as it is held; give up holes older than the grace period."""
        now = time.time() if now is None else now
        progress = Progress()
        sources = self.sources()
        for source in sources:
            key = (source.site, source.epoch)
            failed = self.failed_sources.get(key)
            if failed is not None and self._clock() < failed.retry_at:
                continue
            try:
                self._advance_source(source, sources, progress, now)
            except SpoolError:
                raise  # the disk's, not this source's: the service retries everything
            except Exception as exc:  # whatever one source's log does, the others go on
                self._source_failed(source, exc, now)
            else:
                if failed is not None:
                    del self.failed_sources[key]
                    log.warning("%s epoch %s: the pass works again after %d failures", source.site, source.epoch,
                                failed.failures)
        return progress

    def _advance_source(self, source: Source, sources: list[Source], progress: Progress, now: float) -> None:
        blocked = source.cursor >= source.contiguous and source.contiguous < source.max_seq
        if blocked and self._hole_age(source) > self.grace:
            skipped_to = self._skip_hole(source, now)
            progress.skipped[(source.site, source.epoch)] = skipped_to
            source = source._replace(contiguous=skipped_to)
        while source.cursor < source.contiguous:
            source = self._step(source, progress)
        if source.contiguous < source.max_seq:
            self._hole_age(source)  # the pass reached a hole: its age counts from now
        if source.open_run is not None and self._superseded(source, sources, now):
            self._close_abandoned(source, progress, now)
        self._forget_quiet_idle(source, now)

    def _source_failed(self, source: Source, exc: Exception, now: float) -> None:
        key = (source.site, source.epoch)
        previous = self.failed_sources.get(key)
        failures = 1 if previous is None else previous.failures + 1
        reason = printable(f"{type(exc).__name__}: {exc}", 300)
        delay = retry_delay(failures, self.retry_first)
        self.failed_sources[key] = SourceFailure(reason, now if previous is None else previous.since, failures,
                                                 self._clock() + delay)
        log.error("%s epoch %s: the pass failed at seq %d (%s); this source is retried in %.0f s, every other "
                  "source goes on", printable(source.site, 80), source.epoch, source.cursor + 1, reason,
                  delay, exc_info=previous is None)
        if source.open_run is not None:
            self.fail_run(source.open_run, f"the pass over its log failed: {reason}", now)

    def _hole_age(self, source: Source) -> float:
        """How long the pass has been blocked at the hole after ``source.contiguous``, on the monotonic clock."""
        key = (source.site, source.epoch)
        seen = self._holes.get(key)
        if seen is None or seen[0] != source.contiguous:
            seen = self._holes[key] = (source.contiguous, self._clock())
        return self._clock() - seen[1]

    def _step(self, source: Source, progress: Progress) -> Source:
        """One page of the pass for one source, in one transaction."""
        rows = self._db.execute(
            f"SELECT {_ROW} FROM entries WHERE site=? AND epoch=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (source.site, source.epoch, source.cursor, source.contiguous, PAGE)).fetchall()
        last = rows[-1][0] if rows else source.contiguous
        open_run = source.open_run
        cutters = self._cutters(open_run)
        chunks: list[tuple[str, CutChunk]] = []
        stray: list[tuple[str, str, int]] = []
        with self._transaction() as db:
            for row in rows:
                seq, kind, stamp, body = row[0], row[1], row[2], row[8]
                if kind == "reading":
                    if open_run is not None:  # else idle: it waits for a start marker or the pre-roll horizon
                        self._take(open_run, cutters, chunks, row)
                elif kind == "refused":
                    refusal = unpack_body(body)
                    if open_run is not None:
                        self._add_gap(db, open_run, {
                            "site": source.site, "epoch": source.epoch, "from_seq": seq, "to_seq": seq,
                            "cause": f"refused: {refusal.get('reason')}"})
                    stray.append((source.site, source.epoch, seq))  # only a placeholder: never kept
                elif kind == "run_start":
                    start = self._run_start(db, source, seq, body)
                    if start is None:  # refused and quarantined; the readings after it are idle
                        stray.append((source.site, source.epoch, seq))
                        continue
                    if open_run is not None:
                        log.warning("%s: run %s started while run %s was open; closing that one as abort",
                                    source.site, start.get("run_id"), open_run)
                        self._stop_run(db, open_run, cutters, chunks, seq - 1, stamp,
                                       {"exit_status": "abort", "reason": "a new run started before it was stopped"})
                        progress.runs_stopped.append(open_run)
                    open_run = str(start["run_id"])
                    cutters = {}
                    first, lost = self._claim_idle(db, source, seq, start.get("pre_roll_from"))
                    db.execute("INSERT OR IGNORE INTO runs (run_id, site, epoch, start_seq, start, started_at, state,"
                               " first_seq) VALUES (?, ?, ?, ?, ?, ?, 'open', ?)",
                               (open_run, source.site, source.epoch, seq, json.dumps(start), stamp, first))
                    if lost is not None:
                        self._add_gap(db, open_run, lost)
                    for pre in db.execute(f"SELECT {_ROW} FROM entries WHERE site=? AND epoch=? AND seq>=? AND seq<?"
                                          " AND kind='reading' ORDER BY seq", (source.site, source.epoch, first, seq)):
                        self._take(open_run, cutters, chunks, pre)
                    # the events of the pre-roll are the run's as its readings are (logged with no run open)
                    db.execute("UPDATE events SET run_id=? WHERE site=? AND epoch=? AND seq>=? AND seq<?"
                               " AND run_id IS NULL", (open_run, source.site, source.epoch, first, seq))
                elif kind == "event":
                    event = self._marker(event_body, body, source, seq)
                    if event:  # kept in the events table (the run's, or the history's), not as an entry
                        db.execute("INSERT OR IGNORE INTO events (site, epoch, seq, time, run_id, text, tags, source)"
                                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                   (source.site, source.epoch, seq, stamp, open_run, event["text"],
                                    json.dumps(event["tags"]), event["source"]))
                    stray.append((source.site, source.epoch, seq))
                elif kind == "baseline":
                    baseline = self._marker(baseline_body, body, source, seq)
                    if open_run is not None and baseline.get("run_id") == open_run:
                        self._keep_baseline(db, open_run, baseline, seq)
                    stray.append((source.site, source.epoch, seq))  # kept with its run, not as an entry
                elif kind == "run_resume":
                    resume = self._marker(run_resume_body, body, source, seq)
                    if open_run is not None and resume.get("run_id") == open_run:
                        # the bridge was down and the run went on: a gap of time, not of seqs (docs/store.md)
                        self._add_gap(db, open_run, {
                            "site": source.site, "epoch": source.epoch, "cause": BRIDGE_DOWN, "at_seq": seq,
                            "from_time": resume["down_from"], "to_time": resume["down_to"]})
                        continue
                    log.warning("%s: resume marker (seq %d) for run %s, which is not open here; ignored",
                                source.site, seq, resume.get("run_id"))
                    stray.append((source.site, source.epoch, seq))
                else:  # run_stop
                    stop = self._marker(run_stop_body, body, source, seq)
                    if open_run is None or stop.get("run_id") != open_run:
                        log.warning("%s: stop marker (seq %d) for run %s, which is not open here; ignored",
                                    source.site, seq, stop.get("run_id"))
                        if open_run is None:  # leaves the spool; the idle readings around it wait
                            stray.append((source.site, source.epoch, seq))
                        continue
                    self._stop_run(db, open_run, cutters, chunks, seq, stamp, stop)
                    progress.runs_stopped.append(open_run)
                    open_run, cutters = None, {}
            if open_run is not None:
                db.executemany("INSERT OR REPLACE INTO flows (run_id, flow, cutter) VALUES (?, ?, ?)",
                               [(open_run, f, json.dumps(c.to_json())) for f, c in cutters.items()])
            db.executemany("INSERT INTO chunks (run_id, flow, chunk_index, first_seq, last_seq, points)"
                           " VALUES (?, ?, ?, ?, ?, ?)", [(run, *cut) for run, cut in chunks])
            db.executemany("DELETE FROM entries WHERE site=? AND epoch=? AND seq=?", stray)
            if open_run is None and rows:
                self._trim_idle(db, source, last, rows[-1][2])
            db.execute("UPDATE sources SET cursor=?, open_run=? WHERE site=? AND epoch=?",
                       (last, open_run, source.site, source.epoch))
        progress.entries += len(rows)
        progress.chunks += len(chunks)
        return source._replace(cursor=last, open_run=open_run)

    def _take(self, run_id: str, cutters: dict[str, FlowCutter], chunks: list[tuple[str, CutChunk]],
              row: tuple[Any, ...]) -> None:
        """One reading of the run ``run_id`` (a row of :data:`_ROW`) into its flow's cutter."""
        seq, flow, channel, t, quality, units, value, poll, detail, vtype = row[0], row[3], row[4], row[5], row[6], \
            row[7], row[9], row[10], row[11], row[12]
        building = self._building
        cutter = cutters.get(flow)
        if cutter is None:
            cutter = cutters[flow] = FlowCutter(flow)
        fresh = cutter.first_seq is None
        # the poll's mark when the bridge sent one (docs/payload.md), else the reading's own time
        cut = cutter.add(seq, channel, t if poll is None else poll, self.points_per_chunk, quality, units, vtype)
        reading = (channel, t, value, quality, units, detail, vtype)
        if cut is not None:
            chunks.append((run_id, cut))
            self._stage(run_id, cut)
            building[(run_id, flow)] = [reading]
        elif fresh:
            building[(run_id, flow)] = [reading]
        else:
            lane = building.get((run_id, flow))
            if lane is not None:
                lane.append(reading)

    # ------------------------------------------------------------ idle readings and pre-roll

    def _idle_from(self, db: sqlite3.Connection, source: Source) -> int:
        """The first seq after the source's last run: where readings are idle (outside every run) from."""
        (end,) = db.execute("SELECT coalesce(max(stop_seq), 0) FROM runs WHERE site=? AND epoch=?",
                            (source.site, source.epoch)).fetchone()
        return int(end) + 1

    def _claim_idle(self, db: sqlite3.Connection, source: Source, start_seq: int,
                    pre_roll_from: Any) -> tuple[int, dict[str, Any] | None]:
        """A start marker decides the idle readings before it: those from its ``pre_roll_from`` on join the run,
        the older ones leave the spool (unless ``keep_idle``). Returns the run's first seq, and the gap
        of what the pre-roll asked for but the spool no longer holds (None if nothing).

        A pre-roll never reaches into the run before (the readings after that run's stop only),
        and never past the marker. What the pre-roll asks for but the spool no longer holds (older
        than :data:`~bridge.config.PRE_ROLL_MAX` when it arrived) is recorded as a gap.
        """
        idle_from = self._idle_from(db, source)
        first = start_seq
        if isinstance(pre_roll_from, int) and pre_roll_from < start_seq:
            first = max(pre_roll_from, idle_from)
        if not self.keep_idle:
            db.execute("DELETE FROM entries WHERE site=? AND epoch=? AND seq>=? AND seq<? AND kind='reading'",
                       (source.site, source.epoch, idle_from, first))
        (trimmed,) = db.execute("SELECT idle_trimmed FROM sources WHERE site=? AND epoch=?",
                                (source.site, source.epoch)).fetchone()
        if first <= trimmed and first < start_seq:
            return first, {"site": source.site, "epoch": source.epoch, "from_seq": first,
                           "to_seq": min(int(trimmed), start_seq - 1), "cause": "pre_roll_not_kept"}
        return first, None

    def _trim_idle(self, db: sqlite3.Connection, source: Source, cursor: int, newest: float) -> None:
        """Idle readings older than the longest pre-roll (by the bridge's clock, against the newest entry
        passed) leave the spool: no start marker can claim them any more. Looked at once a tenth of
        that period, so the scan is not paid on every page."""
        key = (source.site, source.epoch)
        last = self._trimmed_at.get(key)
        if self.keep_idle or (last is not None and 0 <= newest - last < PRE_ROLL_MAX / 10):
            return
        self._trimmed_at[key] = newest
        self._drop_idle(db, source, cursor, newest - PRE_ROLL_MAX)

    def _drop_idle(self, db: sqlite3.Connection, source: Source, cursor: int, before: float) -> None:
        """Delete the idle readings up to ``cursor`` logged before ``before`` (the bridge's clock); a later
        pre-roll that asks for them records them as a gap (``idle_trimmed``)."""
        key = (source.site, source.epoch)
        (trimmed,) = db.execute("SELECT idle_trimmed FROM sources WHERE site=? AND epoch=?", key).fetchone()
        low = max(int(trimmed), self._idle_from(db, source) - 1)
        (top,) = db.execute("SELECT max(seq) FROM entries WHERE site=? AND epoch=? AND seq>? AND seq<=?"
                            " AND kind='reading' AND time<?", (*key, low, cursor, before)).fetchone()
        if top is None:
            return
        db.execute("DELETE FROM entries WHERE site=? AND epoch=? AND seq>? AND seq<=? AND kind='reading'",
                   (*key, low, top))
        db.execute("UPDATE sources SET idle_trimmed=? WHERE site=? AND epoch=?", (top, *key))

    def _forget_quiet_idle(self, source: Source, now: float) -> None:
        """A source that has sent nothing for the longest pre-roll (the uploader's clock) keeps no idle
        readings: the bridge is gone (an old epoch) or silent, and its last readings must not stay for
        ever. A start marker that still comes later finds them gone and records the gap."""
        key = (source.site, source.epoch)
        if (self.keep_idle or source.open_run is not None or source.cursor < source.max_seq
                or now - source.last_arrival <= PRE_ROLL_MAX or self._quiet.get(key) == source.cursor):
            return
        with self._transaction() as db:
            self._drop_idle(db, source, source.cursor, math.inf)
        self._quiet[key] = source.cursor

    def _marker(self, check: Callable[[dict[str, Any], str], dict[str, Any]], body: bytes, source: Source,
                seq: int) -> dict[str, Any]:
        """A stored marker's body checked again (a spool written before the contract may hold anything)."""
        what = f"{printable(source.site, 80)} seq {seq}"
        try:
            return check(unpack_body(body), what)
        except (ValueError, ProtocolError) as exc:
            log.error("%s: %s; the marker is ignored", what, exc)
            return {}

    def _run_start(self, db: sqlite3.Connection, source: Source, seq: int, body: bytes) -> dict[str, Any] | None:
        """The run_start at ``seq``, or None if refused: a run id is the bridge's, once.

        A marker for a run id the ledger already holds with another start (a replayed or forged
        marker; the bridge makes a new random id for every run) would attach new readings to
        that run, finalized or not: it is refused, counted and quarantined.
        """
        start = self._marker(run_start_body, body, source, seq)
        run_id = start.get("run_id")
        if not is_run_id(run_id):
            return None
        held = db.execute("SELECT site, epoch, start_seq FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if held is not None and tuple(held) != (source.site, source.epoch, seq):
            detail = (f"run_start at seq {seq} reuses run id {run_id}, which started at seq {held[2]} of "
                      f"{printable(held[0], 80)} epoch {held[1]}")
            quarantine.record(db, [quarantine.bad_input(f"{source.site}/data", source.site, "run_id_reused", detail,
                                                        body)])
            return None
        return start

    def _keep_baseline(self, db: sqlite3.Connection, run_id: str, baseline: dict[str, Any], seq: int) -> None:
        """A run's ``start`` or ``stop`` snapshot, kept with the run for its manifest (docs/store.md).

        The first of each is kept (a run holds each exactly once); a ``connect`` baseline inside a
        run (an instrument reconnected) is the bridge's own record and not kept: the ``stop``
        snapshot says what the instruments were at the end.
        """
        when = baseline.get("when")
        if when not in ("start", "stop"):
            return
        (stored,) = db.execute("SELECT baseline FROM runs WHERE run_id=?", (run_id,)).fetchone()
        kept = json.loads(stored or "{}")
        if when in kept:
            log.warning("run %s: a second %s baseline (seq %d) is ignored", run_id, when, seq)
            return
        kept[when] = baseline["instruments"]
        db.execute("UPDATE runs SET baseline=? WHERE run_id=?", (json.dumps(kept), run_id))

    def _add_gap(self, db: sqlite3.Connection, run_id: str, gap: dict[str, Any]) -> None:
        """Record ``gap`` in the run's report, merged into the last one when it continues it."""
        (gaps_json,) = db.execute("SELECT gaps FROM runs WHERE run_id=?", (run_id,)).fetchone()
        gaps = json.loads(gaps_json)
        last = gaps[-1] if gaps else None
        if (last is not None and "from_seq" in gap and last.get("cause") == gap["cause"]
                and last.get("epoch") == gap["epoch"] and last.get("to_seq") == gap["from_seq"] - 1):
            last["to_seq"] = gap["to_seq"]
        else:
            gaps.append(gap)
        db.execute("UPDATE runs SET gaps=? WHERE run_id=?", (json.dumps(gaps), run_id))

    def _cutters(self, run_id: str | None) -> dict[str, FlowCutter]:
        if run_id is None:
            return {}
        return {flow: FlowCutter.from_json(json.loads(cutter)) for flow, cutter in self._db.execute(
            "SELECT flow, cutter FROM flows WHERE run_id=?", (run_id,))}

    def _stop_run(self, db: sqlite3.Connection, run_id: str, cutters: dict[str, FlowCutter],
                  chunks: list[tuple[str, CutChunk]], stop_seq: int, stamp: float, stop: dict[str, Any]) -> None:
        for cutter in cutters.values():
            cut = cutter.finish()
            if cut is not None:
                chunks.append((run_id, cut))
                self._stage(run_id, cut)
        db.executemany("INSERT OR REPLACE INTO flows (run_id, flow, cutter) VALUES (?, ?, ?)",
                       [(run_id, f, json.dumps(c.to_json())) for f, c in cutters.items()])
        db.execute("UPDATE runs SET stop_seq=?, stop=?, stopped_at=?, state='stopped' WHERE run_id=?",
                   (stop_seq, json.dumps(stop), stamp, run_id))

    def _stage(self, run_id: str, cut: CutChunk) -> None:
        """The chunk ``cut`` just closed: keep its readings (if this process saw them all) for its first push."""
        lane = self._building.pop((run_id, cut.flow), None)
        if lane is not None and len(self._ready) + len(self._staged) < CACHED_CHUNKS:
            self._staged[(run_id, cut.flow, cut.chunk_index)] = lane

    def _skip_hole(self, source: Source, now: float) -> int:
        """Give up the hole after ``contiguous``; record it; return the new contiguous seq."""
        key = (source.site, source.epoch)
        with self._transaction() as db:
            (next_held,) = db.execute("SELECT min(seq) FROM entries WHERE site=? AND epoch=? AND seq>?",
                                      (*key, source.contiguous)).fetchone()
            first, last = source.contiguous + 1, next_held - 1
            contiguous = next_held
            for (seq,) in db.execute("SELECT seq FROM entries WHERE site=? AND epoch=? AND seq>? ORDER BY seq",
                                     (*key, next_held)):
                if seq != contiguous + 1:
                    break
                contiguous = seq
            gap = {"site": source.site, "epoch": source.epoch, "from_seq": first, "to_seq": last,
                   "cause": f"not received within the grace period ({self.grace:g} s)"}
            if source.open_run is not None:
                self._add_gap(db, source.open_run, gap)
            db.execute("UPDATE sources SET contiguous=?, cursor=max(cursor, ?), skipped=skipped+?,"
                       " gap_since=CASE WHEN ? < max_seq THEN ? ELSE NULL END WHERE site=? AND epoch=?",
                       (contiguous, last, last - first + 1, contiguous, now, *key))
        log.error("%s epoch %s: seqs %d..%d never arrived within %g s; recorded as a gap%s", source.site,
                  source.epoch, first, last, self.grace, f" of run {source.open_run}" if source.open_run else "")
        return int(contiguous)

    def _superseded(self, source: Source, sources: list[Source], now: float) -> bool:
        newer = any(s.site == source.site and s.first_seen > source.first_seen for s in sources)
        return newer and source.cursor >= source.max_seq and now - source.last_arrival > self.grace

    def _close_abandoned(self, source: Source, progress: Progress, now: float) -> None:
        assert source.open_run is not None
        cutters = self._cutters(source.open_run)
        chunks: list[tuple[str, CutChunk]] = []
        with self._transaction() as db:
            self._stop_run(db, source.open_run, cutters, chunks, source.cursor, now, {
                "run_id": source.open_run, "exit_status": "abort",
                "reason": "the bridge's outbox was replaced (new epoch) while the run was open"})
            db.executemany("INSERT INTO chunks (run_id, flow, chunk_index, first_seq, last_seq, points)"
                           " VALUES (?, ?, ?, ?, ?, ?)", [(run, *cut) for run, cut in chunks])
            db.execute("UPDATE sources SET open_run=NULL WHERE site=? AND epoch=?", (source.site, source.epoch))
        log.error("%s: run %s of the old outbox epoch %s closed as abort", source.site, source.open_run, source.epoch)
        progress.runs_stopped.append(source.open_run)

    # ------------------------------------------------------------ delivery

    def fail_run(self, run_id: str, reason: str, now: float | None = None) -> float:
        """Delivering ``run_id`` failed for a reason of its own: set it aside, try it again later.

        Every other run goes on meanwhile; the failure shows in the status with its reason. A
        later success (a confirmed chunk, the finalize) clears it. Returns the delay.
        """
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute("SELECT failures FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return 0.0
            failures = int(row[0]) + 1
            delay = retry_delay(failures, self.retry_first)
            db.execute("UPDATE runs SET failure=?, failures=?, retry_at=? WHERE run_id=?",
                       (printable(reason, 500), failures, now + delay, run_id))
        log.error("run %s: delivery failed (%s); set aside for %.0f s, every other run goes on",
                  run_id, printable(reason, 300), delay)
        return delay

    def failed_runs(self) -> list[dict[str, Any]]:
        return [{"run_id": run_id, "site": site, "reason": failure, "failures": failures, "retry_at": retry_at}
                for run_id, site, failure, failures, retry_at in self._db.execute(
                    "SELECT run_id, site, failure, failures, retry_at FROM runs WHERE failure IS NOT NULL"
                    " AND state != 'finalized' ORDER BY started_at")]

    def streams_to_initialize(self, now: float | None = None) -> list[StreamInfo]:
        return [self._stream(run_id) for (run_id,) in self._db.execute(
            "SELECT run_id FROM runs WHERE data_id IS NULL AND (retry_at IS NULL OR retry_at <= ?)"
            " ORDER BY started_at", (time.time() if now is None else now,))]

    def _stream(self, run_id: str) -> StreamInfo:
        site, start_json, started_at = self._db.execute(
            "SELECT site, start, started_at FROM runs WHERE run_id=?", (run_id,)).fetchone()
        start = json.loads(start_json)
        return StreamInfo(run_id=run_id, site=site, stream_name=str(start.get("stream_name") or run_id),
                          physical_sample=start.get("physical_sample"), synth_source_id=start.get("synth_source_id"),
                          project_id=start.get("project_id"), tags=tuple(start.get("tags") or ()),
                          points_per_chunk=self.points_per_chunk, started_at=started_at)

    def set_data_id(self, run_id: str, data_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET data_id=?, failure=NULL, retry_at=NULL WHERE run_id=?", (data_id, run_id))

    def pending_chunks(self, limit: int = 200, now: float | None = None) -> list[PendingChunk]:
        """Unconfirmed chunks of initialized streams, oldest run first, in seq order within a run."""
        return [PendingChunk(*row) for row in self._db.execute(
            "SELECT c.run_id, r.site, r.epoch, r.data_id, c.flow, c.chunk_index, c.first_seq, c.last_seq"
            " FROM chunks c JOIN runs r ON r.run_id = c.run_id"
            " WHERE c.confirmed=0 AND r.data_id IS NOT NULL AND (r.retry_at IS NULL OR r.retry_at <= ?)"
            " ORDER BY r.started_at, c.first_seq LIMIT ?", (time.time() if now is None else now, limit))]

    def backlog(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM chunks WHERE confirmed=0").fetchone()
        return int(n)

    def chunk(self, pending: PendingChunk) -> ChunkBody:
        """Rebuild a chunk from the spool: the same bytes every time."""
        return self.chunks([pending])[0]

    def chunks(self, pending: list[PendingChunk]) -> list[ChunkBody]:
        """Rebuild several chunks, reading each source's seq range once rather than once per chunk.

        The flows of a run interleave in the log, so a chunk's seq range holds every other
        flow's readings too; one scan over the range of many chunks, sorted out by flow, reads
        each row once.
        """
        readings: dict[tuple[str, str, int], list[Any]] = {}
        by_source: dict[tuple[str, str], list[PendingChunk]] = {}
        for p in pending:
            key = (p.run_id, p.flow, p.chunk_index)
            cached = self._ready.pop(key, None)
            if cached is not None:
                readings[key] = cached
                continue
            by_source.setdefault((p.site, p.epoch), []).append(p)
            readings[key] = []
        for (site, epoch), group in by_source.items():
            # per flow, the chunks in seq order, and the one the next reading of that flow falls in
            lanes: dict[str, list[PendingChunk]] = {}
            for p in sorted(group, key=lambda p: p.first_seq):
                lanes.setdefault(p.flow, []).append(p)
            cursor = dict.fromkeys(lanes, 0)
            low, high = min(p.first_seq for p in group), max(p.last_seq for p in group)
            for row in self._db.execute(
                    "SELECT seq, flow, channel, t, coalesce(value, vtext), quality, units, detail, vtype FROM entries"
                    " WHERE site=? AND epoch=?"
                    " AND seq BETWEEN ? AND ? AND kind='reading' ORDER BY seq", (site, epoch, low, high)):
                seq, flow = row[0], row[1]
                lane = lanes.get(flow)
                if lane is None:
                    continue
                i = cursor[flow]
                while i < len(lane) and lane[i].last_seq < seq:
                    i += 1
                cursor[flow] = i
                if i < len(lane) and lane[i].first_seq <= seq:
                    target = lane[i]
                    readings[(target.run_id, flow, target.chunk_index)].append(row[2:])
        return [chunk_body(p.data_id, p.chunk_index, p.flow, readings[(p.run_id, p.flow, p.chunk_index)])
                for p in pending]

    def confirm(self, chunks: list[PendingChunk]) -> None:
        """The sink has these chunks: mark them, and let their readings leave the spool now.

        Not at finalize: a run longer than the spool's limit must still be able to finish, and
        nothing reads a confirmed chunk's readings again (the report's counts live in the cutters).
        """
        with self._transaction() as db:
            db.executemany("UPDATE chunks SET confirmed=1 WHERE run_id=? AND flow=? AND chunk_index=?",
                           [(c.run_id, c.flow, c.chunk_index) for c in chunks])
            db.executemany("DELETE FROM entries WHERE site=? AND epoch=? AND seq BETWEEN ? AND ? AND flow=?",
                           [(c.site, c.epoch, c.first_seq, c.last_seq, c.flow) for c in chunks])
            db.executemany("UPDATE runs SET failure=NULL, retry_at=NULL WHERE run_id=? AND failure IS NOT NULL",
                           [(run_id,) for run_id in {c.run_id for c in chunks}])

    def count_retry(self, run_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET retries=retries+1 WHERE run_id=?", (run_id,))

    # ------------------------------------------------------------ finalize

    def runs_to_finalize(self, now: float | None = None) -> list[str]:
        """Runs whose stop is processed, whose stream exists and whose chunks are all confirmed (or finalizing)."""
        return [run_id for (run_id,) in self._db.execute(
            "SELECT run_id FROM runs r WHERE ((state='stopped' AND data_id IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM chunks c WHERE c.run_id=r.run_id AND c.confirmed=0)) OR state='finalizing')"
            " AND (retry_at IS NULL OR retry_at <= ?) ORDER BY started_at", (time.time() if now is None else now,))]

    def begin_finalize(self, run_id: str, clock: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """Freeze the run's manifest (state ``finalizing``) and return it; a repeat returns the same one."""
        state, report = self._db.execute("SELECT state, report FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if state == "finalizing":
            manifest: dict[str, Any] = json.loads(report)
            return manifest
        manifest = self.manifest(run_id, finalized=True, clock=clock,
                                 finalized_at=time.time() if now is None else now)
        with self._transaction() as db:
            db.execute("UPDATE runs SET state='finalizing', finalized_at=?, report=? WHERE run_id=?",
                       (manifest["finalized_at"], json.dumps(manifest), run_id))
        return manifest

    def end_finalize(self, run_id: str) -> None:
        """The sink confirmed the finalize: the run is done; its entries leave the spool."""
        with self._transaction() as db:
            site, epoch, start_seq, stop_seq = db.execute(
                "SELECT site, epoch, coalesce(first_seq, start_seq), stop_seq FROM runs WHERE run_id=?",
                (run_id,)).fetchone()
            db.execute("UPDATE runs SET state='finalized', failure=NULL, retry_at=NULL WHERE run_id=?", (run_id,))
            db.execute("DELETE FROM entries WHERE site=? AND epoch=? AND seq BETWEEN ? AND ?",
                       (site, epoch, start_seq, stop_seq))
            db.execute("DELETE FROM chunks WHERE run_id=?", (run_id,))
            db.execute("DELETE FROM flows WHERE run_id=?", (run_id,))

    def manifest(self, run_id: str, *, finalized: bool = False, clock: dict[str, Any] | None = None,
                 finalized_at: float | None = None) -> dict[str, Any]:
        """The store's manifest.json for a run: metadata, its events and the completeness report (docs/store.md)."""
        (site, epoch, start_seq, start_json, started_at, stop_seq, stop_json, stopped_at, data_id, gaps_json,
         retries, first_seq, baseline_json) = self._db.execute(
            "SELECT site, epoch, start_seq, start, started_at, stop_seq, stop, stopped_at, data_id, gaps, retries,"
            " coalesce(first_seq, start_seq), baseline FROM runs WHERE run_id=?", (run_id,)).fetchone()
        baseline = json.loads(baseline_json or "{}")
        start = json.loads(start_json)
        stop = json.loads(stop_json) if stop_json else {}
        channels: dict[str, dict[str, Any]] = {}
        units_changed: list[str] = []
        types_changed: list[str] = []
        flows: dict[str, dict[str, Any]] = {}
        for cutter in sorted(self._cutters(run_id).values(), key=lambda c: c.flow):
            flows[cutter.flow] = {"points": cutter.total_points, "chunks": cutter.chunk_index}
            for channel, (good, bad, chunks, units, changed) in cutter.stats.items():
                name = channel_name(cutter.flow, channel)
                # version 2: every reading is a point of the store, whatever its quality (docs/store.md)
                channels[name] = {"flow": cutter.flow, "units": units or cutter.first_units.get(channel, ""),
                                  "type": cutter.types.get(channel, "float"), "points": good + bad,
                                  "qualities": {**({"ok": good} if good else {}),
                                                **dict(sorted(cutter.qualities.get(channel, {}).items()))},
                                  "bad_quality": bad, "not_numeric": cutter.not_numeric.get(channel, 0),
                                  "chunks": chunks}
                if changed:
                    units_changed.append(name)
                if channel in cutter.types_changed:
                    types_changed.append(name)
        gaps = json.loads(gaps_json)
        # a bridge that was down while the run went on lost no reading it logged: such a gap is
        # reported, but the run is complete if every seq arrived
        missing = [g for g in gaps if g.get("cause") != BRIDGE_DOWN]
        down = sum(max(0.0, g["to_time"] - g["from_time"]) for g in gaps if g.get("cause") == BRIDGE_DOWN)
        readings = sum(c["points"] for c in channels.values())
        bad = sum(c["bad_quality"] for c in channels.values())
        qualities: dict[str, int] = {}
        for c in channels.values():
            for quality, count in c["qualities"].items():
                qualities[quality] = qualities.get(quality, 0) + count
        events = self.events(run_id=run_id, limit=MANIFEST_EVENTS_MAX + 1)
        (event_count,) = self._db.execute("SELECT count(*) FROM events WHERE run_id=?", (run_id,)).fetchone()
        return {
            "v": MANIFEST_VERSION, "data_id": data_id, "stream_name": start.get("stream_name"), "site": site,
            "run_id": run_id, "physical_sample": start.get("physical_sample"),
            "synth_source_id": start.get("synth_source_id"), "project_id": start.get("project_id"),
            "tags": list(start.get("tags") or ()), "points_per_chunk": self.points_per_chunk,
            "started_at": started_at, "stopped_at": stopped_at, "exit_status": stop.get("exit_status"),
            "trigger": start.get("trigger", "manual"), "why": {"start": start.get("why"), "stop": stop.get("why")},
            "finalized": finalized, "finalized_at": finalized_at, "channels": channels, "flows": flows, "gaps": gaps,
            "events": events[:MANIFEST_EVENTS_MAX],
            "baseline": baseline,
            "report": {
                "complete": not missing, "finalized_because": "complete" if not missing else "grace_expired",
                "readings": readings, "qualities": dict(sorted(qualities.items())), "bad_quality": bad,
                "not_numeric": sum(c["not_numeric"] for c in channels.values()),
                "chunks": sum(f["chunks"] for f in flows.values()),
                "retries": retries, "clock": clock or {"ntp_synchronized": None},
                "epoch": epoch, "first_seq": first_seq, "start_seq": start_seq, "last_seq": stop_seq,
                "pre_roll_from": first_seq if first_seq < start_seq else None,
                "stop_reason": stop.get("reason"), "units_changed": units_changed, "types_changed": types_changed,
                "bridge_down_s": round(down, 3), "events": int(event_count),
                "baseline_changed": [change.name for change in changes(baseline)],
                **({"events_not_in_manifest": int(event_count) - MANIFEST_EVENTS_MAX}
                   if event_count > MANIFEST_EVENTS_MAX else {}),
            },
        }

    def events(self, *, run_id: str | None = None, site: str | None = None, limit: int = MANIFEST_EVENTS_MAX
               ) -> list[dict[str, Any]]:
        """Events in log order: a run's (``run_id``), or a site's outside any run (``site``), or every one.

        Events outside runs are kept here for the history (docs/store.md); a run's are also in its manifest.
        """
        where, args = [], []
        if run_id is not None:
            where.append("run_id=?")
            args.append(run_id)
        if site is not None:
            where.append("site=? AND run_id IS NULL")
            args.append(site)
        sql = ("SELECT site, epoch, seq, time, run_id, text, tags, source FROM events"
               + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY site, epoch, seq LIMIT ?")
        return [{"seq": seq, "time": stamp, "text": text, "tags": json.loads(tags), "source": source,
                 **({} if run_id is not None else {"site": s, "epoch": e, "run_id": r})}
                for s, e, seq, stamp, r, text, tags, source in self._db.execute(sql, (*args, limit))]

    # ------------------------------------------------------------ status

    def held(self) -> int:
        """Entries in the spool: received, not yet part of a finalized run (or idle ones kept)."""
        (n,) = self._db.execute("SELECT count(*) FROM entries").fetchone()
        return int(n)

    def missing(self, source: Source) -> int:
        """Seqs between ``contiguous`` and ``max_seq`` not held: a hole the bridge has yet to fill."""
        if source.max_seq <= source.contiguous:
            return 0
        (held,) = self._db.execute("SELECT count(*) FROM entries WHERE site=? AND epoch=? AND seq>?",
                                   (source.site, source.epoch, source.contiguous)).fetchone()
        return int(source.max_seq - source.contiguous - held)

    def bad_counts(self) -> dict[str, dict[str, int]]:
        """Refused messages and entries, ``{site: {reason: count}}`` (bridge/uploader/quarantine.py)."""
        return quarantine.counts(self._db)

    def quarantined(self, limit: int = quarantine.KEEP) -> list[dict[str, Any]]:
        return quarantine.listing(self._db, limit)

    def site_of(self, run_id: str) -> str:
        (site,) = self._db.execute("SELECT site FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return str(site)

    def open_runs(self) -> list[dict[str, Any]]:
        return [{"run_id": run_id, "site": site, "stream_name": json.loads(start).get("stream_name"), "state": state}
                for run_id, site, start, state in self._db.execute(
                    "SELECT run_id, site, start, state FROM runs WHERE state != 'finalized' ORDER BY started_at")]

    def close(self) -> None:
        self._db.close()

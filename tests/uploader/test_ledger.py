"""The ledger on a real spool database: runs cut into chunks, holes, abandoned runs, delivery and finalize state.

Logs are built here entry by entry as a bridge's outbox numbers them, committed through the real
:class:`Spool` and worked through by the real :class:`Ledger`; the expected chunks are derived
from the polls the log recorded (docs/design.md sections 3-5). ``now`` is always passed explicitly,
so grace periods are tested without sleeping; holes age on the ledger's monotonic clock, a
:class:`FakeClock` the tests move along with ``now`` (or not, to step the wall clock alone).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.config import PRE_ROLL_MAX
from bridge.model import Quality, Reading, ValueType
from bridge.uploader.chunker import ChunkReading, chunk_body
from bridge.uploader.ledger import Ledger, PendingChunk, Progress
from bridge.uploader.sinks.base import StreamInfo
from bridge.uploader.spool import SPOOL_FILE, Spool
from bridge.wire.contract import Batch, LogEntry, pack, reading_body
from tests.helpers.clock import FakeClock

SITE = "chamber-a"
EPOCH = "e1" * 16
NEW_EPOCH = "e2" * 16
T0 = 1_763_700_000.0  # the bridge's clock
NOW = 1_763_800_000.0  # the uploader's clock when the log arrives
GRACE = 600.0
PPC = 3
RUN = "a1" * 16
OTHER_RUN = "b2" * 16
CLOCK = {"ntp_synchronized": True}


# ---------------------------------------------------------------- a bridge's log


@dataclass
class Log:
    """One bridge outbox's ordered log: every entry gets the next seq, as the outbox gives it."""

    site: str = SITE
    epoch: str = EPOCH
    entries: list[LogEntry] = field(default_factory=list)

    def _add(self, kind: Any, time: float, body: dict[str, Any]) -> int:
        seq = len(self.entries) + 1
        self.entries.append(LogEntry(seq, kind, time, body))
        return seq

    def poll(self, instrument: str, t: float, units: str, **values: float | None) -> list[int]:
        """One poll of an instrument; a value of None is a reading of bad quality (sensor off)."""
        return [self._add("reading", t + 0.002, reading_body(Reading(
            instrument, channel, value, Quality.OK if value is not None else Quality.SENSOR_OFF, t, units)))
            for channel, value in values.items()]

    def start(self, run_id: str, t: float, stream_name: str = "GaN-17", **extra: Any) -> int:
        return self._add("run_start", t, {"run_id": run_id, "stream_name": stream_name, "physical_sample": "S-1",
                                          "synth_source_id": "3", "project_id": "p", "tags": ["GaN", "MBE"],
                                          **extra})

    def stop(self, run_id: str, t: float, status: str = "success") -> int:
        return self._add("run_stop", t, {"run_id": run_id, "exit_status": status, "last_seq": len(self.entries)})

    def batch(self, seqs: Iterable[int] | None = None) -> Batch:
        chosen = self.entries if seqs is None else [self.entries[s - 1] for s in seqs]
        return Batch(self.site, self.epoch, tuple(chosen))

    def without(self, *missing: int) -> Batch:
        return self.batch(s for s in range(1, len(self.entries) + 1) if s not in missing)


@dataclass
class Growth:
    """What :func:`growth` logged: the run's markers and each flow's polls as lists of seqs."""

    run_id: str
    start_seq: int
    stop_seq: int | None
    polls: dict[str, list[list[int]]]
    idle: list[int]


def idle_polls(log: Log, n: int, t: float) -> list[int]:
    return [seq for k in range(n) for seq in log.poll("main_gauge", t + k, "mbar", p1=9.0e-9, p2=1.0e-3)]


def growth(log: Log, run_id: str = RUN, polls: int = 7, t0: float = T0, idle_before: int = 2, idle_after: int = 2,
           stop: bool = True) -> Growth:
    """Idle gauge polls, then a run of ``polls`` polls of two instruments with two channels each, then idle again.

    main_gauge/p2 is off in polls 1 and 5; pyro/t2 is off in polls 0-2 (the whole of chunk 0 at ppc 3).
    """
    idle = idle_polls(log, idle_before, t0 - 100)
    start_seq = log.start(run_id, t0)
    flows: dict[str, list[list[int]]] = {"main_gauge": [], "pyro": []}
    for k in range(polls):
        flows["main_gauge"].append(log.poll("main_gauge", t0 + 1 + k, "mbar", p1=1.0e-7 * (k + 1),
                                            p2=None if k in (1, 5) else 2.0e-3 + k * 1.0e-5))
        flows["pyro"].append(log.poll("pyro", t0 + 1.25 + k, "C", t1=600.0 + k, t2=None if k < 3 else 700.5 + k))
    stop_seq = log.stop(run_id, t0 + polls + 1) if stop else None
    idle += idle_polls(log, idle_after, t0 + polls + 100)
    return Growth(run_id, start_seq, stop_seq, flows, idle)


def expected_chunks(polls: dict[str, list[list[int]]], ppc: int = PPC) -> list[tuple[str, int, int, int, int]]:
    """(flow, chunk_index, first_seq, last_seq, points) for chunk k = polls k*ppc .. (k+1)*ppc-1, in seq order."""
    out = []
    for flow, seqs in polls.items():
        for index, first in enumerate(range(0, len(seqs), ppc)):
            group = seqs[first:first + ppc]
            out.append((flow, index, group[0][0], group[-1][-1], len(group)))
    return sorted(out, key=lambda c: c[2])


# ---------------------------------------------------------------- the ledger's state


def cut(state_dir: Path, run_id: str | None = None) -> list[tuple[Any, ...]]:
    """The chunks the ledger recorded: (flow, chunk_index, first_seq, last_seq, points), in seq order."""
    db = sqlite3.connect(state_dir / SPOOL_FILE)
    try:
        return db.execute("SELECT flow, chunk_index, first_seq, last_seq, points FROM chunks"
                          " WHERE run_id=coalesce(?, run_id) ORDER BY run_id, first_seq", (run_id,)).fetchall()
    finally:
        db.close()


def held(state_dir: Path, epoch: str = EPOCH) -> list[int]:
    db = sqlite3.connect(state_dir / SPOOL_FILE)
    try:
        return [s for (s,) in db.execute("SELECT seq FROM entries WHERE epoch=? ORDER BY seq", (epoch,))]
    finally:
        db.close()


def initialize_all(ledger: Ledger) -> list[StreamInfo]:
    """What the service does with a local sink: data_id = run_id."""
    streams = ledger.streams_to_initialize()
    for stream in streams:
        ledger.set_data_id(stream.run_id, stream.run_id)
    return streams


def deliver_all(ledger: Ledger) -> list[PendingChunk]:
    initialize_all(ledger)
    pending = ledger.pending_chunks(limit=10_000)
    ledger.confirm(pending)
    return pending


def source(ledger: Ledger, epoch: str = EPOCH) -> Any:
    (found,) = [s for s in ledger.sources() if s.epoch == epoch]
    return found


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def spool(state_dir: Path) -> Iterator[Spool]:
    spool = Spool(state_dir)
    try:
        yield spool
    finally:
        spool.close()


@pytest.fixture
def mono() -> FakeClock:
    """The monotonic clock the ledger ages holes on."""
    return FakeClock(NOW)


def advance(ledger: Ledger, mono: FakeClock, now: float) -> Progress:
    """The pass at ``now``, the monotonic clock moved along with the wall clock (no clock step)."""
    mono.now = now
    return ledger.advance(now=now)


@pytest.fixture
def ledger(spool: Spool, state_dir: Path, mono: FakeClock) -> Iterator[Ledger]:
    ledger = Ledger(state_dir, points_per_chunk=PPC, grace=GRACE, clock=mono)
    try:
        yield ledger
    finally:
        ledger.close()


# ---------------------------------------------------------------- a run becomes chunks


def test_a_run_is_cut_into_chunks_per_flow_and_idle_readings_are_dropped(spool: Spool, ledger: Ledger,
                                                                         state_dir: Path) -> None:
    log = Log()
    run = growth(log)
    spool.commit([log.batch()], now=NOW)
    progress = ledger.advance(now=NOW)

    assert cut(state_dir) == expected_chunks(run.polls)
    assert [(c[0], c[1], c[4]) for c in cut(state_dir)] == [("main_gauge", 0, 3), ("pyro", 0, 3), ("main_gauge", 1, 3),
                                                         ("pyro", 1, 3), ("main_gauge", 2, 1), ("pyro", 2, 1)]
    assert (progress.entries, progress.chunks, progress.runs_stopped, progress.skipped) == (
        len(log.entries), 6, [RUN], {})
    # readings outside the run are acknowledged but not kept (keep_idle is off): the start marker drops
    # those before it; those after the stop wait, as a later start's pre-roll might claim them
    after = [seq for seq in run.idle if seq > run.stop_seq]  # type: ignore[operator]
    assert run.idle and held(state_dir) == list(range(run.start_seq, run.stop_seq + 1)) + after  # type: ignore[operator]
    assert ledger.held() == run.stop_seq - run.start_seq + 1 + len(after)  # type: ignore[operator]
    (stream,) = initialize_all(ledger)
    assert stream == StreamInfo(run_id=RUN, site=SITE, stream_name="GaN-17", physical_sample="S-1", synth_source_id="3",
                                project_id="p", tags=("GaN", "MBE"), points_per_chunk=PPC, started_at=T0)
    assert ledger.streams_to_initialize() == []
    pending = ledger.pending_chunks()
    assert [(p.flow, p.chunk_index, p.first_seq, p.last_seq) for p in pending] == [
        c[:4] for c in expected_chunks(run.polls)]
    assert {(p.run_id, p.site, p.epoch, p.data_id) for p in pending} == {(RUN, SITE, EPOCH, RUN)}
    assert ledger.backlog() == 6
    assert source(ledger).cursor == len(log.entries) and source(ledger).open_run is None


def test_idle_readings_leave_the_spool_once_older_than_the_longest_pre_roll(spool: Spool, ledger: Ledger,
                                                                          state_dir: Path) -> None:
    log = Log()
    run = growth(log)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    after = [seq for seq in run.idle if seq > run.stop_seq]  # type: ignore[operator]
    assert set(after) <= set(held(state_dir))
    late = idle_polls(log, 1, T0 + run.stop_seq + 100 + PRE_ROLL_MAX + 60)  # the bridge's clock moved on
    spool.commit([log.batch(late)], now=NOW)
    ledger.advance(now=NOW)
    assert not set(after) & set(held(state_dir)) and set(late) <= set(held(state_dir))
    db = sqlite3.connect(state_dir / SPOOL_FILE)
    try:
        assert db.execute("SELECT idle_trimmed FROM sources").fetchone() == (after[-1],)
    finally:
        db.close()


def test_a_quiet_source_keeps_no_idle_readings(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    idle = idle_polls(log, 3, T0)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    assert held(state_dir) == idle  # waiting for a start marker that may claim them
    ledger.advance(now=NOW + PRE_ROLL_MAX)
    assert held(state_dir) == idle
    ledger.advance(now=NOW + PRE_ROLL_MAX + 1)  # nothing arrived for the longest pre-roll: the bridge is gone
    assert held(state_dir) == []


def test_idle_readings_are_kept_when_configured_and_never_chunked(spool: Spool, state_dir: Path) -> None:
    log = Log()
    run = growth(log)
    spool.commit([log.batch()], now=NOW)
    keeper = Ledger(state_dir, points_per_chunk=PPC, grace=GRACE, keep_idle=True)
    try:
        keeper.advance(now=NOW)
        assert held(state_dir) == list(range(1, len(log.entries) + 1))
        assert cut(state_dir) == expected_chunks(run.polls)
        deliver_all(keeper)
        keeper.begin_finalize(RUN, CLOCK, now=NOW)
        keeper.end_finalize(RUN)
        assert held(state_dir) == run.idle
    finally:
        keeper.close()


def test_a_chunk_is_rebuilt_from_the_spool_byte_for_byte(spool: Spool, ledger: Ledger) -> None:
    log = Log()
    run = growth(log)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    initialize_all(ledger)
    pending = ledger.pending_chunks()
    gauge0 = next(p for p in pending if (p.flow, p.chunk_index) == ("main_gauge", 0))
    pyro0 = next(p for p in pending if (p.flow, p.chunk_index) == ("pyro", 0))
    body = ledger.chunk(gauge0)
    assert body == {"data_id": RUN, "chunk_index": 0, "channels": {
        "main_gauge/p1": {"timestamps": [T0 + 1, T0 + 2, T0 + 3], "values": [1.0e-7, 2.0e-7, 1.0e-7 * 3],
                          "units": "mbar"},
        "main_gauge/p2": {"timestamps": [T0 + 1, T0 + 2, T0 + 3], "values": [2.0e-3, None, 2.0e-3 + 2 * 1.0e-5],
                          "units": "mbar", "quality": ["ok", "sensor_off", "ok"]},
    }}
    assert pack(ledger.chunk(gauge0)) == pack(body)
    # pyro/t2 is off through the whole of chunk 0: the store keeps it there, without a value
    assert ledger.chunk(pyro0)["channels"]["pyro/t2"]["values"] == [None, None, None]
    assert run.polls["pyro"][0][0] == pyro0.first_seq


def expected_body(log: Log, chunk: PendingChunk) -> dict[str, Any]:
    """A chunk's body straight from the log: its flow's readings with seq in [first_seq, last_seq]."""
    readings = [ChunkReading(e.body["c"], e.body["t"], e.body["v"], e.body["q"], e.body["u"], e.body.get("d"),
                             e.body.get("y"))
                for e in log.entries[chunk.first_seq - 1:chunk.last_seq]
                if e.kind == "reading" and e.body["i"] == chunk.flow]
    return chunk_body(chunk.data_id, chunk.chunk_index, chunk.flow, readings)


def test_chunks_rebuilds_many_at_once_exactly_as_one_by_one(spool: Spool, ledger: Ledger) -> None:
    """Several runs, sites and flows in one call; any subset, in any order."""
    a = Log()
    growth(a)
    growth(a, run_id=OTHER_RUN, polls=4, t0=T0 + 1000, idle_before=1)
    b = Log(site="chamber-b", epoch="b0" * 16)
    growth(b, run_id="c3" * 16, polls=5)
    spool.commit([a.batch(), b.batch()], now=NOW)
    ledger.advance(now=NOW)
    initialize_all(ledger)
    pending = ledger.pending_chunks(limit=1000)
    assert len(pending) == 6 + 4 + 4
    logs = {SITE: a, "chamber-b": b}
    one_by_one = [ledger.chunk(p) for p in pending]
    assert one_by_one == [expected_body(logs[p.site], p) for p in pending]
    assert ledger.chunks(pending) == one_by_one
    assert ledger.chunks(pending[1::3]) == one_by_one[1::3]
    assert ledger.chunks(pending[::-1]) == one_by_one[::-1]
    assert ledger.chunks([]) == []


def test_runs_to_finalize_waits_for_the_stream_and_every_chunk(spool: Spool, ledger: Ledger) -> None:
    log = Log()
    growth(log)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    assert ledger.runs_to_finalize() == []  # stopped, but no stream yet
    initialize_all(ledger)
    pending = ledger.pending_chunks()
    assert ledger.runs_to_finalize() == []
    ledger.confirm(pending[:-1])
    assert ledger.runs_to_finalize() == []
    assert ledger.pending_chunks() == pending[-1:]
    ledger.confirm(pending[-1:])
    assert ledger.runs_to_finalize() == [RUN]
    assert ledger.pending_chunks() == [] and ledger.backlog() == 0


def test_an_open_run_is_never_ready_to_finalize(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    run = growth(log, stop=False, idle_after=0)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW + 10 * GRACE)  # no newer epoch: an open run waits for its stop, however long
    deliver_all(ledger)
    assert ledger.runs_to_finalize() == []
    assert source(ledger).open_run == RUN
    # only full chunks are cut while the run is open: the last poll may still get channels
    assert cut(state_dir) == expected_chunks(run.polls)[:4]
    assert ledger.open_runs() == [{"run_id": RUN, "site": SITE, "stream_name": "GaN-17", "state": "open"}]


def test_begin_finalize_freezes_the_manifest_and_a_repeat_returns_it_unchanged(spool: Spool, ledger: Ledger,
                                                                              state_dir: Path) -> None:
    log = Log()
    growth(log)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    deliver_all(ledger)
    first = ledger.begin_finalize(RUN, CLOCK, now=NOW + 5)
    assert first["finalized"] is True and first["finalized_at"] == NOW + 5
    assert first["report"]["clock"] == CLOCK
    assert ledger.begin_finalize(RUN, {"ntp_synchronized": False}, now=NOW + 99) == first
    assert ledger.runs_to_finalize() == [RUN]  # finalizing: the sink's finalize may be repeated
    ledger.close()
    reopened = Ledger(state_dir, points_per_chunk=PPC, grace=GRACE)  # a crash before the sink confirmed
    try:
        assert reopened.runs_to_finalize() == [RUN]
        assert reopened.begin_finalize(RUN, {}, now=NOW + 1000) == first
    finally:
        reopened.close()


def test_end_finalize_deletes_the_run_and_only_the_run(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    growth(log, idle_after=0)
    second = growth(log, run_id=OTHER_RUN, t0=T0 + 1000, idle_before=0, stop=False)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    deliver_all(ledger)
    ledger.begin_finalize(RUN, CLOCK, now=NOW)
    ledger.end_finalize(RUN)
    # left: the open second run's start marker and the readings of its chunk still being filled
    # (confirmed chunks' readings leave the spool at confirmation)
    left = held(state_dir)
    assert left[0] == second.start_seq and all(seq > second.start_seq for seq in left[1:])
    assert ledger.runs_to_finalize() == []
    assert cut(state_dir, RUN) == []
    assert [r["run_id"] for r in ledger.open_runs()] == [OTHER_RUN]
    assert ledger.held() == len(left)


def test_the_manifest_counts_exactly(spool: Spool, ledger: Ledger) -> None:
    log = Log()
    growth(log)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    deliver_all(ledger)
    ledger.count_retry(RUN)
    manifest = ledger.begin_finalize(RUN, CLOCK, now=NOW + 1)
    assert manifest["channels"] == {
        "main_gauge/p1": {"flow": "main_gauge", "units": "mbar", "type": "float", "points": 7, "qualities": {"ok": 7},
                          "bad_quality": 0, "not_numeric": 0, "chunks": 3},
        "main_gauge/p2": {"flow": "main_gauge", "units": "mbar", "type": "float", "points": 7,
                          "qualities": {"ok": 5, "sensor_off": 2}, "bad_quality": 2, "not_numeric": 0, "chunks": 3},
        "pyro/t1": {"flow": "pyro", "units": "C", "type": "float", "points": 7, "qualities": {"ok": 7},
                    "bad_quality": 0, "not_numeric": 0, "chunks": 3},
        "pyro/t2": {"flow": "pyro", "units": "C", "type": "float", "points": 7, "qualities": {"ok": 4, "sensor_off": 3},
                    "bad_quality": 3, "not_numeric": 0, "chunks": 3},
    }
    assert list(manifest["channels"]) == ["main_gauge/p1", "main_gauge/p2", "pyro/t1", "pyro/t2"]
    assert manifest["flows"] == {"main_gauge": {"points": 7, "chunks": 3}, "pyro": {"points": 7, "chunks": 3}}
    report = manifest["report"]
    assert {k: report[k] for k in ("complete", "finalized_because", "readings", "qualities", "bad_quality",
                                   "not_numeric", "chunks", "retries", "clock", "types_changed")} == {
        "complete": True, "finalized_because": "complete", "readings": 28, "qualities": {"ok": 23, "sensor_off": 5},
        "bad_quality": 5, "not_numeric": 0, "chunks": 6, "retries": 1, "clock": CLOCK, "types_changed": []}
    assert {k: manifest[k] for k in ("v", "data_id", "stream_name", "site", "run_id", "physical_sample",
                                     "synth_source_id", "project_id", "tags", "points_per_chunk", "started_at",
                                     "stopped_at", "exit_status", "finalized", "finalized_at", "gaps")} == {
        "v": 2, "data_id": RUN, "stream_name": "GaN-17", "site": SITE, "run_id": RUN, "physical_sample": "S-1",
        "synth_source_id": "3", "project_id": "p", "tags": ["GaN", "MBE"], "points_per_chunk": PPC,
        "started_at": T0, "stopped_at": T0 + 8, "exit_status": "success", "finalized": True,
        "finalized_at": NOW + 1, "gaps": []}


def test_chunk_point_counts_match_the_manifest(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    growth(log, polls=11)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    manifest = ledger.manifest(RUN)
    for flow, counts in manifest["flows"].items():
        chunks = [c for c in cut(state_dir) if c[0] == flow]
        assert (sum(c[4] for c in chunks), len(chunks)) == (counts["points"], counts["chunks"]) == (11, 4)


# ---------------------------------------------------------------- the pass resumes where it stopped


def reference(tmp_path: Path, log: Log, ppc: int = PPC) -> tuple[list[tuple[Any, ...]], list[bytes], dict[str, Any]]:
    """One uninterrupted pass over the whole log: the chunks, their bodies, the manifest."""
    state = tmp_path / "reference"
    spool, ledger = Spool(state), Ledger(state, points_per_chunk=ppc, grace=GRACE)
    try:
        spool.commit([log.batch()], now=NOW)
        ledger.advance(now=NOW)
        return outcome(ledger, state)
    finally:
        ledger.close()
        spool.close()


def outcome(ledger: Ledger, state: Path) -> tuple[list[tuple[Any, ...]], list[bytes], dict[str, Any]]:
    """What was cut, the bodies as first pushed (a confirmed chunk's readings leave the spool), the manifest."""
    initialize_all(ledger)
    pending = ledger.pending_chunks(limit=10_000)
    bodies = [pack(ledger.chunk(p)) for p in pending]
    ledger.confirm(pending)
    return cut(state), bodies, ledger.manifest(RUN, finalized=True, clock=CLOCK)


@pytest.mark.parametrize("split", [1, 3, 4, 5, 6, 8, 12, 19, 24, 31, 32, 33])
def test_the_pass_resumes_identically_after_a_restart(tmp_path: Path, split: int) -> None:
    """A crash after any commit: the reopened ledger continues every flow's chunk and point where it stood."""
    log = Log()
    growth(log)  # 2 idle polls (seqs 1-4), start (5), 7 polls of 2x2 (6-33), stop (34), 2 idle polls
    expected = reference(tmp_path, log)
    state = tmp_path / "restarted"
    spool, ledger = Spool(state), Ledger(state, points_per_chunk=PPC, grace=GRACE)
    spool.commit([log.batch(range(1, split + 1))], now=NOW)
    ledger.advance(now=NOW)
    ledger.close()
    spool.close()
    spool, ledger = Spool(state), Ledger(state, points_per_chunk=PPC, grace=GRACE)
    try:
        spool.commit([log.batch(range(split + 1, len(log.entries) + 1))], now=NOW)
        ledger.advance(now=NOW)
        assert outcome(ledger, state) == expected
    finally:
        ledger.close()
        spool.close()


@pytest.mark.parametrize("ppc", [1, 2, 3, 100])
def test_a_pass_after_every_entry_cuts_what_one_pass_over_all_cuts(tmp_path: Path, ppc: int) -> None:
    log = Log()
    growth(log)
    expected = reference(tmp_path, log, ppc)
    state = tmp_path / "stepwise"
    spool, ledger = Spool(state), Ledger(state, points_per_chunk=ppc, grace=GRACE)
    try:
        for seq in range(1, len(log.entries) + 1):
            spool.commit([log.batch([seq])], now=NOW)
            ledger.advance(now=NOW)
        assert outcome(ledger, state) == expected
    finally:
        ledger.close()
        spool.close()


def test_out_of_order_arrival_cuts_what_in_order_arrival_cuts(tmp_path: Path) -> None:
    """The pass only reads up to contiguous, so chunks never depend on arrival order."""
    log = Log()
    growth(log)
    expected = reference(tmp_path, log)
    state = tmp_path / "shuffled"
    spool, ledger = Spool(state), Ledger(state, points_per_chunk=PPC, grace=GRACE)
    try:
        n = len(log.entries)
        for seqs in (range(20, n + 1), range(9, 14), range(1, 8), range(14, 20), [8]):
            spool.commit([log.batch(seqs)], now=NOW)
            ledger.advance(now=NOW)
        assert outcome(ledger, state) == expected
    finally:
        ledger.close()
        spool.close()


# ---------------------------------------------------------------- holes


def test_a_hole_older_than_grace_is_skipped_and_recorded_as_a_gap(spool: Spool, ledger: Ledger, mono: FakeClock,
                                                                  state_dir: Path) -> None:
    log = Log()
    run = growth(log)
    hole = run.polls["pyro"][3]  # the pyrometer's poll 3 never arrives
    spool.commit([log.without(*hole)], now=NOW)
    assert advance(ledger, mono, NOW).skipped == {}
    assert source(ledger).contiguous == hole[0] - 1
    assert advance(ledger, mono, NOW + GRACE).skipped == {}  # not older than grace yet

    progress = advance(ledger, mono, NOW + GRACE + 1)
    assert progress.skipped == {(SITE, EPOCH): len(log.entries)}
    assert progress.runs_stopped == [RUN]
    src = source(ledger)
    assert (src.contiguous, src.cursor, src.gap_since) == (len(log.entries), len(log.entries), None)
    manifest = ledger.manifest(RUN)
    gap = {"site": SITE, "epoch": EPOCH, "from_seq": hole[0], "to_seq": hole[-1],
           "cause": "not received within the grace period (600 s)"}
    assert manifest["gaps"] == [gap]
    assert (manifest["report"]["complete"], manifest["report"]["finalized_because"]) == (False, "grace_expired")
    assert manifest["channels"]["pyro/t1"]["points"] == 6
    assert manifest["flows"]["pyro"] == {"points": 6, "chunks": 2}
    # the hole arriving after all is too late: dropped, and the ack already moved past it
    intake = spool.commit([log.batch(hole)], now=NOW + GRACE + 2)
    assert (intake.stored, intake.duplicates, intake.contiguous) == (0, 2, {(SITE, EPOCH): len(log.entries)})
    assert hole[0] not in held(state_dir)


def test_a_hole_outside_a_run_is_skipped_without_a_gap_in_any_run(spool: Spool, ledger: Ledger,
                                                                  mono: FakeClock) -> None:
    log = Log()
    run = growth(log)
    spool.commit([log.without(2, 3)], now=NOW)
    advance(ledger, mono, NOW)
    assert advance(ledger, mono, NOW + GRACE + 1).skipped == {(SITE, EPOCH): len(log.entries)}
    assert ledger.manifest(RUN)["gaps"] == []
    assert source(ledger).cursor == len(log.entries)
    assert cut(ledger.path) == expected_chunks(run.polls)


def test_a_hole_younger_than_grace_blocks_the_pass(spool: Spool, ledger: Ledger, mono: FakeClock,
                                                  state_dir: Path) -> None:
    log = Log()
    run = growth(log)
    hole = run.polls["main_gauge"][4]
    spool.commit([log.without(*hole)], now=NOW)
    progress = advance(ledger, mono, NOW + GRACE / 2)
    assert (progress.skipped, progress.runs_stopped) == ({}, [])
    src = source(ledger)
    assert (src.cursor, src.contiguous, src.open_run) == (hole[0] - 1, hole[0] - 1, RUN)
    assert ledger.missing(src) == 2
    deliver_all(ledger)
    assert ledger.runs_to_finalize() == []  # the stop marker is held, but not reached
    # the bridge resends the hole in time: the run completes with no gap
    spool.commit([log.batch(hole)], now=NOW + GRACE - 1)
    assert advance(ledger, mono, NOW + GRACE + 1).runs_stopped == [RUN]
    assert cut(state_dir) == expected_chunks(run.polls)
    deliver_all(ledger)
    assert ledger.runs_to_finalize() == [RUN]
    assert ledger.manifest(RUN)["gaps"] == [] and ledger.manifest(RUN)["report"]["complete"] is True


def test_a_hole_gets_its_own_grace_when_an_older_hole_before_it_fills(spool: Spool, ledger: Ledger,
                                                                      mono: FakeClock) -> None:
    """The grace runs from when a seq is first missed, not from when the source first had any hole."""
    log = Log()
    run = growth(log)
    first_hole, later_hole = run.polls["main_gauge"][1], run.polls["main_gauge"][5]
    spool.commit([log.batch(s for s in range(1, later_hole[0]) if s not in first_hole)], now=NOW)
    assert advance(ledger, mono, NOW).skipped == {}
    # grace - 100 s later the first hole is resent and the log goes on, but without later_hole
    spool.commit([log.batch(s for s in range(first_hole[0], len(log.entries) + 1) if s not in later_hole)],
                 now=NOW + GRACE - 100)
    assert advance(ledger, mono, NOW + GRACE - 100).skipped == {}
    assert source(ledger).cursor == source(ledger).contiguous == later_hole[0] - 1
    assert advance(ledger, mono, NOW + GRACE + 1).skipped == {}  # missing for 101 s only
    assert advance(ledger, mono, NOW + 2 * GRACE - 100).skipped == {}
    assert advance(ledger, mono, NOW + 2 * GRACE - 99).skipped == {(SITE, EPOCH): len(log.entries)}
    assert [(g["from_seq"], g["to_seq"]) for g in ledger.manifest(RUN)["gaps"]] == [(later_hole[0], later_hole[1])]


def test_a_step_of_the_wall_clock_does_not_age_a_hole(spool: Spool, ledger: Ledger, mono: FakeClock) -> None:
    """Fault matrix row 19: the wall clock jumps a day ahead while a hole is open. The hole has not been
    missing for the grace period (the monotonic clock says so), so it waits for the bridge's resend."""
    log = Log()
    run = growth(log)
    hole = run.polls["main_gauge"][4]
    spool.commit([log.without(*hole)], now=NOW)
    assert advance(ledger, mono, NOW).skipped == {}
    day = 86_400.0
    assert ledger.advance(now=NOW + day).skipped == {}  # the wall clock stepped; no time passed
    mono.now += GRACE
    assert ledger.advance(now=NOW + day + GRACE).skipped == {}  # missing for exactly the grace period
    spool.commit([log.batch(hole)], now=NOW + day + GRACE)  # the bridge resends it
    assert ledger.advance(now=NOW + day + GRACE).runs_stopped == [RUN]
    assert ledger.manifest(RUN)["gaps"] == []


# ---------------------------------------------------------------- runs that end without their stop


def test_a_run_left_open_in_an_old_epoch_is_closed_as_abort(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    old = Log()
    run = growth(old, polls=4, stop=False, idle_after=0)  # the bridge's SD card died mid-run
    spool.commit([old.batch()], now=NOW)
    ledger.advance(now=NOW)
    assert ledger.advance(now=NOW + 5 * GRACE).runs_stopped == []  # no newer epoch: it is only quiet
    new = Log(epoch=NEW_EPOCH)
    idle_polls(new, 2, T0 + 500)
    old_quiet = NOW + 6 * GRACE
    spool.commit([old.batch([1]), new.batch()], now=old_quiet)  # a late resend from the old outbox, then the new
    assert ledger.advance(now=old_quiet).runs_stopped == []
    assert ledger.advance(now=old_quiet + GRACE).runs_stopped == []  # quiet past grace counts from its last arrival
    assert ledger.advance(now=old_quiet + GRACE + 1).runs_stopped == [RUN]

    assert source(ledger).open_run is None
    assert cut(state_dir) == expected_chunks(run.polls)  # the last, shorter chunks are cut too
    deliver_all(ledger)
    assert ledger.runs_to_finalize() == [RUN]
    manifest = ledger.begin_finalize(RUN, CLOCK, now=old_quiet + GRACE + 2)
    assert manifest["exit_status"] == "abort"
    assert manifest["stopped_at"] == old_quiet + GRACE + 1
    assert "new epoch" in manifest["report"]["stop_reason"]
    assert manifest["flows"] == {"main_gauge": {"points": 4, "chunks": 2}, "pyro": {"points": 4, "chunks": 2}}
    assert {name: c["points"] for name, c in manifest["channels"].items()} == {
        "main_gauge/p1": 4, "main_gauge/p2": 4, "pyro/t1": 4, "pyro/t2": 4}
    assert manifest["report"]["readings"] == 16
    ledger.end_finalize(RUN)
    assert held(state_dir) == []


def test_a_run_start_while_a_run_is_open_closes_it_as_abort(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    first = growth(log, polls=4, stop=False, idle_after=0)
    second = growth(log, run_id=OTHER_RUN, polls=2, t0=T0 + 1000, idle_before=0)
    spool.commit([log.batch()], now=NOW)
    assert ledger.advance(now=NOW).runs_stopped == [RUN, OTHER_RUN]
    assert cut(state_dir, RUN) == expected_chunks(first.polls)
    assert cut(state_dir, OTHER_RUN) == expected_chunks(second.polls)
    deliver_all(ledger)
    assert ledger.runs_to_finalize() == [RUN, OTHER_RUN]
    manifest = ledger.begin_finalize(RUN, CLOCK, now=NOW)
    assert (manifest["exit_status"], manifest["stopped_at"]) == ("abort", T0 + 1000)
    assert manifest["report"]["stop_reason"] == "a new run started before it was stopped"
    assert manifest["report"]["last_seq"] == second.start_seq - 1
    assert manifest["flows"] == {"main_gauge": {"points": 4, "chunks": 2}, "pyro": {"points": 4, "chunks": 2}}
    assert manifest["channels"]["pyro/t1"] == {"flow": "pyro", "units": "C", "type": "float", "points": 4,
                                               "qualities": {"ok": 4}, "bad_quality": 0, "not_numeric": 0,
                                               "chunks": 2}
    assert manifest["report"]["readings"] == 16
    assert ledger.manifest(OTHER_RUN)["exit_status"] == "success"
    ledger.end_finalize(RUN)
    # the second run's markers (its chunks are confirmed, their readings gone) and the idle readings after it
    assert held(state_dir) == [second.start_seq, second.stop_seq, *second.idle]


def test_a_stop_marker_for_a_run_that_is_not_open_is_ignored(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    idle_polls(log, 1, T0 - 10)
    log.stop("c3" * 16, T0 - 5)  # no run is open
    start = log.start(RUN, T0)
    gauge = [log.poll("main_gauge", T0 + 1, "mbar", p1=1.0, p2=2.0)]
    log.stop(OTHER_RUN, T0 + 1.5)  # another run's stop while RUN is open
    gauge.append(log.poll("main_gauge", T0 + 2, "mbar", p1=3.0, p2=4.0))
    stop = log.stop(RUN, T0 + 3)
    spool.commit([log.batch()], now=NOW)
    assert ledger.advance(now=NOW).runs_stopped == [RUN]
    assert cut(state_dir) == [("main_gauge", 0, gauge[0][0], gauge[1][-1], 2)]
    manifest = ledger.manifest(RUN)
    assert (manifest["exit_status"], manifest["stopped_at"]) == ("success", T0 + 3)
    assert (manifest["report"]["first_seq"], manifest["report"]["last_seq"]) == (start, stop)
    assert manifest["report"]["readings"] == 4
    assert [s.open_run for s in ledger.sources()] == [None]


# ---------------------------------------------------------------- resumed runs and events (docs/runs.md)


def resume(log: Log, run_id: str, down_from: float, down_to: float) -> int:
    return log._add("run_resume", down_to, {"run_id": run_id, "down_from": down_from, "down_to": down_to})


def event(log: Log, t: float, text: str, run_id: str | None = None, tags: list[str] | None = None) -> int:
    return log._add("event", t, {"text": text, "tags": tags or [], "source": "cli", "run_id": run_id})


def test_a_resumed_run_records_the_time_down_as_a_gap_and_stays_complete(spool: Spool, ledger: Ledger,
                                                                        state_dir: Path) -> None:
    log = Log()
    start = log.start(RUN, T0)
    before = [log.poll("main_gauge", T0 + 1 + k, "mbar", p1=1.0 + k, p2=2.0) for k in range(2)]
    at = resume(log, RUN, T0 + 2.5, T0 + 5.5)
    after = [log.poll("main_gauge", T0 + 6 + k, "mbar", p1=5.0 + k, p2=2.0) for k in range(2)]
    stop = log.stop(RUN, T0 + 8)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    deliver_all(ledger)
    manifest = ledger.begin_finalize(RUN, CLOCK, now=NOW)
    assert manifest["gaps"] == [{"site": SITE, "epoch": EPOCH, "cause": "bridge_down", "at_seq": at,
                                 "from_time": T0 + 2.5, "to_time": T0 + 5.5}]
    report = manifest["report"]
    assert (report["complete"], report["finalized_because"], report["bridge_down_s"]) == (True, "complete", 3.0)
    assert report["readings"] == 8 and (report["first_seq"], report["last_seq"]) == (start, stop)
    assert manifest["exit_status"] == "success"
    assert cut(state_dir) == [("main_gauge", 0, before[0][0], after[0][-1], 3),
                              ("main_gauge", 1, after[1][0], after[1][-1], 1)]


def test_a_resume_for_a_run_that_is_not_open_is_ignored(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    idle = idle_polls(log, 1, T0)
    resume(log, RUN, T0 + 1, T0 + 2)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    # the marker leaves the spool; the idle readings wait for a pre-roll (or the pre-roll horizon)
    assert held(state_dir) == idle and ledger.open_runs() == []


def test_a_hole_and_a_resume_both_count_but_only_the_hole_makes_the_run_incomplete(
        spool: Spool, ledger: Ledger, mono: FakeClock) -> None:
    log = Log()
    log.start(RUN, T0)
    lost = log.poll("main_gauge", T0 + 1, "mbar", p1=1.0, p2=2.0)
    resume(log, RUN, T0 + 1.5, T0 + 9.5)
    log.poll("main_gauge", T0 + 10, "mbar", p1=1.0, p2=2.0)
    log.stop(RUN, T0 + 11)
    spool.commit([log.without(*lost)], now=NOW)
    advance(ledger, mono, NOW)
    advance(ledger, mono, NOW + GRACE + 1)
    manifest = ledger.manifest(RUN)
    assert [g["cause"] for g in manifest["gaps"]] == [f"not received within the grace period ({GRACE:g} s)",
                                                      "bridge_down"]
    assert manifest["report"]["complete"] is False and manifest["report"]["bridge_down_s"] == 8.0


def test_events_go_with_their_run_in_log_order_and_those_outside_runs_are_kept(spool: Spool, ledger: Ledger,
                                                                              state_dir: Path) -> None:
    log = Log()
    idle_seq = event(log, T0 - 10, "bake-out done", tags=["bake"])
    log.start(RUN, T0)
    first = event(log, T0 + 0.5, "Ga shutter open", RUN, ["shutter"])
    log.poll("main_gauge", T0 + 1, "mbar", p1=1.0, p2=2.0)
    second = event(log, T0 + 1.5, "Ga shutter closed", RUN, ["shutter"])
    log.stop(RUN, T0 + 2)
    after = event(log, T0 + 3, "venting")
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    assert held(state_dir) == [2, 4, 5, 7]  # the run's markers and readings wait; the events are in their table
    deliver_all(ledger)
    manifest = ledger.begin_finalize(RUN, CLOCK, now=NOW)
    assert manifest["events"] == [
        {"seq": first, "time": T0 + 0.5, "text": "Ga shutter open", "tags": ["shutter"], "source": "cli"},
        {"seq": second, "time": T0 + 1.5, "text": "Ga shutter closed", "tags": ["shutter"], "source": "cli"}]
    assert manifest["report"]["events"] == 2
    ledger.end_finalize(RUN)
    outside = ledger.events(site=SITE)
    assert [(e["seq"], e["text"], e["run_id"]) for e in outside] == [(idle_seq, "bake-out done", None),
                                                                     (after, "venting", None)]
    assert held(state_dir) == []


def test_an_event_delivered_twice_is_kept_once(spool: Spool, ledger: Ledger) -> None:
    log = Log()
    log.start(RUN, T0)
    event(log, T0 + 1, "once", RUN)
    log.stop(RUN, T0 + 2)
    spool.commit([log.batch([1, 2])], now=NOW)
    ledger.advance(now=NOW)
    spool.commit([log.batch()], now=NOW)  # a resend overlapping what was taken
    ledger.advance(now=NOW)
    assert [e["text"] for e in ledger.manifest(RUN)["events"]] == ["once"]


def test_an_automatic_runs_trigger_and_why_are_in_its_manifest(spool: Spool, ledger: Ledger) -> None:
    log = Log()
    why_start = {"expression": "cell_ga.pv > 500.0", "values": {"cell_ga.pv": 512.0}}
    why_stop = {"expression": "cell_ga.pv < 400.0", "values": {"cell_ga.pv": 399.0}}
    log._add("run_start", T0, {"run_id": RUN, "stream_name": "auto-1", "tags": [], "trigger": "auto",
                               "why": why_start})
    log._add("run_stop", T0 + 1, {"run_id": RUN, "exit_status": "success", "last_seq": 1, "why": why_stop})
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    manifest = ledger.manifest(RUN)
    assert manifest["trigger"] == "auto" and manifest["why"] == {"start": why_start, "stop": why_stop}


def test_typed_readings_keep_their_type_and_the_manifest_counts_what_atomscale_leaves_out(
        spool: Spool, ledger: Ledger) -> None:
    log = Log()
    log.start(RUN, T0)
    for k in range(4):
        t = T0 + 1 + k
        readings = [
            Reading("psu", "output", k % 2 == 0, Quality.OK, t, "", type=ValueType.BOOL),
            Reading("psu", "mode", "CC" if k == 2 else "CV", Quality.OK, t, "", type=ValueType.ENUM)
            if k != 3 else Reading("psu", "mode", None, Quality.INVALID, t, "", "reply 'UR?'", ValueType.ENUM),
            Reading("psu", "faults", 5 if k == 1 else 0, Quality.OK, t, "", "OVP, AC fail" if k == 1 else "",
                    ValueType.BITS),
            Reading("psu", "recipe", "GaN buffer", Quality.OK, t, "", type=ValueType.STRING),
        ]
        for r in readings:
            log._add("reading", t, reading_body(r))
    log.stop(RUN, T0 + 10)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    initialize_all(ledger)
    first = next(p for p in ledger.pending_chunks() if p.chunk_index == 0)
    channels = ledger.chunk(first)["channels"]
    assert channels["psu/output"] == {"timestamps": [T0 + 1, T0 + 2, T0 + 3], "values": [True, False, True],
                                      "units": "", "type": "bool"}
    assert channels["psu/faults"]["values"] == [0, 5, 0] and type(channels["psu/faults"]["values"][1]) is int
    assert channels["psu/faults"]["detail"] == ["", "OVP, AC fail", ""]
    assert channels["psu/mode"]["values"] == ["CV", "CV", "CC"]
    assert channels["psu/recipe"]["values"] == ["GaN buffer"] * 3
    deliver_all(ledger)
    manifest = ledger.begin_finalize(RUN, CLOCK, now=NOW)
    assert {name: (c["type"], c["qualities"], c["not_numeric"]) for name, c in manifest["channels"].items()} == {
        "psu/output": ("bool", {"ok": 4}, 0), "psu/mode": ("enum", {"ok": 3, "invalid": 1}, 3),
        "psu/faults": ("bits", {"ok": 4}, 0), "psu/recipe": ("string", {"ok": 4}, 4)}
    assert (manifest["report"]["not_numeric"], manifest["report"]["bad_quality"]) == (7, 1)


# ---------------------------------------------------------------- pre-roll: an automatic run's earlier readings


def pre_rolled(log: Log, pre_roll_polls: int, polls: int = 4, **start: Any) -> tuple[Growth, list[list[int]]]:
    """Idle polls of main_gauge, then a start marker whose pre_roll_from is the first of the last
    ``pre_roll_polls`` of them, then ``polls`` polls of the run and its stop. Returns the growth and the
    pre-roll polls."""
    idle = [log.poll("main_gauge", T0 - 10 + k, "mbar", p1=1.0e-8 * (k + 1), p2=2.0e-3) for k in range(6)]
    pre = idle[len(idle) - pre_roll_polls:]
    start_seq = log.start(RUN, T0, trigger="auto", pre_roll_from=start.pop("pre_roll_from", pre[0][0]), **start)
    flows: dict[str, list[list[int]]] = {"main_gauge": list(pre)}
    for k in range(polls):
        flows["main_gauge"].append(log.poll("main_gauge", T0 + 1 + k, "mbar", p1=1.0e-7 * (k + 1), p2=2.0e-3))
    stop_seq = log.stop(RUN, T0 + polls + 1)
    return Growth(RUN, start_seq, stop_seq, flows, [s for poll in idle[:len(idle) - pre_roll_polls] for s in poll]), pre


def test_a_start_marker_with_pre_roll_from_takes_the_idle_readings_from_there_into_its_run(
        spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    run, pre = pre_rolled(log, pre_roll_polls=4)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    # the pre-roll polls are the run's first points, cut as any other; the idle ones before it are gone
    assert cut(state_dir) == expected_chunks(run.polls)
    assert held(state_dir) == list(range(pre[0][0], run.stop_seq + 1))  # type: ignore[operator]
    deliver_all(ledger)
    manifest = ledger.begin_finalize(RUN, CLOCK, now=NOW)
    assert manifest["channels"]["main_gauge/p1"]["points"] == 4 + 4
    assert (manifest["report"]["first_seq"], manifest["report"]["start_seq"], manifest["report"]["pre_roll_from"]) \
        == (pre[0][0], run.start_seq, pre[0][0])
    assert manifest["trigger"] == "auto" and manifest["report"]["complete"]
    ledger.end_finalize(RUN)
    assert held(state_dir) == []  # every reading of the run, pre-roll included, left with it: none twice


def test_a_pre_roll_never_reaches_into_the_run_before(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    earlier = growth(log, run_id=OTHER_RUN, t0=T0 - 1000, idle_after=1)
    pre_rolled(log, pre_roll_polls=2, pre_roll_from=earlier.start_seq + 2)  # asks for the run before's
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    manifest = ledger.manifest(RUN)
    assert manifest["report"]["first_seq"] == earlier.stop_seq + 1  # type: ignore[operator]
    # the idle readings between the two runs (1 poll after the first, 6 before the second) are the pre-roll
    assert manifest["channels"]["main_gauge/p1"]["points"] == 1 + 6 + 4
    assert ledger.manifest(OTHER_RUN)["channels"]["main_gauge/p1"]["points"] == 7


def test_a_pre_roll_the_spool_no_longer_holds_is_a_gap(spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    old = idle_polls(log, 2, T0 - PRE_ROLL_MAX - 100)
    spool.commit([log.batch(old)], now=NOW)
    later = idle_polls(log, 1, T0 - 5)
    spool.commit([log.batch(later)], now=NOW)
    ledger.advance(now=NOW)
    assert not set(old) & set(held(state_dir))  # older than the longest pre-roll: given up
    start = log.start(RUN, T0, trigger="auto", pre_roll_from=old[0])
    log.poll("main_gauge", T0 + 1, "mbar", p1=1.0e-7, p2=2.0e-3)
    log.stop(RUN, T0 + 2)
    spool.commit([log.batch(range(start, len(log.entries) + 1))], now=NOW)
    ledger.advance(now=NOW)
    manifest = ledger.manifest(RUN)
    assert manifest["gaps"] == [{"site": SITE, "epoch": EPOCH, "from_seq": old[0], "to_seq": old[-1],
                                 "cause": "pre_roll_not_kept"}]
    assert manifest["channels"]["main_gauge/p1"]["points"] == 2  # the one idle poll still held, and the run's


def test_the_events_of_a_pre_roll_belong_to_the_run(spool: Spool, ledger: Ledger) -> None:
    log = Log()
    before = event(log, T0 - 20, "bake-out done")
    idle_polls(log, 2, T0 - 10)
    in_pre_roll = event(log, T0 - 5, "Ga shutter open", tags=["shutter"])  # logged while no run was open
    pre = log.poll("main_gauge", T0 - 4, "mbar", p1=1.0e-8, p2=2.0e-3)
    log.start(RUN, T0, trigger="auto", pre_roll_from=in_pre_roll)
    log.stop(RUN, T0 + 1)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    manifest = ledger.manifest(RUN)
    assert [(e["seq"], e["text"]) for e in manifest["events"]] == [(in_pre_roll, "Ga shutter open")]
    assert manifest["report"]["first_seq"] == in_pre_roll < pre[0]
    assert manifest["channels"]["main_gauge/p1"]["points"] == 1
    assert [e["seq"] for e in ledger.events(site=SITE)] == [before]  # outside runs: only the one before


# ---------------------------------------------------------------- baselines


def baseline(log: Log, t: float, when: str, run_id: str | None, **instruments: dict[str, Any]) -> int:
    return log._add("baseline", t, {"when": when, "run_id": run_id, "instruments": instruments})


GAUGE_AT_START = {"identity": {"vendor": "Pfeiffer Vacuum", "serial": "44990000"},
                  "configuration": {"unit": "mbar", "gauge_1": "PKR"}}
GAUGE_AT_STOP = {"identity": {"vendor": "Pfeiffer Vacuum", "serial": "44990000"},
                 "configuration": {"unit": "Torr", "gauge_1": "PKR"}}


def test_a_runs_start_and_stop_baselines_are_kept_with_it_once_and_what_changed_is_reported(
        spool: Spool, ledger: Ledger, state_dir: Path) -> None:
    log = Log()
    baseline(log, T0 - 5, "connect", None, main_gauge=GAUGE_AT_START)  # outside a run: not kept
    log.start(RUN, T0)
    baseline(log, T0 + 0.1, "start", RUN, main_gauge=GAUGE_AT_START)
    log.poll("main_gauge", T0 + 1, "mbar", p1=1.0)
    baseline(log, T0 + 1.2, "connect", RUN, main_gauge=GAUGE_AT_STOP)  # a reconnect inside: the bridge's record
    baseline(log, T0 + 1.5, "start", RUN, main_gauge=GAUGE_AT_STOP)  # a second start snapshot: ignored
    baseline(log, T0 + 1.9, "stop", RUN, main_gauge=GAUGE_AT_STOP)
    log.stop(RUN, T0 + 2)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    assert held(state_dir) == [2, 4, 8], "the baselines are kept with their run, not as entries"
    spool.commit([log.batch()], now=NOW)  # delivered twice: kept once
    ledger.advance(now=NOW)
    deliver_all(ledger)
    manifest = ledger.begin_finalize(RUN, CLOCK, now=NOW)
    assert manifest["baseline"] == {"start": {"main_gauge": GAUGE_AT_START}, "stop": {"main_gauge": GAUGE_AT_STOP}}
    assert manifest["report"]["baseline_changed"] == ["main_gauge.configuration.unit"]
    ledger.end_finalize(RUN)
    assert held(state_dir) == []


def test_a_run_without_baselines_has_an_empty_one(spool: Spool, ledger: Ledger) -> None:
    log = Log()
    log.start(RUN, T0)
    log.stop(RUN, T0 + 1)
    spool.commit([log.batch()], now=NOW)
    ledger.advance(now=NOW)
    manifest = ledger.manifest(RUN)
    assert (manifest["baseline"], manifest["report"]["baseline_changed"]) == ({}, [])

"""The spool on real SQLite files: dedupe by (site, epoch, seq), contiguous seq per source, durability, the bound."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.model import Quality, Reading, ValueType
from bridge.uploader.spool import SPOOL_FILE, Spool, SpoolError
from bridge.wire.contract import Batch, LogEntry, reading_body, unpack_body

SITE = "chamber-a"
EPOCH = "e1" * 16
T0 = 1_763_700_000.0
NOW = 1_763_800_000.0


def entry(seq: int) -> LogEntry:
    """The reading the bridge logged at ``seq`` (a gauge polled every second)."""
    reading = Reading("main_gauge", "p1", seq * 1.0e-8, Quality.OK, T0 + seq, "mbar")
    return LogEntry(seq, "reading", T0 + seq + 0.001, reading_body(reading))


def batch(*seqs: int, site: str = SITE, epoch: str = EPOCH) -> Batch:
    return Batch(site, epoch, tuple(entry(s) for s in seqs))


def span(first: int, last: int, site: str = SITE, epoch: str = EPOCH) -> Batch:
    return batch(*range(first, last + 1), site=site, epoch=epoch)


def held(state_dir: Path, site: str = SITE, epoch: str = EPOCH) -> list[int]:
    """The seqs on disk for one source, read through a connection of its own (committed data only)."""
    db = sqlite3.connect(state_dir / SPOOL_FILE)
    try:
        return [s for (s,) in db.execute("SELECT seq FROM entries WHERE site=? AND epoch=? ORDER BY seq",
                                         (site, epoch))]
    finally:
        db.close()


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


# ---------------------------------------------------------------- storing


def test_a_commit_stores_the_entries_and_reports_the_contiguous_seq(spool: Spool, state_dir: Path) -> None:
    intake = spool.commit([span(1, 5)], now=NOW)
    assert intake.contiguous == {(SITE, EPOCH): 5}
    assert (intake.stored, intake.duplicates, intake.new_sources) == (5, 0, [(SITE, EPOCH)])
    assert spool.held == 5 and not spool.full
    assert held(state_dir) == [1, 2, 3, 4, 5]
    assert spool.commit([span(6, 7)], now=NOW).new_sources == []


def test_readings_are_stored_as_columns_and_markers_with_their_body(spool: Spool, state_dir: Path) -> None:
    start = {"run_id": "r" * 32, "stream_name": "GaN-17", "tags": ["GaN"]}
    off = Reading("main_gauge", "p2", None, Quality.SENSOR_OFF, T0 + 2, "mbar", "gauge off")
    spool.commit([Batch(SITE, EPOCH, (LogEntry(1, "run_start", T0 + 1, start), entry(2),
                                      LogEntry(3, "reading", T0 + 3, reading_body(off))))], now=NOW)
    db = sqlite3.connect(state_dir / SPOOL_FILE)
    try:
        rows = db.execute("SELECT seq, kind, time, flow, channel, value, quality, t, units, detail, body FROM entries"
                          " ORDER BY seq").fetchall()
    finally:
        db.close()
    assert rows[0][:10] == (1, "run_start", T0 + 1, None, None, None, None, None, None, None)
    assert unpack_body(rows[0][10]) == start
    assert rows[1] == (2, "reading", T0 + 2 + 0.001, "main_gauge", "p1", 2.0e-8, "ok", T0 + 2, "mbar", None, None)
    assert rows[2] == (3, "reading", T0 + 3, "main_gauge", "p2", None, "sensor_off", T0 + 2, "mbar", "gauge off", None)


# ---------------------------------------------------------------- duplicates


def test_the_same_batch_twice_is_stored_once_and_counted(spool: Spool, state_dir: Path) -> None:
    spool.commit([span(1, 3)], now=NOW)
    intake = spool.commit([span(1, 3)], now=NOW)
    assert (intake.stored, intake.duplicates, intake.contiguous) == (0, 3, {(SITE, EPOCH): 3})
    assert held(state_dir) == [1, 2, 3] and spool.held == 3


def test_a_seq_twice_in_one_commit_is_stored_once(spool: Spool, state_dir: Path) -> None:
    intake = spool.commit([batch(1, 2, 2, 3), batch(3)], now=NOW)
    assert (intake.stored, intake.duplicates, intake.contiguous) == (3, 2, {(SITE, EPOCH): 3})
    assert held(state_dir) == [1, 2, 3]


def test_overlapping_batches_store_only_what_is_new(spool: Spool, state_dir: Path) -> None:
    spool.commit([span(1, 5)], now=NOW)
    intake = spool.commit([span(3, 8)], now=NOW)
    assert (intake.stored, intake.duplicates, intake.contiguous) == (3, 3, {(SITE, EPOCH): 8})
    assert held(state_dir) == list(range(1, 9)) and spool.held == 8


def test_a_resend_of_everything_after_contiguous_fills_the_hole_and_drops_the_rest(spool: Spool,
                                                                                   state_dir: Path) -> None:
    """After a reconnect the bridge resends from its last ack: the hole and everything already held behind it."""
    assert spool.commit([span(1, 5), span(7, 9)], now=NOW).contiguous == {(SITE, EPOCH): 5}
    intake = spool.commit([span(6, 9)], now=NOW)
    assert (intake.stored, intake.duplicates, intake.contiguous) == (1, 3, {(SITE, EPOCH): 9})
    assert held(state_dir) == list(range(1, 10)) and spool.held == 9


def test_duplicates_at_or_below_contiguous_are_counted_even_after_the_ledger_deleted_them(spool: Spool,
                                                                                          state_dir: Path) -> None:
    spool.commit([span(1, 4)], now=NOW)
    db = sqlite3.connect(state_dir / SPOOL_FILE)
    with db:
        db.execute("DELETE FROM entries")  # what the ledger does once a run is finalized
    db.close()
    intake = spool.commit([span(1, 4)], now=NOW)
    assert (intake.stored, intake.duplicates, intake.contiguous) == (0, 4, {(SITE, EPOCH): 4})
    assert held(state_dir) == []


# ---------------------------------------------------------------- contiguous


def test_contiguous_stops_at_a_hole_and_jumps_when_it_fills(spool: Spool) -> None:
    key = (SITE, EPOCH)
    assert spool.commit([span(4, 6)], now=NOW).contiguous == {key: 0}
    assert spool.commit([span(1, 2)], now=NOW).contiguous == {key: 2}
    assert spool.commit([batch(9, 8)], now=NOW).contiguous == {key: 2}
    assert spool.commit([batch(3)], now=NOW).contiguous == {key: 6}
    assert spool.commit([batch(7)], now=NOW).contiguous == {key: 9}


def test_a_long_run_of_held_seqs_is_walked_in_one_commit(spool: Spool) -> None:
    """Contiguous is advanced page by page (10 000 seqs at a time) until the first hole."""
    spool.commit([span(2, 25_000)], now=NOW)
    assert spool.commit([batch(1)], now=NOW).contiguous == {(SITE, EPOCH): 25_000}


def test_sites_and_epochs_are_independent_sources(spool: Spool, state_dir: Path) -> None:
    old, new = "a0" * 16, "b0" * 16
    intake = spool.commit([span(1, 3, epoch=old), batch(1, 2, 4, epoch=new), span(1, 2, site="chamber-b", epoch=old)],
                          now=NOW)
    assert intake.contiguous == {(SITE, old): 3, (SITE, new): 2, ("chamber-b", old): 2}
    assert intake.new_sources == [(SITE, old), (SITE, new), ("chamber-b", old)]
    assert intake.stored == 8 and intake.duplicates == 0
    # the same seqs under another source are not duplicates; a hole in one holds no other back
    intake = spool.commit([batch(3, epoch=new), span(3, 4, site="chamber-b", epoch=old)], now=NOW)
    assert intake.contiguous == {(SITE, new): 4, ("chamber-b", old): 4}
    assert (intake.stored, intake.duplicates) == (3, 0)
    assert held(state_dir, epoch=old) == [1, 2, 3]
    assert held(state_dir, epoch=new) == [1, 2, 3, 4]
    assert held(state_dir, site="chamber-b", epoch=old) == [1, 2, 3, 4]


def test_epochs_of_a_site_are_listed_oldest_first(spool: Spool) -> None:
    first, second, third = "ff" * 16, "00" * 16, "88" * 16  # not in alphabetical order
    spool.commit([span(1, 2, epoch=first)], now=NOW)
    spool.commit([span(1, 2, site="chamber-b", epoch="cc" * 16)], now=NOW + 1)
    spool.commit([span(1, 2, epoch=second)], now=NOW + 2)
    spool.commit([span(1, 2, epoch=third)], now=NOW + 3)
    spool.commit([span(3, 4, epoch=first)], now=NOW + 4)  # a late arrival does not make an epoch newer
    assert spool.epochs(SITE) == [first, second, third]
    assert spool.epochs("chamber-b") == ["cc" * 16]
    assert spool.epochs("chamber-z") == []


# ---------------------------------------------------------------- the file


def test_a_second_spool_on_the_same_state_dir_is_refused_naming_the_file(spool: Spool, state_dir: Path) -> None:
    with pytest.raises(SpoolError, match="in use") as raised:
        Spool(state_dir)
    assert str(state_dir / SPOOL_FILE) in str(raised.value)


def test_the_spool_is_durable_across_a_close_and_reopen(state_dir: Path) -> None:
    first = Spool(state_dir)
    first.commit([span(1, 5), span(7, 8)], now=NOW)
    first.close()
    again = Spool(state_dir)  # the lock went with the close
    try:
        assert again.held == 7
        intake = again.commit([span(1, 5)], now=NOW)  # a resend of what was acknowledged before the restart
        assert (intake.stored, intake.duplicates, intake.contiguous) == (0, 5, {(SITE, EPOCH): 5})
        assert intake.new_sources == []
        assert again.commit([batch(6)], now=NOW).contiguous == {(SITE, EPOCH): 8}
    finally:
        again.close()
    assert held(state_dir) == list(range(1, 9))


def test_the_spool_is_full_at_max_entries(state_dir: Path) -> None:
    spool = Spool(state_dir, max_entries=5)
    try:
        spool.commit([span(1, 4)], now=NOW)
        assert (spool.held, spool.full) == (4, False)
        spool.commit([span(1, 4)], now=NOW)  # duplicates take no room
        assert (spool.held, spool.full) == (4, False)
        spool.commit([batch(5)], now=NOW)
        assert (spool.held, spool.full) == (5, True)
    finally:
        spool.close()
    reopened = Spool(state_dir, max_entries=5)  # the count is taken from the disk on open
    try:
        assert (reopened.held, reopened.full) == (5, True)
        db = sqlite3.connect(state_dir / SPOOL_FILE)
        with db:
            db.execute("DELETE FROM entries WHERE seq <= 2")  # a run finalized by the ledger
        db.close()
        assert reopened.full  # as of the last commit ...
        assert reopened.refresh_held() == 3 and not reopened.full  # ... until refreshed
    finally:
        reopened.close()


def test_a_spool_from_before_the_poll_mark_is_migrated(tmp_path: Path) -> None:
    """Spools written before readings carried ``p`` lack the column; opening one adds it."""
    from bridge.uploader.spool import SCHEMA

    db = sqlite3.connect(tmp_path / SPOOL_FILE)
    for statement in SCHEMA:
        db.execute(statement.replace(" body BLOB, poll REAL, vtype TEXT, vtext TEXT,", " body BLOB,"))
    db.commit()
    db.close()
    spool = Spool(tmp_path)
    try:
        spool.commit([batch(1, 2)])
        assert spool.refresh_held() == 2
    finally:
        spool.close()


def test_typed_readings_keep_their_type_and_text_apart_from_the_number_column(spool: Spool,
                                                                             state_dir: Path) -> None:
    """A text in SQLite's REAL column would turn "1.5" into a number: texts have a column of their own."""
    typed = [Reading("psu", "output", True, Quality.OK, T0, "", type=ValueType.BOOL),
             Reading("psu", "mode", "1.5", Quality.OK, T0, "", type=ValueType.ENUM),
             Reading("psu", "faults", 9, Quality.OK, T0, "", "OVP", ValueType.BITS),
             Reading("psu", "mode", None, Quality.INVALID, T0 + 1, "", "not in the map", ValueType.ENUM)]
    spool.commit([Batch(SITE, EPOCH, tuple(LogEntry(n, "reading", T0, reading_body(r))
                                           for n, r in enumerate(typed, start=1)))], now=NOW)
    db = sqlite3.connect(state_dir / SPOOL_FILE)
    try:
        rows = db.execute("SELECT value, typeof(value), vtext, vtype, quality, detail FROM entries"
                          " ORDER BY seq").fetchall()
    finally:
        db.close()
    assert rows == [(1.0, "real", None, "bool", "ok", None), (None, "null", "1.5", "enum", "ok", None),
                    (9.0, "real", None, "bits", "ok", "OVP"), (None, "null", None, "enum", "invalid", "not in the map")]


def test_a_spool_from_before_value_types_is_migrated_and_takes_typed_readings(tmp_path: Path) -> None:
    from bridge.uploader.spool import SCHEMA

    db = sqlite3.connect(tmp_path / SPOOL_FILE)
    for statement in SCHEMA:
        db.execute(statement.replace(" poll REAL, vtype TEXT, vtext TEXT,", " poll REAL,"))
    db.commit()
    db.close()
    spool = Spool(tmp_path)
    try:
        on = Reading("psu", "output", True, Quality.OK, T0, "", type=ValueType.BOOL)
        spool.commit([batch(1, 2), Batch(SITE, EPOCH, (LogEntry(3, "reading", T0, reading_body(on)),))])
        assert spool.refresh_held() == 3
    finally:
        spool.close()
    db = sqlite3.connect(tmp_path / SPOOL_FILE)
    try:
        assert db.execute("SELECT value, vtype FROM entries WHERE seq=3").fetchone() == (1.0, "bool")
    finally:
        db.close()

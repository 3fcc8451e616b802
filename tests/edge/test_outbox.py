"""The outbox on real SQLite files: seq order, group commit, trimming, overflow, crashes and a full disk."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.edge.outbox import Outbox, OutboxError, OverflowState
from bridge.model import Quality, Reading
from bridge.wire.contract import reading_body
from tests.helpers.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
BODY = reading_body(Reading("main_gauge", "p1", 1.5e-7, Quality.OK, 1_763_700_000.25, "mbar"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite"


@pytest.fixture
def outbox(path: Path) -> Iterator[Outbox]:
    with Outbox(path) as box:
        yield box


def stored(path: Path, sql: str = "SELECT seq FROM entries ORDER BY seq") -> list[Any]:
    """What is on disk, read through a connection of its own (committed data only)."""
    db = sqlite3.connect(path)
    try:
        return [row[0] if len(row) == 1 else row for row in db.execute(sql)]
    finally:
        db.close()


def seqs(box: Outbox, after: int = 0) -> list[int]:
    return [e.seq for e in box.pending(after, 1_000_000)]


def run_child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- a new outbox


def test_a_new_outbox_has_an_epoch_and_nothing_in_it(outbox: Outbox, path: Path) -> None:
    assert len(outbox.epoch) == 32 and int(outbox.epoch, 16) >= 0
    assert (outbox.last_seq, outbox.acked_seq, outbox.depth(), outbox.open_run) == (None, 0, 0, None)
    assert outbox.overflow == OverflowState(alarm=False, refused=0)
    assert outbox.oldest_unacked_time() is None and outbox.flush() is None
    assert stored(path, "PRAGMA journal_mode") == ["wal"]


def test_the_epoch_is_kept_by_its_database_and_new_with_a_new_one(path: Path, tmp_path: Path) -> None:
    with Outbox(path) as first:
        epoch = first.epoch
    with Outbox(path) as again, Outbox(tmp_path / "wiped.sqlite") as other:
        assert again.epoch == epoch
        assert other.epoch != epoch


def test_a_second_outbox_on_the_same_file_is_refused(outbox: Outbox, path: Path) -> None:
    with pytest.raises(OutboxError, match="in use by another process"):
        Outbox(path)


def test_a_file_that_is_not_an_outbox_is_named_and_left_alone(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"these are not the bytes of a database" * 200)
    for _ in range(2):  # the failed open released its lock
        with pytest.raises(OutboxError, match=f"cannot open the outbox {path}: file is not a database"):
            Outbox(path)
    assert path.read_bytes().startswith(b"these are not")


# ---------------------------------------------------------------- appending


def test_entries_get_consecutive_seqs_in_append_order(outbox: Outbox) -> None:
    for n in range(5):
        outbox.append("reading", {**BODY, "t": n}, time=100.0 + n)
    assert outbox.depth() == 5
    assert outbox.flush() == 5
    got = outbox.pending(0, 10)
    assert [(e.seq, e.kind, e.time, e.body["t"]) for e in got] == [(n + 1, "reading", 100.0 + n, n) for n in range(5)]
    assert got[0].body == {**BODY, "t": 0}
    assert seqs(outbox, after=3) == [4, 5] and seqs(outbox, after=5) == []
    assert [e.seq for e in outbox.pending(1, 2)] == [2, 3]


def test_the_committer_commits_within_the_interval_without_a_flush(path: Path) -> None:
    with Outbox(path, commit_interval=0.02) as box:
        box.append("reading", BODY)
        assert wait_until(lambda: stored(path) == [1])
        assert box.last_seq == 1


def test_the_committer_commits_as_soon_as_it_holds_commit_rows(path: Path) -> None:
    with Outbox(path, commit_interval=600, commit_rows=5) as box:
        for _ in range(5):
            box.append("reading", BODY)
        assert wait_until(lambda: stored(path) == [1, 2, 3, 4, 5])
        box.append("reading", BODY)  # one row, 600 s to go: stays buffered
        assert stored(path) == [1, 2, 3, 4, 5] and box.depth() == 6
        assert box.oldest_unacked_time() == box.pending(0, 1)[0].time


def test_a_buffered_entry_counts_as_unacknowledged(path: Path) -> None:
    with Outbox(path, commit_interval=600) as box:
        box.append("reading", BODY, time=123.5)
        assert (box.depth(), box.oldest_unacked_time(), box.pending(0, 10)) == (1, 123.5, [])


def test_bad_entries_are_refused_without_using_a_seq(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="unknown entry kind 'sample'"):
        outbox.append("sample", BODY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        outbox.append("reading", {"v": object()})
    with pytest.raises(ValueError, match="not a marker"):
        outbox.append_marker("reading", BODY)
    outbox.append("reading", BODY)
    assert outbox.flush() == 1


def test_threads_appending_at_once_get_a_gap_free_log_each_in_its_own_order(path: Path) -> None:
    with Outbox(path, commit_interval=0.005, commit_rows=50) as box:
        def produce(name: str) -> None:
            for n in range(1500):
                box.append("reading", {"w": name, "n": n})

        workers = [threading.Thread(target=produce, args=(f"w{k}",)) for k in range(4)]
        for w in workers:
            w.start()
        marker = box.append_marker("run_start", {"run_id": "r"})
        for w in workers:
            w.join()
        assert box.flush() == 6001
        entries = box.pending(0, 10_000)
    assert [e.seq for e in entries] == list(range(1, 6002))
    assert entries[marker - 1].kind == "run_start"
    for k in range(4):
        assert [e.body["n"] for e in entries if e.body.get("w") == f"w{k}"] == list(range(1500))


# ---------------------------------------------------------------- run markers and the open run


def test_a_marker_is_committed_at_once_after_what_was_buffered_before_it(path: Path) -> None:
    with Outbox(path, commit_interval=600) as box:
        box.append("reading", BODY)
        box.append("reading", BODY)
        start = {"run_id": "r1", "stream_name": "GaN-17", "tags": ["x"]}
        assert box.append_marker("run_start", start, open_run=start) == 3
        assert stored(path) == [1, 2, 3]
        assert box.open_run == start
        assert stored(path, "SELECT value FROM meta WHERE key = 'open_run'") == [json.dumps(start)]
        assert box.append_marker("run_stop", {"run_id": "r1", "exit_status": "success", "last_seq": 2}) == 4
        assert box.open_run == start  # open_run not given: left as it was
        box.append_marker("run_stop", {"run_id": "r1"}, open_run=None)
        assert box.open_run is None


def test_the_open_run_survives_a_restart(path: Path) -> None:
    with Outbox(path) as box:
        box.open_run = {"run_id": "r2"}
    with Outbox(path) as box:
        assert box.open_run == {"run_id": "r2"}
        box.open_run = None
    with Outbox(path) as box:
        assert box.open_run is None


# ---------------------------------------------------------------- acknowledgements


def test_an_ack_trims_up_to_its_seq_and_is_persisted(path: Path) -> None:
    with Outbox(path) as box:
        for _ in range(10):
            box.append("reading", BODY)
        box.flush()
        assert box.acknowledge(box.epoch, 4) == 4
        assert (box.acked_seq, box.depth(), seqs(box)) == (4, 6, [5, 6, 7, 8, 9, 10])
        assert box.acknowledge(box.epoch, 3) == 0  # an old ack, redelivered
        assert box.acknowledge("0" * 32, 10) == 0  # another epoch: an uploader remembering a wiped card
        assert box.acked_seq == 4
        epoch = box.epoch
    with Outbox(path) as box:
        assert (box.epoch, box.acked_seq, box.last_seq, box.depth()) == (epoch, 4, 10, 6)
        assert seqs(box) == [5, 6, 7, 8, 9, 10]


def test_an_ack_beyond_the_log_trims_only_what_is_committed(path: Path) -> None:
    with Outbox(path, commit_interval=600) as box:
        box.append("reading", BODY)
        box.flush()
        box.append("reading", BODY)  # seq 2, still buffered
        assert box.acknowledge(box.epoch, 99) == 1
        assert (box.acked_seq, box.depth()) == (1, 1)
        assert box.flush() == 2 and seqs(box) == [2]


def test_seq_is_never_reused_after_trimming_everything_and_restarting(path: Path) -> None:
    with Outbox(path) as box:
        for _ in range(10):
            box.append("reading", BODY)
        box.acknowledge(box.epoch, box.flush() or 0)
        assert stored(path) == [] and box.depth() == 0 and box.oldest_unacked_time() is None
    with Outbox(path) as box:
        assert (box.last_seq, box.acked_seq) == (10, 10)
        box.append("reading", BODY)
        assert box.flush() == 11
        assert box.append_marker("run_start", {"run_id": "r"}) == 12


# ---------------------------------------------------------------- overflow policy


def test_a_full_outbox_refuses_readings_accepts_markers_and_clears_below_ninety_percent(path: Path) -> None:
    with Outbox(path, max_entries=10) as box:
        for _ in range(9):
            box.append("reading", BODY)
        assert not box.overflow.alarm
        box.append("reading", BODY)  # depth reaches the limit: alarm
        assert box.overflow == OverflowState(alarm=True, refused=0)
        box.append("reading", BODY)
        box.append("reading", BODY)
        assert box.overflow == OverflowState(alarm=True, refused=2) and box.depth() == 10
        assert box.append_marker("run_stop", {"run_id": "r", "exit_status": "abort"}) == 11  # always accepted
        box.append("run_start", {"run_id": "r2"})  # a marker through append() too
        assert box.depth() == 12 and box.flush() == 12

        box.acknowledge(box.epoch, 3)  # depth 9: below the limit, not yet below 90 %
        assert box.overflow.alarm
        box.append("reading", BODY)  # room for one reading again
        box.append("reading", BODY)
        assert box.overflow == OverflowState(alarm=True, refused=3) and box.depth() == 10

        box.acknowledge(box.epoch, 5)  # depth 8 < 9: cleared
        assert box.overflow == OverflowState(alarm=False, refused=3)
        box.append("reading", BODY)
        box.flush()
        assert seqs(box) == list(range(6, 15))  # refused readings left no gap


# ---------------------------------------------------------------- lifecycle


def test_close_commits_what_is_buffered_and_refuses_more(path: Path) -> None:
    box = Outbox(path, commit_interval=600)
    box.append("reading", BODY)
    box.close()
    box.close()
    assert stored(path) == [1]
    with pytest.raises(OutboxError, match="closed"):
        box.append("reading", BODY)
    with pytest.raises(OutboxError, match="closed"):
        box.append_marker("run_start", {})


# ---------------------------------------------------------------- crashes and a full disk

APPEND_UNTIL_KILLED = """
import sys
from pathlib import Path
from bridge.edge.outbox import Outbox

box = Outbox(Path(sys.argv[1]), commit_interval=0.002, commit_rows=40)
n = box.last_seq or 0
while True:
    n += 1
    box.append("reading", {"n": n})  # the n-th entry ever: seq n, if seqs are right
    if n % 25 == 0:
        print(box.flush(), flush=True)  # printed only once the flush has committed
    if n % 400 == 0:
        box.acknowledge(box.epoch, n - 300)
"""


def append_until_killed(path: Path, entries: int) -> int:
    """Run the appending process until it has flushed ``entries`` more, SIGKILL it; the last seq it flushed."""
    child = run_child(APPEND_UNTIL_KILLED, str(path))
    assert child.stdout is not None
    flushed = first = None
    try:
        while flushed is None or first is None or flushed - first < entries:
            line = child.stdout.readline()
            assert line, "the appending process ended early"
            flushed = int(line)
            first = flushed if first is None else first
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    return flushed


def test_kill_9_loses_no_flushed_entry_corrupts_nothing_and_reuses_no_seq(path: Path) -> None:
    epoch = None
    for _ in range(3):  # killed at a different point of its loop each time, restarted on the same file
        flushed = append_until_killed(path, 2000)
        assert stored(path, "PRAGMA integrity_check") == ["ok"]
        with Outbox(path) as box:
            epoch = epoch or box.epoch
            acked, last = box.acked_seq, box.last_seq
            assert box.epoch == epoch
            assert last is not None and last >= flushed > acked
            entries = box.pending(acked, 1_000_000)
            assert [e.seq for e in entries] == list(range(acked + 1, last + 1))  # every flushed entry, no gap
            assert all(e.body == {"n": e.seq} for e in entries)  # each is the append that got that seq
            assert box.depth() == last - acked
    with Outbox(path) as box:
        assert box.append_marker("run_stop", {"exit_status": "abort"}) == last + 1


FILL_THE_DISK = """
import json, resource, signal, sys
from pathlib import Path
from bridge.edge.outbox import Outbox, OutboxError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
box = Outbox(Path(sys.argv[1]), commit_interval=0.01)
box.append("reading", {"n": 0})
box.flush()
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
for n in range(1, 1001):
    box.append("reading", {"n": n, "pad": "x" * 500})
result = {}
try:
    box.flush()
except OutboxError as exc:
    result["error"] = str(exc)
result["depth_while_full"] = box.depth()
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
result["flushed"] = box.flush()
result["seqs"] = [e.seq for e in box.pending(0, 10_000)]
box.close()
print(json.dumps(result))
"""


def test_a_failing_disk_keeps_the_entries_buffered_until_commits_succeed_again(path: Path) -> None:
    child = run_child(FILL_THE_DISK, str(path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    result = json.loads(out)
    assert result["error"].startswith(f"cannot commit to the outbox {path}")
    assert result["depth_while_full"] == 1001
    assert (result["flushed"], result["seqs"]) == (1001, list(range(1, 1002)))
    assert stored(path, "PRAGMA integrity_check") == ["ok"]

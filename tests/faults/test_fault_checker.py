"""The fault matrix's checker (tests/helpers/checker.py) catches what it is there to catch.

A check that cannot fail proves nothing: here a stored stream that doubles, reorders or invents a
value, and a committed log with a reused seq or a hole, are each refused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from bridge.wire.contract import LogEntry
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from tests.helpers.checker import CommittedLog, assert_served_in_order, read_not_committed

RUN = "r" * 32


def served_sim(values: list[float]) -> TPGSimulator:
    sim = TPGSimulator("TPG362")
    sim.record_served()
    assert sim.served is not None
    sim.served.extend((1, 0, v) for v in values)
    return sim


def store_with(tmp_path: Path, values: list[float]) -> Path:
    folder = tmp_path / "store" / RUN / "chunks" / "gauge1"
    folder.mkdir(parents=True)
    body = {"data_id": RUN, "chunk_index": 0,
            "channels": {"gauge1/pressure_1": {"timestamps": list(range(len(values))), "values": values,
                                               "units": "mbar"}}}
    (folder / "000000.msgpack").write_bytes(msgpack.packb(body))
    return tmp_path / "store"


def test_values_served_in_order_pass_and_the_skipped_are_counted(tmp_path: Path) -> None:
    sim = served_sim([100.0, 100.01, 100.02, 100.03])
    counts = assert_served_in_order(store_with(tmp_path, [100.0, 100.02, 100.03]), RUN, {"gauge1": sim})
    assert counts == {"values_checked": 3, "served_not_stored": 1}


@pytest.mark.parametrize(("stored", "complaint"), [
    ([100.0, 100.0], "out of order or stored twice"),
    ([100.02, 100.0], "out of order or stored twice"),
    ([100.0, 99.5], "was never served"),
])
def test_a_doubled_reordered_or_invented_value_is_refused(tmp_path: Path, stored: list[float], complaint: str) -> None:
    sim = served_sim([100.0, 100.01, 100.02])
    with pytest.raises(AssertionError, match=complaint):
        assert_served_in_order(store_with(tmp_path, stored), RUN, {"gauge1": sim})


@dataclass
class Tap:
    """What CommittedLog reads of the wire tap (an AckingSubscriber)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[int, LogEntry] = field(default_factory=dict)
    conflicts: list[int] = field(default_factory=list)
    epoch: str | None = "e"


def reading(v: float) -> dict[str, Any]:
    return {"i": "gauge1", "c": "pressure_1", "v": v, "q": "ok", "t": 1.0, "u": "mbar"}


def log_with(*seqs: int) -> tuple[Tap, CommittedLog]:
    tap = Tap()
    for seq in seqs:
        kind = "run_start" if seq == 1 else "run_stop" if seq == 5 else "reading"
        body = {"run_id": RUN} if kind != "reading" else reading(100.0 + seq / 100)
        tap.entries[seq] = LogEntry(seq, kind, 1.0, body)  # type: ignore[arg-type]
    return tap, CommittedLog(tap)  # type: ignore[arg-type]


def test_a_run_is_read_from_the_wire_and_the_files_together() -> None:
    _, log = log_with(1, 2, 4, 5)
    log.add({3: ("reading", 1.0, reading(100.03))})  # seq 3 only in a file read after a crash
    assert [r["v"] for r in log.run(RUN)] == [100.02, 100.03, 100.04]
    assert log.gaps() == []


def test_a_hole_in_what_was_seen_and_a_reused_seq_are_refused() -> None:
    _, log = log_with(1, 2, 4, 5)
    with pytest.raises(AssertionError, match="seen neither on the wire nor in a file"):
        log.run(RUN)
    _, log = log_with(1, 2, 3, 4, 5)
    log.add({3: ("reading", 1.0, reading(99.0))})  # the same seq, another reading
    with pytest.raises(AssertionError, match="seqs reused"):
        log.entries()


def test_readings_served_but_never_committed_are_counted() -> None:
    _, log = log_with(1, 2, 4, 5)  # 100.03 (seq 3) was served but never committed
    sim = served_sim([100.02, 100.03, 100.04])
    assert read_not_committed(log, {"gauge1": sim}) == 1

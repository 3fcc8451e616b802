"""A failure while delivering one run sets that run aside; every other run and source goes on (issue 11, item 2).

The failure is injected where nothing real can produce it on demand any more (the wire contract
now refuses what used to break delivery): a local store whose writes raise an unexpected error
for one run only (a bug met by one run's data), and a spool row damaged on disk for one source.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.model import Quality, Reading
from bridge.uploader.ledger import Ledger
from bridge.uploader.service import UploaderService
from bridge.uploader.sinks.base import ChunkBody
from bridge.uploader.sinks.local import LocalSink
from bridge.uploader.spool import Spool
from bridge.wire.contract import Batch, LogEntry, reading_body
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.pipeline import Pipeline
from tests.helpers.uploader import finalized, tpg_gauges, wait_for
from tests.system.test_uploader import FAST_UPLOADER


class BrokenForOneRun(LocalSink):
    """The real local store, except that pushing any chunk of ``run_id`` raises until ``heal``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.run_id = ""
        self.healed = threading.Event()
        self.failures = 0

    def push_chunk(self, data_id: str, flow: str, body: ChunkBody) -> None:
        if data_id == self.run_id and not self.healed.is_set():
            self.failures += 1
            raise KeyError(f"injected failure for run {data_id}")
        super().push_chunk(data_id, flow, body)


@pytest.fixture
def pipeline(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Pipeline]:
    gauges = tpg_gauges()
    p = Pipeline(tmp_path, mosquitto, gauges, interval=0.05,
                 uploader_settings=replace(FAST_UPLOADER, run_retry_initial=1.0))
    try:
        yield p
    finally:
        p.close()
        for _, server in gauges:
            server.stop()


def test_a_run_whose_delivery_fails_is_set_aside_and_the_next_run_lands(pipeline: Pipeline) -> None:
    sink = BrokenForOneRun(pipeline.store)

    def use(uploader: UploaderService) -> None:
        uploader.sink = sink

    pipeline.start(use)
    pipeline.wait_connected()
    sink.run_id = pipeline.start_run("broken")
    pipeline.wait_logged(60)
    pipeline.stop_run()
    run_b = pipeline.start_run("fine")
    pipeline.wait_logged(60)
    stop_b = pipeline.stop_run()
    # run B finalizes while run A keeps failing
    wait_for(lambda: finalized(pipeline.store, run_b), timeout=60, what="run B to land while run A fails")
    assert not finalized(pipeline.store, sink.run_id) and sink.failures >= 1
    status = wait_for(lambda: next((s for _, s in reversed(pipeline.watch.on("lab/uploader/status"))
                                    if isinstance(s, dict) and s.get("runs_failed")), None),
                      what="the failed run in the status")
    (failed,) = status["runs_failed"]
    assert failed["run_id"] == sink.run_id and "injected failure" in failed["reason"]
    assert status["sources_failed"] == []
    # the cause goes away: run A is tried again on its own and lands complete
    sink.healed.set()
    run_a = sink.run_id
    wait_for(lambda: finalized(pipeline.store, run_a), timeout=60, what="run A to land once healed")
    doc = json.loads((pipeline.store / run_a / "manifest.json").read_text())
    assert doc["report"]["complete"]
    pipeline.finish(run_b, stop_b)


# ---------------------------------------------------------------- a damaged source


SITE = "chamber-a"
T0 = 1_763_700_000.0


def _log(epoch: str, run_id: str, polls: int) -> Batch:
    entries = [LogEntry(1, "run_start", T0, {"run_id": run_id, "stream_name": "x", "physical_sample": None,
                                             "synth_source_id": None, "project_id": None, "tags": []})]
    for n in range(polls):
        reading = Reading("g", "p1", 1e-7 * (n + 1), Quality.OK, T0 + n, "mbar")
        entries.append(LogEntry(n + 2, "reading", T0 + n, reading_body(reading)))
    return Batch(SITE if epoch.startswith("a") else "chamber-b", epoch, tuple(entries))


def test_a_source_whose_pass_fails_is_set_aside_and_the_others_go_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ledger = Ledger(tmp_path, points_per_chunk=3, retry_first=3600)
    try:
        spool.commit([_log("a" * 32, "a1" * 16, 4), _log("b" * 32, "b2" * 16, 4)])
        ledger.advance()
        # the open run's cutter state of site a is damaged on disk (a bad sector, a hand edit)
        db = sqlite3.connect(tmp_path / "spool.sqlite")
        db.execute("UPDATE flows SET cutter='{not json' WHERE run_id=?", ("a1" * 16,))
        db.commit()
        db.close()
        more_a, more_b = _more("a" * 32, 6), _more("b" * 32, 6)
        spool.commit([more_a, more_b])
        ledger.advance()
        sources: dict[str, Any] = {s.site: s for s in ledger.sources()}
        assert sources["chamber-b"].cursor == 11  # the healthy source went on
        assert sources["chamber-a"].cursor == 5  # the damaged one waits where it failed
        (failure,) = ledger.failed_sources.values()
        assert "JSONDecodeError" in failure.reason
        (failed_run,) = ledger.failed_runs()
        assert failed_run["run_id"] == "a1" * 16 and "the pass over its log failed" in failed_run["reason"]
        ledger.advance()  # set aside: not tried again before its retry time
        assert ledger.failed_sources[("chamber-a", "a" * 32)].failures == 1
    finally:
        ledger.close()
        spool.close()


def _more(epoch: str, last_seq: int) -> Batch:
    site = SITE if epoch.startswith("a") else "chamber-b"
    entries = tuple(LogEntry(seq, "reading", T0 + seq, reading_body(
        Reading("g", "p1", 1e-6, Quality.OK, T0 + seq, "mbar"))) for seq in range(6, 6 + last_seq))
    return Batch(site, epoch, entries)

"""The uploader loses and doubles nothing through its own crashes and broker restarts.

The uploader runs as a real ``chamber-bridge upload`` process; ``CHAMBER_BRIDGE_CRASH_AT``
makes it SIGKILL itself at a named point (bridge/crashpoints.py), then it is started again
without it. The bridge runs in this process with its log recorded (tests/helpers/uploader.py),
so the store can be compared with exactly what the bridge logged for the run.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.uploader.service import UploaderService
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.processes import UploaderProcess, write_config
from tests.helpers.uploader import (
    RecordingBridge,
    assert_spool_drained,
    assert_store_holds_run,
    chamber_config,
    finalized,
    wait_for,
)
from tests.system.test_uploader import FAST_UPLOADER, PPC, start_run, stop_run

# crash point -> when it is reached (the N-th time): mid-intake, mid-upload, at finalize
CRASHES = {
    "spool.before_commit": "spool.before_commit:20",
    "spool.after_commit": "spool.after_commit:20",
    "spool.after_ack": "spool.after_ack:20",
    "upload.before_push": "upload.before_push:4",
    "upload.after_push": "upload.after_push:4",
    "finalize.before_sink": "finalize.before_sink",
    "finalize.after_sink": "finalize.after_sink",
}


@pytest.mark.parametrize("point", sorted(CRASHES))
def test_uploader_killed_at_a_crash_point_and_restarted_loses_and_doubles_nothing(
        mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, point: str) -> None:
    raw = chamber_config(mosquitto, gauges, tmp_path, points_per_chunk=PPC)
    store = tmp_path / "store"
    config = write_config(raw, tmp_path)
    log = tmp_path / "uploader.log"
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = UploaderProcess(config, log, crash_at=CRASHES[point])
    try:
        run_id = start_run(raw)
        wait_for(lambda: len(bridge.recorded.entries) > 200 or uploader.died(),
                 what="readings in the run")
        stop_seq = stop_run(raw)
        wait_for(uploader.died, timeout=60, what=f"the uploader to reach {point}")
        assert uploader.process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
        assert f"crash point {point} reached" in log.read_text()
        uploader = UploaderProcess(config, log)
        wait_for(lambda: log.read_text().count("uploader subscribed") == 2, what="the uploader to start again")
        wait_for(lambda: finalized(store, run_id), timeout=60, what="the run to be finalized after the restart")
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, what="the bridge's outbox to drain past the run")
        assert uploader.stop() == 0, log.read_text()[-3000:]
    finally:
        if not uploader.died():
            uploader.stop()
        bridge.stop()
    doc = assert_store_holds_run(store, run_id, bridge.recorded.run(run_id), PPC)
    assert_spool_drained(tmp_path / "uploader-state", stop_seq)
    assert doc["report"]["complete"]


def test_broker_restarted_mid_run_loses_nothing(mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path) -> None:
    raw = chamber_config(mosquitto, gauges, tmp_path, points_per_chunk=PPC)
    store = tmp_path / "store"
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = UploaderService(parse_config(raw), settings=FAST_UPLOADER)
    uploader.start()
    try:
        run_id = start_run(raw)
        wait_for(lambda: len(bridge.recorded.entries) > 100, what="readings before the restart")
        mosquitto.restart()
        wait_for(lambda: len(bridge.recorded.entries) > 300, what="readings after the restart")
        mosquitto.kill()
        mosquitto.start()
        wait_for(lambda: len(bridge.recorded.entries) > 500, what="readings after the crash")
        stop_seq = stop_run(raw)
        wait_for(lambda: finalized(store, run_id), timeout=60, what="the run to be finalized")
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, what="the outbox to drain past the run")
    finally:
        uploader.stop()
        bridge.stop()
    assert_store_holds_run(store, run_id, bridge.recorded.run(run_id), PPC)
    assert_spool_drained(tmp_path / "uploader-state", stop_seq)

"""Fault matrix rows 7 and 8: the uploader's process dies around its spool commit, its acks and its uploads.

The uploader runs as ``chamber-bridge upload`` (tests/helpers/processes.py) and SIGKILLs itself
at a named crash point (bridge/crashpoints.py); it is started again, armed at the next point,
until the last start runs clean. The bridge runs in this process with its log recorded
(tests/helpers/pipeline.py), the exact ground truth. One test per row walks through all of the
row's crash points within one run, so each restart also recovers from the crash before it.

tests/system/test_uploader_recovery.py covers each crash point once, on its own, against the
local store; here the row's figures are measured (dedupe hits, repeats at the target, recovery
time), and row 8 runs against the Atomscale API emulator, where a doubled chunk would show.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.services.atomscale import AtomscaleEmulator
from tests.faults.conftest import Figures
from tests.helpers.atomscale_run import KEY, assert_emulator_holds_run, finalized_stream
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.pipeline import Pipeline
from tests.helpers.processes import UploaderProcess, write_config
from tests.helpers.uploader import finalized, wait_for
from tests.helpers.watch import sys_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = sys_broker(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def pipe(tmp_path: Path, broker: MosquittoBroker, gauges: Any) -> Iterator[Pipeline]:
    pipe = Pipeline(tmp_path, broker, gauges)
    yield pipe
    pipe.close()


class Uploaders:
    """Successive ``chamber-bridge upload`` processes on one config and one log."""

    def __init__(self, pipe: Pipeline, tmp: Path) -> None:
        self.pipe = pipe
        self.config = write_config(pipe.uploader_raw, tmp, "uploader.yaml")
        self.log = tmp / "uploader.log"
        self.current: UploaderProcess | None = None
        self.crashes: list[dict[str, Any]] = []
        self._dedupe: list[int] = []  # the spool's dedupe hits as each process ended

    def crash_at(self, point: str, nth: int = 1) -> None:
        """Start one armed at ``point`` (its ``nth`` passage) and wait for it to die there."""
        started = time.monotonic()
        self.current = process = UploaderProcess(self.config, self.log, crash_at=f"{point}:{nth}")
        wait_for(process.died, timeout=90, what=f"the uploader to reach {point}")
        assert process.process.returncode == -signal.SIGKILL, process.log_tail()
        assert f"crash point {point} reached" in process.log_text()
        self.crashes.append({"point": point, "lived_s": round(time.monotonic() - started, 2)})
        self._dedupe.append(self.pipe.spool_duplicates())

    def start_clean(self) -> UploaderProcess:
        self.current = UploaderProcess(self.config, self.log)
        starts = len(self.crashes) + 1
        wait_for(lambda: self.log.read_text().count("uploader subscribed") >= starts, timeout=60,
                 what="the last uploader to subscribe")
        return self.current

    def finalized_here(self, run_id: str, name: str) -> bool:
        """The uploader has recorded the run as finalized in its ledger (not just at the target)."""
        return f"run {run_id} ({name}) finalized:" in self.log.read_text()

    def stop(self) -> None:
        """Stop the last (clean) one; each crash's figures get the dedupe hits of the restart after it."""
        if self.current is not None and not self.current.died():
            assert self.current.stop() == 0, self.current.log_tail()
        self._dedupe.append(self.pipe.spool_duplicates())
        for crash, before, after in zip(self.crashes, self._dedupe, self._dedupe[1:], strict=False):
            crash["dedupe_hits_after_restart"] = after - before


# ---------------------------------------------------------------- row 7: around the spool commit and the ack


@pytest.mark.parametrize("rounds", [1, pytest.param(5, marks=[pytest.mark.slow, pytest.mark.timeout(900)])])
def test_row7_uploader_killed_around_the_spool_commit_and_the_ack_loses_nothing(
        pipe: Pipeline, tmp_path: Path, figures: Figures, rounds: int) -> None:
    uploaders = Uploaders(pipe, tmp_path)
    pipe.start_bridge()
    run_id = pipe.start_run("spool-crash")
    try:
        for _ in range(rounds):
            # before the commit / after the commit, before any ack / after the MQTT ack, before the app ack
            for point in ("spool.before_commit", "spool.after_commit", "spool.after_ack"):
                uploaders.crash_at(point, nth=5)
        restarted = time.monotonic()
        uploaders.start_clean()
        pipe.wait_acked(pipe.last_seq(), timeout=90)
        recovery = time.monotonic() - restarted
        stop_seq = pipe.stop_run()
        wait_for(lambda: finalized(pipe.store, run_id), timeout=90, what="the run to be finalized")
        pipe.wait_acked(stop_seq)
        uploaders.stop()
    finally:
        if uploaders.current is not None and not uploaders.current.died():
            uploaders.current.kill()
    result = pipe.finish(run_id, stop_seq)
    figures.record(row=7, fault=f"uploader SIGKILLed before/after the spool commit and after the ack (x{rounds})",
                   crashes=uploaders.crashes, recovery_s=round(recovery, 2), **result)


# ---------------------------------------------------------------- row 8: around an upload to the Atomscale API


@pytest.fixture
def emulator() -> Iterator[AtomscaleEmulator]:
    emu = AtomscaleEmulator(keys=[KEY], seed=8).start()
    yield emu
    emu.stop()


def test_row8_uploader_killed_around_an_upload_stores_nothing_twice_at_the_target(
        pipe: Pipeline, tmp_path: Path, emulator: AtomscaleEmulator, figures: Figures) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    pipe.uploader_raw["uploader"]["sink"] = {"kind": "atomscale", "endpoint": emulator.url,
                                             "api_key_file": str(key_file), "allow_insecure_http": True}
    uploaders = Uploaders(pipe, tmp_path)
    name = "upload-crash"
    pipe.start_bridge()
    run_id = pipe.start_run(name)
    try:
        pipe.wait_logged(200)
        uploaders.crash_at("upload.before_push", nth=3)  # before the POST
        uploaders.crash_at("upload.after_push", nth=3)  # after the 2xx, before the ledger's commit
        pipe.wait_logged(100)
        stop_seq = pipe.stop_run()
        uploaders.crash_at("finalize.before_sink")  # during finalize: before the finalize call
        uploaders.crash_at("finalize.after_sink")  # during finalize: the target finalized, the ledger not
        restarted = time.monotonic()
        uploaders.start_clean()
        wait_for(lambda: uploaders.finalized_here(run_id, name), timeout=90, what="the uploader to finish the run")
        recovery = time.monotonic() - restarted
        pipe.wait_acked(stop_seq)
        uploaders.stop()
    finally:
        if uploaders.current is not None and not uploaders.current.died():
            uploaders.current.kill()

    def at_the_target(readings: list[dict[str, Any]]) -> dict[str, Any]:
        assert_emulator_holds_run(emulator, name, readings)
        streams = [s for s in emulator.streams() if s.stream_name == name]
        return {"duplicates_stored": emulator.duplicates_stored(), "repeats_at_target": emulator.repeats,
                "conflicts_at_target": emulator.conflicts, "streams_initialized": len(streams),
                "finalize_calls": sum(s.finalize_calls for s in streams)}

    result = pipe.finish(run_id, stop_seq, done=lambda: finalized_stream(emulator, name), verify=at_the_target)
    figures.record(row=8, fault="uploader SIGKILLed before a POST, after its 2xx, and twice during finalize",
                   crashes=uploaders.crashes, recovery_s=round(recovery, 2), **result)
    assert result["duplicates_stored"] == 0
    assert result["repeats_at_target"] > 0, "no chunk was pushed again: the crash after the 2xx hit nothing"
    assert result["finalize_calls"] >= 2, "the crash after the target's finalize did not repeat it"

"""The uploader against the Atomscale API emulator while it fails in every way it can.

Bridge (in this process, its log recorded) -> private Mosquitto -> uploader with the atomscale
sink -> emulator (simulators/services/atomscale/) with faults switched on for the run. Afterwards
the emulator must hold exactly the run's readings, each once, in one finalized stream, with no
chunk stored twice under different content. Short versions run by default; the minutes-long
mix of every fault is marked ``slow`` (scripts/test-slow.sh).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import parse_config
from simulators.services.atomscale import AtomscaleEmulator
from tests.helpers.atomscale_run import (
    KEY,
    assert_emulator_holds_run,
    atomscale_config,
    finalized_stream,
    start_uploader,
)
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.uploader import RecordingBridge, wait_for
from tests.system.test_uploader import start_run, stop_run


@pytest.fixture
def emulator() -> Iterator[AtomscaleEmulator]:
    emu = AtomscaleEmulator(keys=[KEY], seed=7).start()
    yield emu
    emu.stop()


FAULTS: dict[str, dict[str, Any]] = {
    "http_5xx": {"status": 503, "probability": 0.3},
    "reset": {"probability": 0.3},
    "slow": {"delay": 0.8, "probability": 0.3},
    "rate_limit": {"retry_after": 0.4, "probability": 0.3},
    "lost_response": {"probability": 0.3},
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_fault_mode_costs_nothing_and_doubles_nothing(
        mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, emulator: AtomscaleEmulator, fault: str) -> None:
    raw = atomscale_config(mosquitto, gauges, tmp_path, emulator)
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = start_uploader(raw)
    try:
        emulator.add_fault(fault, **FAULTS[fault])
        run_id = start_run(raw, name=f"run-{fault}")
        wait_for(lambda: len(bridge.recorded.entries) > 250, what="readings in the run")
        stop_seq = stop_run(raw)
        wait_for(lambda: finalized_stream(emulator, f"run-{fault}"), timeout=90, what="the stream to be finalized")
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, what="the outbox to drain past the run")
        faulted = sum(1 for r in emulator.requests() if r.fault == fault)
    finally:
        uploader.stop()
        bridge.stop()
    assert faulted > 0, f"the {fault} fault never struck"
    assert_emulator_holds_run(emulator, f"run-{fault}", bridge.recorded.run(run_id))


def test_rejected_key_raises_the_alarm_keeps_the_data_and_recovers_after_rotation(
        mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, emulator: AtomscaleEmulator) -> None:
    raw = atomscale_config(mosquitto, gauges, tmp_path, emulator)
    statuses: list[dict[str, Any]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="status-watcher")
    watcher.on_message = lambda c, u, m: statuses.append(json.loads(m.payload))
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe("lab/uploader/status", qos=1)
    watcher.loop_start()
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = start_uploader(raw)
    try:
        emulator.set_keys(["key-two"])  # the key the uploader holds is revoked
        run_id = start_run(raw, name="rotated")
        wait_for(lambda: len(bridge.recorded.entries) > 200, what="readings in the run")
        stop_seq = stop_run(raw)
        alarm = wait_for(lambda: next((s for s in statuses if s.get("sinks", {}).get("atomscale", {}).get("alarm")),
                                      None), what="the alarm on the uploader's status")
        assert "401" in alarm["last_upload_error"] and KEY not in json.dumps(alarm)
        assert uploader.ledger.backlog() > 0 or uploader.ledger.streams_to_initialize()  # data kept, not dropped
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, what="the bridge's data acked into the spool")
        (tmp_path / "api-key").write_text("key-two\n")  # rotated by the operator
        wait_for(lambda: finalized_stream(emulator, "rotated"), timeout=60, what="the stream after the rotation")
        wait_for(lambda: any(s.get("sinks", {}).get("atomscale", {}).get("alarm") is False and s is statuses[-1]
                             for s in statuses[-1:]), what="the alarm to clear")
    finally:
        uploader.stop()
        bridge.stop()
        watcher.loop_stop()
        watcher.disconnect()
    assert_emulator_holds_run(emulator, "rotated", bridge.recorded.run(run_id))
    assert statuses[-1]["state"] == "offline"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_minutes_of_mixed_faults_cost_nothing(
        mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, emulator: AtomscaleEmulator) -> None:
    raw = atomscale_config(mosquitto, gauges, tmp_path, emulator)
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = start_uploader(raw)
    runs = []
    try:
        for fault, options in FAULTS.items():
            emulator.add_fault(fault, **{**options, "probability": 0.1})
        emulator.add_fault("http_5xx", status=502, path_prefix="/tool-state/stream/initialize", probability=0.3)
        deadline = time.monotonic() + 180
        n = 0
        while time.monotonic() < deadline:
            n += 1
            runs.append((start_run(raw, name=f"soak-{n}"), f"soak-{n}"))
            time.sleep(20)
            stop_seq = stop_run(raw)
        wait_for(lambda: all(finalized_stream(emulator, name) for _, name in runs), timeout=300,
                 what="every stream to be finalized")
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, what="the outbox to drain")
    finally:
        uploader.stop()
        bridge.stop()
    for run_id, name in runs:
        assert_emulator_holds_run(emulator, name, bridge.recorded.run(run_id))

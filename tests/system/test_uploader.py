"""The uploader end to end: simulators -> bridge -> private Mosquitto -> uploader -> local store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.wire.request import request
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.uploader import (
    RecordingBridge,
    assert_spool_drained,
    assert_store_holds_run,
    chamber_config,
    finalized,
    wait_for,
)

FAST_UPLOADER = UploaderSettings(status_interval=0.5, backoff_initial=0.1, backoff_cap=1.0)
PPC = 10


def start_run(raw: dict[str, Any], name: str = "GaN-17") -> str:
    cfg = parse_config(raw)
    reply = request(cfg.mqtt, cfg.site, "start_run", {"stream_name": name, "physical_sample": "S-1",
                                                      "synth_source_id": None, "project_id": None, "tags": ["t"]})
    assert reply.ok, reply.message
    return reply.message.split()[1]


def stop_run(raw: dict[str, Any], status: str = "success") -> int:
    """Close the run; the stop marker's seq."""
    cfg = parse_config(raw)
    reply = request(cfg.mqtt, cfg.site, "stop_run", {"exit_status": status})
    assert reply.ok and reply.seq is not None, reply.message
    return reply.seq


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_run_lands_in_the_store_exactly_once_in_order(
        mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, protocol: str) -> None:
    raw = chamber_config(mosquitto, gauges, tmp_path, points_per_chunk=PPC, protocol=protocol)
    store = tmp_path / "store"
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = UploaderService(parse_config(raw), settings=FAST_UPLOADER)
    uploader.start()
    try:
        wait_for(lambda: bridge.outbox.last_seq and bridge.outbox.last_seq > 20, what="idle readings")
        run_id = start_run(raw)
        wait_for(lambda: len(bridge.recorded.entries) > 150, what="readings in the run")
        stop_seq = stop_run(raw)
        wait_for(lambda: finalized(store, run_id), what="the run to be finalized")
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, what="the outbox to drain past the run")
    finally:
        uploader.stop()
        bridge.stop()
    doc = assert_store_holds_run(store, run_id, bridge.recorded.run(run_id), PPC)
    assert_spool_drained(tmp_path / "uploader-state", stop_seq)
    assert doc["exit_status"] == "success" and doc["report"]["complete"] and doc["stream_name"] == "GaN-17"
    assert doc["physical_sample"] == "S-1" and doc["tags"] == ["t"]


def _keys(doc: Any, path: str = "") -> set[str]:
    """Every key path of a JSON document (lists: their first element)."""
    if isinstance(doc, dict):
        return {f"{path}.{k}" for k in doc} | {p for k, v in doc.items() for p in _keys(v, f"{path}.{k}")}
    if isinstance(doc, list) and doc:
        return _keys(doc[0], f"{path}[]")
    return set()


def test_the_retained_status_has_the_documented_shape(mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path) -> None:
    import json
    import re

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    doc = (Path(__file__).resolve().parents[2] / "docs" / "payload.md").read_text()
    example = json.loads(re.search(r"<!-- example: uploader_status -->\s*```json\n(.*?)```", doc, re.S).group(1))
    raw = chamber_config(mosquitto, gauges, tmp_path, points_per_chunk=PPC)
    seen: list[dict[str, Any]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="status-watcher")
    watcher.on_message = lambda c, u, m: seen.append(json.loads(m.payload))
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe("lab/uploader/status", qos=1)
    watcher.loop_start()
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = UploaderService(parse_config(raw), settings=FAST_UPLOADER)
    uploader.start()
    try:
        start_run(raw)
        status = wait_for(lambda: next((s for s in reversed(seen) if s.get("runs_open") and
                                        s["spool"]["sources"]), None), what="a status with an open run")
    finally:
        uploader.stop()
        bridge.stop()
        watcher.loop_stop()
        watcher.disconnect()
    assert _keys(status) == _keys(example)
    assert status["state"] == "online" and status["runs_open"][0]["stream_name"] == "GaN-17"
    assert status["spool"]["sources"][0]["site"] == "chamber-u"

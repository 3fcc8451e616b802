"""The uploader end to end: simulators -> bridge -> private Mosquitto -> uploader -> local store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.publish.request import request
from bridge.uploader.service import UploaderService, UploaderSettings
from simulators.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.uploader import (
    RecordingBridge,
    assert_spool_drained,
    assert_store_holds_run,
    chamber_config,
    finalized,
    tpg_gauges,
    wait_for,
)

FAST_UPLOADER = UploaderSettings(status_interval=0.5, backoff_initial=0.1, backoff_cap=1.0)
PPC = 10


@pytest.fixture
def gauges() -> Iterator[list[tuple[TPGSimulator, TcpServer]]]:
    pairs = tpg_gauges()
    yield pairs
    for _, server in pairs:
        server.stop()


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

"""`chamber-bridge health` against a real private Mosquitto, a real uploader and a real bridge."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bridge.cli.health import Health, check_health
from bridge.config import parse_config
from bridge.edge.publisher import PublisherSettings
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.wire.request import NoAnswer
from tests.helpers.cli import run_cli
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.net import free_port
from tests.helpers.uploader import RecordingBridge, chamber_config, wait_for

FAST_UPLOADER = UploaderSettings(status_interval=0.5, backoff_initial=0.1, backoff_cap=1.0)


def uploader_config(broker: MosquittoBroker, tmp_path: Path) -> dict[str, Any]:
    return {"site": "lab-server",
            "mqtt": {"host": broker.host, "port": broker.port, "keepalive": 5},
            "uploader": {"state_dir": str(tmp_path / "uploader-state"), "client_id": "health-test-uploader",
                         "sink": {"kind": "local", "path": str(tmp_path / "store")}}}


def write(tmp_path: Path, raw: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def healthy_soon(raw: dict[str, Any], role: str = "uploader", saying: str = "") -> Health:
    """check_health until the service's status is there, healthy, and its line says ``saying``."""
    def attempt() -> Health | None:
        try:
            result = check_health(parse_config(raw), role, timeout=2.0)  # type: ignore[arg-type]
        except NoAnswer:
            return None
        return result if result.healthy and saying in result.message else None
    result: Health = wait_for(attempt, what=f"the {role} to report online")
    return result


def publish_retained(broker: MosquittoBroker, topic: str, status: dict[str, Any]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="health-test-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, json.dumps(status).encode(), qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_uploader_online_then_offline_after_it_stopped(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    raw = uploader_config(mosquitto, tmp_path)
    config = write(tmp_path, raw)
    uploader = UploaderService(parse_config(raw), settings=FAST_UPLOADER)
    uploader.start()
    try:
        healthy_soon(raw)
        result = run_cli("health", str(config))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("online: the uploader, status ")
        assert "spool depth 0, 0 runs open, local backlog 0" in result.stdout
    finally:
        uploader.stop()
    result = run_cli("health", str(config), "--role", "uploader")
    assert result.returncode == 1
    assert result.stdout == ""
    line, = result.stderr.splitlines()
    assert line.startswith("chamber-bridge: error: offline: the uploader went offline ")
    assert line.endswith("(lab/uploader/status)")


def test_a_status_older_than_max_age_is_stale(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    raw = uploader_config(mosquitto, tmp_path)
    publish_retained(mosquitto, "lab/uploader/status", {"v": 1, "state": "online", "time": time.time() - 600})
    stale = check_health(parse_config(raw), "uploader", max_age=30)
    assert not stale.healthy and stale.message.startswith("stale: the uploader last reported ")
    assert check_health(parse_config(raw), "uploader", max_age=3600).healthy
    result = run_cli("health", str(write(tmp_path, raw)), "--max-age", "30")
    assert result.returncode == 1 and "error: stale: " in result.stderr


def test_no_broker_and_no_status_are_named(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    nobody = write(tmp_path, {"site": "x", "mqtt": {"host": "127.0.0.1", "port": free_port()}}, "nobody.yaml")
    result = run_cli("health", str(nobody), "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr.startswith("chamber-bridge: error: no broker at 127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    with pytest.raises(NoAnswer, match=r"^no status on lab/chamber-b/status within 0.5 s: the bridge of site "
                                          r"chamber-b has never connected"):
        check_health(parse_config({"site": "chamber-b", "mqtt": {"host": mosquitto.host, "port": mosquitto.port}}),
                     "bridge", timeout=0.5)


def test_bridge_role_reads_the_site_status(mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path) -> None:
    raw = chamber_config(mosquitto, gauges, tmp_path)
    config = write(tmp_path, raw)
    # no uploader here: nothing will acknowledge, so do not wait long for it on stop
    no_drain = PublisherSettings(ack_timeout=2.0, status_interval=0.5, drain_timeout=0.2)
    bridge = RecordingBridge(parse_config(raw), no_drain).start()
    try:
        health = healthy_soon(raw, "bridge", saying="2/2 instruments available")
        assert health.message.startswith("online: the bridge of site chamber-u, status ")
        result = run_cli("health", str(config), "--role", "bridge")
        assert result.returncode == 0, result.stderr
    finally:
        bridge.stop()
    offline = check_health(parse_config(raw), "bridge")
    assert not offline.healthy
    assert offline.message.startswith("offline: the bridge of site chamber-u went offline ")

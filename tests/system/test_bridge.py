"""The bridge end to end: simulators -> pollers -> outbox -> private Mosquitto -> acking subscriber."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.edge.publisher import PublisherSettings
from bridge.edge.service import BridgeService
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.helpers.ack_subscriber import AckingSubscriber
from tests.helpers.mosquitto import MosquittoBroker

CLI = [sys.executable, "-m", "bridge"]
FAST = PublisherSettings(ack_timeout=2.0, status_interval=0.5, drain_timeout=5.0)


@pytest.fixture
def gauges() -> Iterator[list[tuple[TPGSimulator, TcpServer]]]:
    """Two TPG controllers on two buses (two LAN ports)."""
    pairs = []
    for seed in (1, 2):
        sim = TPGSimulator("TPG362", seed=seed)
        server = TcpServer(lambda sim=sim: sim).start()
        pairs.append((sim, server))
    yield pairs
    for _, server in pairs:
        server.stop()


def make_config(broker: MosquittoBroker, gauges: list[tuple[TPGSimulator, TcpServer]], state: Path,
                interval: float = 0.05, **mqtt: Any) -> dict[str, Any]:
    return {
        "site": "chamber-t",
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "lab", "keepalive": 5, **mqtt},
        "bridge": {"state_dir": str(state), "instruments": [
            {"name": f"gauge{i}", "driver": "pfeiffer_tpg", "interval": interval,
             "transport": {"kind": "serial", "port": server.url, "timeout": 0.3},
             "options": {"channels": [1], "settle": 0.02}}
            for i, (_, server) in enumerate(gauges, start=1)]},
    }


@pytest.fixture
def subscriber(mosquitto: MosquittoBroker) -> Iterator[AckingSubscriber]:
    sub = AckingSubscriber(mosquitto.host, mosquitto.port, "lab", "chamber-t")
    yield sub
    sub.close()


def start_service(raw: dict[str, Any]) -> BridgeService:
    service = BridgeService(parse_config(raw), FAST)
    service.start()
    return service


def assert_contiguous(sub: AckingSubscriber) -> None:
    seqs = sorted(sub.entries)
    assert seqs == list(range(1, len(seqs) + 1)), "a seq is missing"
    assert not sub.conflicts, f"seqs reused for different entries: {sub.conflicts[:5]}"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_readings_arrive_in_seq_order_and_the_outbox_drains(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, gauges: Any, tmp_path: Path, protocol: str) -> None:
    service = start_service(make_config(mosquitto, gauges, tmp_path / "state", protocol=protocol))
    try:
        subscriber.wait_for(lambda: len(subscriber.entries) >= 60, what="60 readings")
    finally:
        service.stop()
    subscriber.wait_for(lambda: subscriber.contiguous() == max(subscriber.entries), what="the last entries")
    assert subscriber.arrival == sorted(subscriber.arrival), "published out of seq order"
    assert_contiguous(subscriber)
    readings = subscriber.readings()
    assert {r.body["i"] for r in readings} == {"gauge1", "gauge2"}
    for instrument in ("gauge1", "gauge2"):
        stamps = [r.body["t"] for r in readings if r.body["i"] == instrument]
        assert stamps == sorted(stamps)


def test_broker_killed_mid_run_loses_nothing(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, gauges: Any, tmp_path: Path) -> None:
    service = start_service(make_config(mosquitto, gauges, tmp_path / "state"))
    try:
        subscriber.wait_for(lambda: len(subscriber.entries) >= 30, what="readings before the crash")
        mosquitto.kill()
        during = service.outbox.last_seq or 0
        subscriber.wait_for(lambda: (service.outbox.last_seq or 0) > during + 20, what="polling through the outage")
        mosquitto.start()
        subscriber.wait_for(lambda: subscriber.contiguous() > during + 20, timeout=60, what="catching up")
    finally:
        service.stop()
    assert_contiguous(subscriber)


def test_late_acks_make_the_outbox_grow_then_drain(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, gauges: Any, tmp_path: Path) -> None:
    service = start_service(make_config(mosquitto, gauges, tmp_path / "state"))
    try:
        subscriber.acking = False
        subscriber.wait_for(lambda: service.outbox.depth() >= 100, what="the outbox to grow")
        subscriber.acking = True
        subscriber.ack()
        subscriber.wait_for(lambda: service.outbox.depth() < 20, what="the outbox to drain")
    finally:
        service.stop()
    assert_contiguous(subscriber)


def test_a_raising_callback_and_a_dead_network_thread_do_not_stop_delivery(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, gauges: Any, tmp_path: Path) -> None:
    service = start_service(make_config(mosquitto, gauges, tmp_path / "state"))
    publisher = service.publisher
    try:
        subscriber.wait_for(lambda: len(subscriber.entries) >= 10, what="first readings")
        original = publisher._inbox.put
        calls = {"n": 0}

        def explode(item: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected failure in on_message")
            original(item)

        publisher._inbox.put = explode  # type: ignore[method-assign]
        subscriber.wait_for(lambda: publisher.callback_errors.count >= 1, what="the injected failure")
        mark = subscriber.contiguous()
        subscriber.wait_for(lambda: subscriber.contiguous() > mark + 20, what="delivery after the failure")
        publisher.client.loop_stop()  # the network thread dies, as an escaped exception would kill it
        subscriber.wait_for(lambda: publisher.loop_restarts >= 1, what="the watchdog")
        mark = subscriber.contiguous()
        subscriber.wait_for(lambda: subscriber.contiguous() > mark + 20, what="delivery after the restart")
    finally:
        service.stop()
    assert "injected failure" in (publisher.callback_errors.last or "")
    assert_contiguous(subscriber)


def test_status_shows_a_silent_instrument_unavailable_while_the_other_keeps_reading(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, gauges: Any, tmp_path: Path) -> None:
    service = start_service(make_config(mosquitto, gauges, tmp_path / "state"))
    try:
        gauges[1][0].silent = True

        def gauge2_unavailable() -> bool:
            raw = subscriber.retained.get("lab/chamber-t/status")
            if raw is None:
                return False
            status = json.loads(raw)
            return any(i["name"] == "gauge2" and not i["available"] for i in status.get("instruments", []))

        subscriber.wait_for(gauge2_unavailable, what="gauge2 reported unavailable")
        status = json.loads(subscriber.retained["lab/chamber-t/status"])
        assert status["state"] == "online"
        assert {"depth", "oldest_unacked_age", "epoch"} <= set(status["outbox"])
        assert "ntp_synchronized" in status["clock"]
        before = len([r for r in subscriber.readings() if r.body["i"] == "gauge1"])
        subscriber.wait_for(lambda: len([r for r in subscriber.readings() if r.body["i"] == "gauge1"]) > before + 20,
                            what="gauge1 to keep reading")
    finally:
        service.stop()
    status = json.loads(subscriber.retained["lab/chamber-t/status"])
    assert status["state"] == "offline"


def _poll(config: Path, subscriber: AckingSubscriber | None = None) -> subprocess.Popen[bytes]:
    """``chamber-bridge poll`` in its own process, logging to a file beside its config.

    With a subscriber, returns once the bridge's retained status says online with this
    process's outbox epoch known, so commands sent next find it subscribed.
    """
    log = open(config.with_suffix(".log"), "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen([*CLI, "poll", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    if subscriber is not None:
        with subscriber.lock:
            subscriber.retained.pop("lab/chamber-t/status", None)

        def online() -> bool:
            raw = subscriber.retained.get("lab/chamber-t/status")
            return raw is not None and json.loads(raw).get("state") == "online"

        subscriber.wait_for(online, what="the bridge to come online")
    return process


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_bridge_killed_and_restarted_loses_no_committed_reading_and_never_reuses_a_seq(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, gauges: Any, tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(make_config(mosquitto, gauges, tmp_path / "state")))
    first = _poll(config)
    try:
        subscriber.wait_for(lambda: len(subscriber.entries) >= 40, what="readings from the first process")
    finally:
        first.kill()
        first.wait(timeout=10)
    killed_at = max(subscriber.entries)
    second = _poll(config)
    try:
        subscriber.wait_for(lambda: subscriber.contiguous() > killed_at + 40, timeout=60, what="the restarted bridge")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    assert_contiguous(subscriber)


def test_runs_are_markers_in_the_log_and_a_crash_resumes_the_open_run(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, gauges: Any, tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(make_config(mosquitto, gauges, tmp_path / "state")))
    bridge = _poll(config, subscriber)
    try:
        started = _cli("start-run", str(config), "--name", "GaAs-042", "--sample", "S-17", "--tag", "GaAs",
                       "--tag", "calibration")
        assert started.returncode == 0, started.stderr
        again = _cli("start-run", str(config), "--name", "other")
        assert again.returncode == 1
        assert "is still open" in again.stderr
        subscriber.wait_for(lambda: any(e.kind == "run_start" for e in subscriber.entries.values()),
                            what="the run_start marker")
        subscriber.wait_for(lambda: json.loads(subscriber.retained.get("lab/chamber-t/run", b"{}") or b"{}")
                            .get("run") is not None, what="the retained run state")
        run = json.loads(subscriber.retained["lab/chamber-t/run"])["run"]
    finally:
        bridge.kill()  # crash with the run open
        bridge.wait(timeout=10)
    restarted = _poll(config, subscriber)
    try:
        subscriber.wait_for(lambda: any(e.kind == "run_resume" for e in subscriber.entries.values()),
                            what="the resume marker written at restart")
        stopped = _cli("stop-run", str(config))
        assert stopped.returncode == 0, stopped.stderr
        subscriber.wait_for(lambda: any(e.kind == "run_stop" for e in subscriber.entries.values()),
                            what="the stop marker")
    finally:
        restarted.send_signal(signal.SIGINT)
        assert restarted.wait(timeout=20) == 0
    start = next(e for e in subscriber.entries.values() if e.kind == "run_start")
    resume = next(e for e in subscriber.entries.values() if e.kind == "run_resume")
    stop = next(e for e in subscriber.entries.values() if e.kind == "run_stop")
    assert start.body["stream_name"] == "GaAs-042"
    assert start.body["physical_sample"] == "S-17"
    assert start.body["tags"] == ["GaAs", "calibration"]
    assert start.body["trigger"] == "manual"
    assert resume.body["run_id"] == stop.body["run_id"] == start.body["run_id"]
    assert start.seq < resume.seq < stop.seq
    assert resume.body["down_from"] == subscriber.entries[resume.seq - 1].time  # the last entry before the crash
    assert resume.body["down_from"] <= resume.body["down_to"]
    assert stop.body["exit_status"] == "success"
    assert (run["run_id"], run["stream_name"], run["trigger"]) == (start.body["run_id"], "GaAs-042", "manual")


def test_start_run_with_no_bridge_exits_1_with_one_line(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"site": "nobody-home", "mqtt": {"host": mosquitto.host,
                                                                      "port": mosquitto.port}}))
    result = _cli("start-run", str(config), "--name", "x", "--timeout", "1")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line == ("chamber-bridge: error: no bridge for site 'nobody-home' answered on "
                    "lab/nobody-home/command within 1 s")




def test_username_and_password_from_a_file(gauges: Any, tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker", users={"bridge": "s3cret", "uploader": "0ther"})
    broker.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    sub = AckingSubscriber(broker.host, broker.port, "lab", "chamber-t", credentials=("uploader", "0ther"))
    try:
        wrong = tmp_path / "wrong-password"
        wrong.write_text("guess\n")
        refused = start_service(make_config(broker, gauges, tmp_path / "refused", username="bridge",
                                            password_file=str(wrong)))
        try:
            refused.outbox.flush()
            sub.wait_for(lambda: (refused.outbox.last_seq or 0) > 20, what="polling while refused")
            assert not refused.publisher.connected
            assert not sub.entries, "nothing may pass a broker that refused the credentials"
        finally:
            refused.publisher.settings.drain_timeout = 0
            refused.stop()
        service = start_service(make_config(broker, gauges, tmp_path / "state", username="bridge",
                                            password_file=str(secret)))
        try:
            sub.wait_for(lambda: len(sub.entries) >= 20, what="readings over an authenticated connection")
        finally:
            service.stop()
    finally:
        sub.close()
        broker.kill()
    assert_contiguous(sub)

"""Hostile commands over a real private Mosquitto to a real bridge: every one is refused with a
reply saying why, none logs a marker, none takes the bridge down (issue 11; docs/security.md).

Run ids are the bridge's alone: a command carrying one (``../../../x``, an absolute path, or
even a well-formed id) is refused, and names are free texts checked for length and control
characters (bridge.names). The commands are crafted as raw msgpack, since the project's own
encoder refuses to send them.
"""

from __future__ import annotations

import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import parse_config
from bridge.edge.publisher import PublisherSettings
from bridge.edge.service import BridgeService
from bridge.names import is_run_id
from bridge.wire import contract
from bridge.wire.topics import Topics
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.net import free_port

SITE = "chamber-h"
FAST = PublisherSettings(ack_timeout=2.0, status_interval=0.5, drain_timeout=0.5)


class Commander:
    """A raw MQTT client that sends any bytes on the command topic and collects the replies."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.topics = Topics("lab", SITE)
        self.replies: queue.Queue[contract.Reply] = queue.Queue()
        #: replies that came while waiting for another request's
        self.others: list[contract.Reply] = []
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile-commander")
        self.client.on_message = lambda c, u, m: self.replies.put(contract.decode_reply(bytes(m.payload)))
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.subscribe(self.topics.command_reply, qos=1)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def send(self, message: Any) -> None:
        data = message if isinstance(message, bytes) else msgpack.packb(message)
        self.client.publish(self.topics.command, data, qos=1).wait_for_publish(timeout=10)

    def ask(self, action: str, params: Any, request_id: str = "req-1") -> contract.Reply:
        """Send a command and return the reply to it; fails if none comes within 10 s."""
        self.send({"v": 1, "request_id": request_id, "action": action, "params": params})
        return self.reply(request_id)

    def reply(self, request_id: str, timeout: float = 10.0) -> contract.Reply:
        while True:
            try:
                reply = self.replies.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no reply to {request_id} within {timeout:g} s") from None
            if reply.request_id == request_id:
                return reply
            self.others.append(reply)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def bridge_config(broker: MosquittoBroker | None, state: Path, port: int | None = None) -> dict[str, Any]:
    """A bridge with no instruments: its outbox holds run markers only, so a marker is easy to spot."""
    return {"site": SITE, "mqtt": {"host": "127.0.0.1" if broker is None else broker.host,
                                   "port": port if broker is None else broker.port,
                                   "topic_prefix": "lab", "keepalive": 5},
            "bridge": {"state_dir": str(state), "instruments": []}}


@pytest.fixture
def bridge(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[BridgeService]:
    service = BridgeService(parse_config(bridge_config(mosquitto, tmp_path / "state")), FAST)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def commander(mosquitto: MosquittoBroker, bridge: BridgeService) -> Iterator[Commander]:
    sender = Commander(mosquitto)
    # the bridge is subscribed once it answers: a harmless command (no run is open) proves it
    for attempt in range(100):
        sender.send({"v": 1, "request_id": f"ping-{attempt}", "action": "stop_run", "params": {}})
        try:
            if sender.reply(f"ping-{attempt}", timeout=0.2).message == "no run is open":
                break
        except AssertionError:
            continue
    else:
        raise AssertionError("the bridge never answered a command")
    sender.others.clear()  # late answers to earlier pings
    yield sender
    sender.close()


def markers(bridge: BridgeService) -> list[contract.LogEntry]:
    bridge.outbox.flush()
    return [e for e in bridge.outbox.pending(0, 10_000) if e.kind in contract.MARKERS]


def assert_refused(reply: contract.Reply, *words: str) -> None:
    assert not reply.ok and reply.seq is None, reply
    assert reply.message.isprintable() and len(reply.message) <= 300, reply.message
    for word in words:
        assert word in reply.message, reply.message


@pytest.mark.parametrize(("run_id", "name"), [
    ("../../../x", "dot-dot"),
    ("/etc/cron.d/evil", "absolute path"),
    ("0123456789abcdef0123456789abcdef", "a well-formed id is refused too: ids are the bridge's"),
])
def test_a_start_run_carrying_a_run_id_is_refused_and_logs_no_marker(
        bridge: BridgeService, commander: Commander, run_id: str, name: str) -> None:
    reply = commander.ask("start_run", {"stream_name": "GaN-17", "run_id": run_id})
    assert_refused(reply, "run_id", "the bridge chooses the run id")
    assert markers(bridge) == []
    assert bridge.runs.current is None


@pytest.mark.parametrize(("params", "words"), [
    ({"stream_name": "x" * 5000}, ("stream_name", "5000 characters", "at most 200")),
    ({"stream_name": "GaN\n17"}, ("stream_name", "control characters", "\\n")),
    ({"stream_name": "\x1b[31mGaN-17"}, ("stream_name", "control characters", "\\x1b")),
    ({"stream_name": "GaN-17", "physical_sample": "S-1\x1b]0;owned\x07"}, ("physical_sample", "control characters")),
    ({"stream_name": "GaN-17", "project_id": "p" * 201}, ("project_id", "at most 200")),
    ({"stream_name": "GaN-17", "tags": 5}, ("tags", "list of strings", "int")),
    ({"stream_name": "GaN-17", "tags": ["ok", "bad\nline"]}, ("tags[1]", "control characters")),
    ({"stream_name": "GaN-17", "tags": {"a": 1}}, ("tags", "list of strings")),
    ({"stream_name": "GaN-17", "site": "uploader"}, ("unknown param 'site'",)),
    ({"stream_name": "GaN-17", "\x1b[2J": 1}, ("unknown param '\\x1b[2J'",)),
    ({"physical_sample": "S-1"}, ("needs a stream_name",)),
    ({"stream_name": 17}, ("stream_name must be a string",)),
    (5, ("params must be a map",)),
])
def test_bad_start_run_params_are_refused_with_a_reply_saying_why(
        bridge: BridgeService, commander: Commander, params: Any, words: tuple[str, ...]) -> None:
    assert_refused(commander.ask("start_run", params), *words)
    assert markers(bridge) == []
    assert bridge.runs.current is None


def test_after_every_refusal_the_bridge_still_opens_and_closes_a_run(
        bridge: BridgeService, commander: Commander) -> None:
    for n, params in enumerate([{"stream_name": "x", "tags": 5}, {"stream_name": "x", "run_id": "../x"},
                                {"stream_name": "x" * 5000}]):
        assert_refused(commander.ask("start_run", params, request_id=f"bad-{n}"))
    started = commander.ask("start_run", {"stream_name": "GaN-17", "tags": ["GaN"]}, request_id="good")
    assert started.ok, started.message
    run_id = started.message.split()[1]
    assert is_run_id(run_id), "the bridge makes the run id: 32 lowercase hex digits"
    stopped = commander.ask("stop_run", {"exit_status": "success"}, request_id="stop")
    assert stopped.ok, stopped.message
    start, stop = markers(bridge)
    assert (start.kind, start.body["run_id"], start.body["stream_name"]) == ("run_start", run_id, "GaN-17")
    assert (stop.kind, stop.body["run_id"], stop.body["exit_status"]) == ("run_stop", run_id, "success")
    assert bridge.publisher.refused_commands >= 3


@pytest.mark.parametrize(("params", "words"), [
    ({"exit_status": "done"}, ("exit_status", "success, abort, fail", "'done'")),
    ({"exit_status": "fail\x1b[2J"}, ("exit_status", "\\x1b[2J")),
    ({"exit_status": 1}, ("exit_status",)),
    ({"exit_status": "abort", "reason": "r" * 5000}, ("reason", "5000 characters")),
    ({"exit_status": "abort", "reason": "line\nforged: ok"}, ("reason", "control characters")),
    ({"exit_status": "success", "run_id": "0" * 32}, ("unknown param 'run_id'",)),
])
def test_a_bad_stop_run_is_refused_and_the_run_stays_open(
        bridge: BridgeService, commander: Commander, params: dict[str, Any], words: tuple[str, ...]) -> None:
    started = commander.ask("start_run", {"stream_name": "GaN-17"}, request_id="start")
    assert started.ok, started.message
    assert_refused(commander.ask("stop_run", params, request_id="stop"), *words)
    assert bridge.runs.current is not None
    assert [m.kind for m in markers(bridge)] == ["run_start"]


@pytest.mark.parametrize(("message", "words"), [
    ({"v": 2, "request_id": "req-1", "action": "start_run", "params": {"stream_name": "x"}}, ("version 2",)),
    ({"v": 1, "request_id": "req-1", "action": "reboot", "params": {}}, ("action 'reboot'",)),
    ({"v": 1, "request_id": "req-1", "action": "start_run"}, ("missing key 'params'",)),
])
def test_a_command_that_fails_to_decode_is_answered_when_its_request_id_is_readable(
        bridge: BridgeService, commander: Commander, message: dict[str, Any], words: tuple[str, ...]) -> None:
    commander.send(message)
    assert_refused(commander.reply("req-1"), *words)
    assert markers(bridge) == []


def test_unanswerable_garbage_is_dropped_and_the_bridge_answers_the_next_command(
        bridge: BridgeService, commander: Commander) -> None:
    for garbage in [b"\xc1", b"\x92\x01\x02", msgpack.packb({"v": 1, "request_id": "x\n" * 40, "action": "stop_run",
                                                             "params": {}}),
                    b"\x00" * (contract.COMMAND_MAX_BYTES + 1)]:
        commander.send(garbage)
    reply = commander.ask("stop_run", {}, request_id="after")
    assert reply.message == "no run is open"
    assert bridge.publisher.refused_commands >= 4
    assert commander.others == [], "garbage without a readable request id must get no reply"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("options", "words"), [
    (["--name", "GaN\n17"], "start_run: stream_name must not contain control characters (found '\\n')"),
    (["--name", "x" * 5000], "start_run: stream_name is 5000 characters long; at most 200 are allowed"),
    (["--name", "GaN-17", "--tag", "\x1b[31mred"], "start_run: tags[0] must not contain control characters"),
])
def test_the_cli_refuses_a_bad_name_before_connecting(tmp_path: Path, options: list[str], words: str) -> None:
    """Nothing listens on the config's port: had the CLI tried to send, it would say it cannot reach it."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(bridge_config(None, tmp_path / "state", free_port())))
    result = _cli("start-run", str(config), *options)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"chamber-bridge: error: {words}")
    assert line.isprintable()

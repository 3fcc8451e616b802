"""``chamber-bridge annotate``, ``auto on|off`` and ``next-run`` as real processes against a real bridge.

The bridge runs in this process on a private Mosquitto (its one instrument, which automatic runs
name, is at a loopback port nobody listens on: the outbox holds markers and events only); each
command is the CLI in a process of its own, over the command topic, and its effect is read in the
bridge's outbox and on the retained run topic. Bad input is refused by the CLI before it
connects (exit 2, one line naming it), as for ``start-run``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.edge.publisher import PublisherSettings
from bridge.edge.service import BridgeService
from tests.helpers.cli import run_cli
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.net import free_port
from tests.helpers.uploader import wait_for
from tests.helpers.watch import Watcher

SITE = "chamber-c"
RUN_TOPIC = f"lab/{SITE}/run"
FAST = PublisherSettings(ack_timeout=2.0, status_interval=0.5, drain_timeout=0.5)
AUTO = {"start_when": "cell.pv > 500.0"}


def config(tmp_path: Path, port: int, auto: bool = False) -> Path:
    raw: dict[str, Any] = {"site": SITE, "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": "lab",
                                                  "keepalive": 5},
                           "bridge": {"state_dir": str(tmp_path / "state"), "instruments": []}}
    if auto:
        raw["bridge"]["instruments"] = [{
            "name": "cell", "driver": "eurotherm", "interval": 1.0, "options": {"family": "3500"},
            "transport": {"kind": "modbus_tcp", "host": "127.0.0.1", "port": free_port()}}]
        raw["bridge"]["runs"] = {"auto": AUTO}
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class Bridge:
    def __init__(self, broker: MosquittoBroker, path: Path) -> None:
        self.config = path
        self.service = BridgeService(parse_config(yaml.safe_load(path.read_text())), FAST)
        self.service.start()
        self.watch = Watcher(broker, [RUN_TOPIC], client_id="run-topic-watcher")
        wait_for(lambda: self.service.publisher.connected, what="the bridge to connect")

    def logged(self) -> list[tuple[int, str, dict[str, Any]]]:
        self.service.outbox.flush()
        return [(e.seq, e.kind, e.body) for e in self.service.outbox.pending(0, 10_000)]

    def run_topic(self, condition: Any) -> dict[str, Any]:
        found = wait_for(lambda: next((body for _, body in reversed(self.watch.on(RUN_TOPIC)) if condition(body)),
                                      None), what="the retained run topic")
        assert isinstance(found, dict)
        return found

    def ask(self, *args: str) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        if command == "auto":
            return run_cli("auto", rest[0], str(self.config), *rest[1:])
        return run_cli(command, str(self.config), *rest)

    def close(self) -> None:
        self.watch.close()
        self.service.stop()


@pytest.fixture
def bridge(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Bridge]:
    running = Bridge(mosquitto, config(tmp_path, mosquitto.port, auto=True))
    yield running
    running.close()


def test_annotate_logs_an_event_in_the_open_run_and_outside_any(bridge: Bridge) -> None:
    outside = bridge.ask("annotate", "bake-out done", "--tag", "bake")
    assert outside.returncode == 0, outside.stderr
    assert outside.stdout.startswith("event logged (no run open) (seq ")
    assert bridge.ask("start-run", "--name", "GaAs-042").returncode == 0
    inside = bridge.ask("annotate", "Ga shutter open", "--tag", "shutter", "--tag", "Ga")
    assert inside.returncode == 0, inside.stderr
    run_id = bridge.service.runs.current["run_id"] if bridge.service.runs.current else None
    assert inside.stdout.startswith(f"event logged in run {run_id} (seq ")
    events = [(kind, body) for _, kind, body in bridge.logged() if kind == "event"]
    assert events == [
        ("event", {"text": "bake-out done", "tags": ["bake"], "source": "cli", "run_id": None}),
        ("event", {"text": "Ga shutter open", "tags": ["shutter", "Ga"], "source": "cli", "run_id": run_id})]


def test_auto_off_and_on_is_kept_and_shown_on_the_run_topic(bridge: Bridge, mosquitto: MosquittoBroker,
                                                            tmp_path: Path) -> None:
    assert bridge.run_topic(lambda body: True)["auto"] is True
    off = bridge.ask("auto", "off")
    assert (off.returncode, off.stdout.split(" (seq")[0]) == (0, "automatic runs switched off"), off.stderr
    assert bridge.run_topic(lambda body: body["auto"] is False)["run"] is None
    again = bridge.ask("auto", "off")
    assert (again.returncode, again.stdout) == (0, "automatic runs are already off\n")
    bridge.close()
    restarted = Bridge(mosquitto, bridge.config)  # the switch survives a restart
    try:
        assert restarted.run_topic(lambda body: True)["auto"] is False
        assert restarted.ask("auto", "on").returncode == 0
        assert restarted.run_topic(lambda body: body["auto"] is True)
    finally:
        restarted.close()


def test_auto_without_a_configured_trigger_is_refused(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    plain = Bridge(mosquitto, config(tmp_path, mosquitto.port))
    try:
        result = plain.ask("auto", "on")
        assert result.returncode == 1
        assert result.stderr == (f"chamber-bridge: error: the bridge of {SITE} refused: automatic runs are not "
                                 "configured (bridge.runs.auto)\n")
        assert plain.run_topic(lambda body: True)["auto"] is False
    finally:
        plain.close()


def test_next_run_is_shown_used_once_and_cleared(bridge: Bridge) -> None:
    result = bridge.ask("next-run", "--sample", "S-17", "--tag", "GaAs", "--name", "GaAs-043")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "the next run will have stream_name GaAs-043, physical_sample S-17, tags GaAs\n"
    shown = bridge.run_topic(lambda body: body["next_run"] is not None)["next_run"]
    assert shown == {"stream_name": "GaAs-043", "physical_sample": "S-17", "tags": ["GaAs"]}
    assert bridge.ask("start-run", "--name", "by-hand").returncode == 0
    state = bridge.run_topic(lambda body: body["run"] is not None)
    assert state["next_run"] is None
    assert (state["run"]["stream_name"], state["run"]["physical_sample"], state["run"]["tags"],
            state["run"]["trigger"]) == ("by-hand", "S-17", ["GaAs"], "manual")
    assert bridge.ask("stop-run").returncode == 0
    assert bridge.ask("next-run", "--project", "p-1").returncode == 0
    cleared = bridge.ask("next-run", "--clear")
    assert (cleared.returncode, cleared.stdout) == (0, "next-run metadata cleared\n")
    assert bridge.service.runs.next_run is None


@pytest.mark.parametrize(("args", "says"), [
    (("annotate", "{config}", "line\nforged"), "annotate: text must not contain control characters (found '\\n')"),
    (("annotate", "{config}", "x" * 1001), "annotate: text is 1001 characters long; at most 1000 are allowed"),
    (("annotate", "{config}", "ok", "--tag", "\x1b[31m"), "annotate: tags[0] must not contain control characters"),
    (("next-run", "{config}"), "give the next run's metadata (--name, --sample, --instrument-id, --project, --tag) "
                               "or --clear, not both or neither"),
    (("next-run", "{config}", "--clear", "--sample", "S-1"), "give the next run's metadata"),
    (("next-run", "{config}", "--name", "a\x1bb"), "next_run: stream_name must not contain control characters"),
])
def test_bad_input_is_refused_before_connecting(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    """Nothing listens on the config's port: had the CLI tried to send, it would say it cannot reach it."""
    path = config(tmp_path, free_port())
    result = run_cli(*(arg.format(config=path) for arg in args))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"chamber-bridge: error: {says}") and line.isprintable()


def test_auto_takes_on_or_off_only(tmp_path: Path) -> None:
    result = run_cli("auto", "maybe", str(config(tmp_path, free_port())))
    assert result.returncode == 2
    assert "'maybe' is not one of 'on', 'off'" in result.stderr


def test_the_run_topic_is_json_with_every_key(bridge: Bridge) -> None:
    body = bridge.run_topic(lambda body: True)
    assert set(body) >= {"v", "site", "run", "auto", "next_run", "auto_state"}
    # the trigger's timer evaluates the condition although no reading came: unknown, and why
    body = bridge.run_topic(lambda body: body["auto_state"]["unknown"])
    assert body["auto_state"]["start"] == "unknown" and body["auto_state"]["unknown"] == {"cell.pv": "no reading"}
    assert json.loads(json.dumps(body)) == body

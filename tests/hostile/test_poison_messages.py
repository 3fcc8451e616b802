"""Hostile messages on the broker (issue 11, rows 1-5, 7, 8 and the starvation case).

One scenario, run once for the module on real parts (private Mosquitto, simulated gauges, a
bridge and the uploader in this process, the local store): an attacker holding one site's
login (``evil``) publishes 1,000 poison messages of every kind the probe found, interleaved
with a real run of the site ``chamber-u``; the uploader is restarted in the middle with poison
still queued for it; then the attacker replays the finalized run's id; then a second real run.
Each test below checks one row of the probe's table against what the scenario recorded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from bridge.cli.main import cli
from bridge.model import Quality, Reading
from bridge.wire import contract
from tests.faults.conftest import Figures
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.pipeline import Pipeline
from tests.helpers.uploader import assert_store_holds_run, finalized, tpg_gauges, wait_for

EVIL = "evil"
T = 1_765_000_000.0
EPOCH = "e" * 32
POISON = 1_000
UPLOADER_STATUS = "lab/uploader/status"


def _batch(entries: list[list[Any]], *, site: str = EVIL, epoch: str = EPOCH, **envelope: Any) -> bytes:
    data: bytes = msgpack.packb({"v": 1, "site": site, "epoch": epoch, "entries": entries, **envelope})
    return data


def _reading(seq: int, **change: Any) -> list[Any]:
    body = {**contract.reading_body(Reading("gauge1", "p1", 1e-7, Quality.OK, T, "mbar")), **change}
    return [seq, "reading", T, body]


def _start(seq: int, run_id: Any = "ab" * 16, **more: Any) -> list[Any]:
    body = {"stream_name": "forged", "tags": [], **({} if run_id is None else {"run_id": run_id}), **more}
    return [seq, "run_start", T, body]


def _deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: (row, topic, payload, the reason the uploader must count it under): one of each, cycled to POISON messages
KINDS: list[tuple[str, str, Callable[[int], bytes], str]] = [
    ("wrong_type", f"lab/{EVIL}/data", lambda n: _batch([_reading(n, i=["x"])]), "bad_reading"),
    ("seq_2_63", f"lab/{EVIL}/data", lambda n: _batch([_reading(2**63 + n)]), "bad_seq"),
    ("seq_2_64", f"lab/{EVIL}/data", lambda n: _batch([_reading(2**64 - 1)]), "bad_seq"),
    ("start_no_run_id", f"lab/{EVIL}/data", lambda n: _batch([_start(n, None)]), "bad_run_start"),
    ("start_binary_meta", f"lab/{EVIL}/data", lambda n: _batch([_start(n, physical_sample=b"\x00\xff")]),
     "bad_run_start"),
    ("deep_status", f"lab/{EVIL}/status", lambda n: _deep_json(200_000), "bad_status"),
    ("deep_status_parsed", f"lab/{EVIL}/status", lambda n: _deep_json(100_000), "bad_status"),
    ("site_mismatch", f"lab/{EVIL}/data", lambda n: _batch([_reading(n)], site="chamber-u"), "site_mismatch"),
    ("site_slash", f"lab/{EVIL}/data", lambda n: _batch([_reading(n)], site="chamber-u/../x"), "site_mismatch"),
    ("site_dotdot", "lab/../data", lambda n: _batch([_reading(n)], site=".."), "bad_site"),
    # Mosquitto itself disconnects a client whose topic holds a control character: the escape goes in the body
    ("site_ansi", f"lab/{EVIL}/data", lambda n: _batch([_reading(n)], site="ev\x1b[31mil"), "site_mismatch"),
    ("site_unicode", "lab/évil\u202e/data", lambda n: _batch([_reading(n)], site="évil\u202e"), "bad_site"),
    ("site_reserved", "lab/uploader/data", lambda n: _batch([_reading(n)], site="uploader"), "bad_site"),
    ("time_nan", f"lab/{EVIL}/data", lambda n: _batch([[n, "reading", math.nan, _reading(n)[3]]]), "bad_time"),
    ("time_inf", f"lab/{EVIL}/data", lambda n: _batch([_reading(n, t=math.inf)]), "bad_reading"),
    ("time_1e300", f"lab/{EVIL}/data", lambda n: _batch([[n, "reading", 1e300, _reading(n)[3]]]), "bad_time"),
    ("garbage", f"lab/{EVIL}/data", lambda n: os.urandom(64) + b"\xc1", "not_msgpack"),
]


@dataclass
class Scenario:
    pipeline: Pipeline
    store: Path
    run_a: str = ""
    run_b: str = ""
    manifest_a: bytes = b""
    sent: dict[str, int] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return self.statuses[-1]["bad_messages"]


class Attacker:
    """A client with the evil site's login: publishes whatever it likes, QoS1, and waits for the PUBACKs."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="evil-site", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("poison")
    broker = MosquittoBroker(tmp / "mosquitto")
    broker.start()
    gauges = tpg_gauges()
    pipeline = Pipeline(tmp, broker, gauges, ppc=10, interval=0.05)
    s = Scenario(pipeline, pipeline.store)
    attacker = Attacker(broker)
    sent = 0

    def poison(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            row, topic, make, _reason = KINDS[sent % len(KINDS)]
            attacker.send(topic, make(sent + 1))
            s.sent[row] = s.sent.get(row, 0) + 1
            sent += 1

    try:
        pipeline.start()
        pipeline.wait_connected()
        s.run_a = pipeline.start_run("GaAs-A")
        began = time.monotonic()
        poison(POISON // 2)  # while run A logs readings
        s.figures["poison_published_s"] = round(time.monotonic() - began, 2)
        stop_a = pipeline.stop_run()
        stopped = time.monotonic()
        wait_for(lambda: finalized(s.store, s.run_a), timeout=120, what="run A to be finalized among the poison")
        s.figures["run_a_stop_to_finalized_s"] = round(time.monotonic() - stopped, 2)
        pipeline.wait_acked(stop_a)
        s.manifest_a = (s.store / s.run_a / "manifest.json").read_bytes()
        readings_a = pipeline.recorded.recorded.run(s.run_a)

        pipeline.stop_uploader()  # the rest of the poison queues at the broker for its persistent session
        poison(POISON - POISON // 2)
        # row 5: the finalized run's id again, from the evil site and as a new epoch of chamber-u's topic
        replay = [_start(1, s.run_a), _reading(2, v=666.0), [3, "run_stop", T, {"run_id": s.run_a,
                                                                             "exit_status": "success"}]]
        attacker.send(f"lab/{EVIL}/data", _batch(replay, epoch="f" * 32))
        attacker.send("lab/chamber-u/data", _batch(replay, site="chamber-u", epoch="d" * 32))
        s.sent["run_id_reused"] = 2
        pipeline.start_uploader()
        restarted = time.monotonic()
        pipeline.wait_connected()

        s.run_b = pipeline.start_run("GaAs-B")
        pipeline.wait_logged(100)
        stop_b = pipeline.stop_run()
        wait_for(lambda: (pipeline.watch.latest(UPLOADER_STATUS) or {}).get("bad_messages", {})
                 .get(EVIL, {}).get("run_id_reused"), timeout=60, what="the replayed run id to be refused")
        s.figures["restart_to_queued_poison_handled_s"] = round(time.monotonic() - restarted, 2)
        s.figures.update(pipeline.finish(s.run_b, stop_b, timeout=120))  # run B: complete, in order, once
        assert_store_holds_run(s.store, s.run_a, readings_a, 10)
        s.statuses = [m for _, m in pipeline.watch.on(UPLOADER_STATUS)
                      if isinstance(m, dict) and m.get("state") == "online"]
        yield s
    finally:
        attacker.close()
        pipeline.close()
        for _, server in gauges:
            server.stop()
        broker.kill()


def _sent_for(reason: str) -> int:
    return sum(1 for n in range(POISON) if KINDS[n % len(KINDS)][3] == reason)


# ---------------------------------------------------------------- the starvation case


def test_a_real_run_is_complete_among_1000_poison_messages_and_again_after_a_restart(scenario: Scenario) -> None:
    assert sum(n for row, n in scenario.sent.items() if row != "run_id_reused") == POISON
    for run_id in (scenario.run_a, scenario.run_b):
        doc = json.loads((scenario.store / run_id / "manifest.json").read_text())
        assert doc["finalized"] and doc["report"]["complete"] and doc["exit_status"] == "success", doc["report"]
    assert scenario.figures["lost"] == 0 and scenario.figures["broker_dropped"] == 0


# ---------------------------------------------------------------- one test per row of the probe's table


@pytest.mark.parametrize("reason", ["bad_reading", "bad_seq"])
def test_row1_wrong_types_and_huge_seqs_are_counted_not_retried(scenario: Scenario, reason: str) -> None:
    # counted at least once per message sent (a message redelivered after the restart counts again)
    assert scenario.counts[EVIL][reason] >= _sent_for(reason)


def test_row2_markers_without_run_id_or_with_binary_metadata_stop_nothing(scenario: Scenario) -> None:
    assert scenario.counts[EVIL]["bad_run_start"] >= _sent_for("bad_run_start")
    status = scenario.statuses[-1]
    assert status["runs_failed"] == [] and status["sources_failed"] == []


def test_row3_a_200000_deep_json_status_is_refused_and_data_goes_on(scenario: Scenario) -> None:
    assert scenario.counts[EVIL]["bad_status"] >= _sent_for("bad_status")


def test_row4_the_site_is_the_topics_not_the_payloads(scenario: Scenario) -> None:
    assert scenario.counts[EVIL]["site_mismatch"] >= _sent_for("site_mismatch")
    runs = {p.name for p in scenario.store.iterdir() if (p / "manifest.json").exists()}
    assert runs == {scenario.run_a, scenario.run_b}
    for run_id in runs:
        assert json.loads((scenario.store / run_id / "manifest.json").read_text())["site"] == "chamber-u"


def test_row5_a_finalized_run_id_cannot_be_reused(scenario: Scenario) -> None:
    assert scenario.counts[EVIL]["run_id_reused"] >= 1
    assert scenario.counts["chamber-u"]["run_id_reused"] >= 1
    after = (scenario.store / scenario.run_a / "manifest.json").read_bytes()
    assert hashlib.sha256(after).digest() == hashlib.sha256(scenario.manifest_a).digest()


def test_row7_hostile_site_names_are_refused_and_nothing_leaves_the_store(scenario: Scenario) -> None:
    bad_sites = {site for site, reasons in scenario.counts.items() if "bad_site" in reasons}
    assert sum(scenario.counts[site]["bad_site"] for site in bad_sites) >= _sent_for("bad_site")
    for site in bad_sites:  # kept printable: no escape character, no bidi override, no slash
        assert "\x1b" not in site and "\u202e" not in site
    # the uploader wrote nothing but its spool and the store, and the store holds the two runs only
    tops = {p.name for p in scenario.pipeline.tmp.iterdir()}
    assert tops <= {"mosquitto", "bridge-state", "uploader-state", "store", "uploader.yaml"}, tops
    assert {p.name for p in scenario.store.iterdir()} == {scenario.run_a, scenario.run_b}


def test_row8_nan_inf_and_1e300_timestamps_are_refused_and_the_store_reads(scenario: Scenario) -> None:
    assert scenario.counts[EVIL]["bad_time"] >= _sent_for("bad_time")
    result = CliRunner().invoke(cli, ["runs", "list", "--store", str(scenario.store)])
    assert result.exit_code == 0, result.output
    assert "GaAs-A" in result.output and "GaAs-B" in result.output


def test_every_bad_message_is_quarantined_and_listed_escaped(scenario: Scenario) -> None:
    config = scenario.pipeline.tmp / "uploader.yaml"
    config.write_text(json.dumps(scenario.pipeline.uploader_raw))
    result = CliRunner().invoke(cli, ["upload-quarantine", str(config), "--limit", "50"])
    assert result.exit_code == 0, result.output
    assert f"{EVIL}: " in result.output and "bad_seq" in result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output
    spool = sqlite3.connect(scenario.pipeline.uploader_state / "spool.sqlite")
    (kept,) = spool.execute("SELECT count(*) FROM quarantine").fetchone()
    assert 0 < kept <= 1000


def test_the_uploader_kept_publishing_its_status_while_fed_poison(scenario: Scenario, figures: Figures) -> None:
    times = [s["time"] for s in scenario.statuses]
    assert len(times) >= 3 and all(b >= a for a, b in itertools.pairwise(times))
    figures.record(row=0, fault="hostile: 1,000 poison messages of every kind, uploader restart, replayed run id",
                   poison_messages=POISON, counted=scenario.counts, **scenario.figures)

"""Forged acks over a real private Mosquitto: an ack deletes data, so the bridge takes only one
the uploader could have sent (issue 11; docs/security.md; bridge.edge.publisher._ack_refusal).

On a broker without ACLs anyone may publish on ``{prefix}/{site}/ack``. One ack claiming a seq
far beyond what the bridge has published, or naming another epoch, used to trim every entry up
to it, stored by the uploader or not. Now such an ack deletes nothing and is counted in the
bridge's status, while the real uploader's acks still trim, also right after a restart, when the
uploader acks seqs the previous process published.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import parse_config
from bridge.edge.publisher import PublisherSettings
from bridge.edge.service import OUTBOX_FILE, BridgeService
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.wire import contract
from tests.helpers.ack_subscriber import AckingSubscriber
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.uploader import chamber_config, tpg_gauges, wait_for
from tests.system.test_bridge import make_config

FAST = PublisherSettings(ack_timeout=2.0, status_interval=0.5, drain_timeout=0.5)
STATUS = "lab/chamber-t/status"


@pytest.fixture
def gauges() -> Iterator[Any]:
    pairs = tpg_gauges()
    yield pairs
    for _, server in pairs:
        server.stop()


@pytest.fixture
def subscriber(mosquitto: MosquittoBroker) -> Iterator[AckingSubscriber]:
    """Stands in for the uploader; starts not acknowledging, so the outbox holds what was published."""
    sub = AckingSubscriber(mosquitto.host, mosquitto.port, "lab", "chamber-t")
    sub.acking = False
    yield sub
    sub.close()


class Forger:
    """Anyone on a broker without ACLs: publishes acks on the bridge's ack topic."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="forger")
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()

    def ack(self, epoch: str, seq: int) -> None:
        self.client.publish("lab/chamber-t/ack", contract.encode_ack(epoch, seq), qos=1).wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def forger(mosquitto: MosquittoBroker) -> Iterator[Forger]:
    f = Forger(mosquitto)
    yield f
    f.close()


def rows(state: Path, up_to: int) -> tuple[int, int | None]:
    """Entries with seq <= ``up_to`` in the outbox file, read through a connection of our own, and the lowest seq."""
    with sqlite3.connect(f"file:{state / OUTBOX_FILE}?mode=ro", uri=True) as db:
        count, lowest = db.execute("SELECT count(*), min(seq) FROM entries WHERE seq <= ?", (up_to,)).fetchone()
    return int(count), lowest


def retained_status(sub: AckingSubscriber) -> dict[str, Any]:
    raw = sub.retained.get(STATUS)
    return json.loads(raw) if raw else {}


def test_a_forged_ack_deletes_nothing_is_counted_and_real_acks_still_trim(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, forger: Forger, gauges: Any,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.edge.publisher")
    state = tmp_path / "state"
    service = BridgeService(parse_config(make_config(mosquitto, gauges, state)), FAST)
    service.start()
    try:
        subscriber.wait_for(lambda: len(subscriber.entries) >= 60, what="60 published entries")
        epoch = service.outbox.epoch
        assert subscriber.epoch == epoch
        service.outbox.flush()
        mark = max(subscriber.entries)
        before = rows(state, mark)
        assert before == (mark, 1), "nothing may have been trimmed yet"

        forger.ack(epoch, 10**9)  # far beyond anything published
        wait_for(lambda: service.publisher.refused_acks >= 1, what="the forged ack to be refused")
        forger.ack("f" * 32, 10)  # another epoch
        wait_for(lambda: service.publisher.refused_acks >= 2, what="the other epoch's ack to be refused")
        forger.ack(epoch, 2**63 - 1)
        wait_for(lambda: service.publisher.refused_acks >= 3, what="the third forged ack to be refused")

        assert rows(state, mark) == before, "a forged ack deleted entries"
        assert service.outbox.acked_seq == 0
        assert service.status()["outbox"]["refused_acks"] == 3
        subscriber.wait_for(lambda: retained_status(subscriber).get("outbox", {}).get("refused_acks") == 3,
                            what="refused_acks in the retained status")

        subscriber.acking = True
        subscriber.ack()
        subscriber.wait_for(lambda: service.outbox.acked_seq >= mark, what="the real acks to trim")
        assert rows(state, mark) == (0, None)
        assert service.publisher.refused_acks == 3, "a real ack was refused"
    finally:
        service.stop()
    refusals = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    beyond = [m for m in refusals if "nothing beyond seq" in m]
    assert len(beyond) == 1, f"two refusals for one reason within a minute must log once: {refusals}"
    assert len([m for m in refusals if f"ack for epoch {'f' * 32} ignored" in m]) == 1


def test_after_a_restart_acks_for_what_the_previous_process_published_still_trim(
        mosquitto: MosquittoBroker, subscriber: AckingSubscriber, forger: Forger, gauges: Any,
        tmp_path: Path) -> None:
    """The uploader acks seqs the previous process published before the new one has resent them.

    The new process resends one entry per message, one message in flight: the uploader's first
    ack after the restart (for everything the first process published) arrives while the new
    process has published only a few entries, and it must trim all the same.
    """
    state = tmp_path / "state"
    raw = make_config(mosquitto, gauges, state)
    first = BridgeService(parse_config(raw), FAST)
    first.start()
    try:
        subscriber.wait_for(lambda: len(subscriber.entries) >= 200, what="200 entries from the first process")
    finally:
        first.stop()
    published = max(subscriber.entries)
    assert first.outbox.acked_seq == 0
    slow = PublisherSettings(batch_size=1, max_in_flight=1, ack_timeout=2.0, status_interval=0.5, drain_timeout=0.5)
    second = BridgeService(parse_config(raw), slow)
    assert second.outbox.committed_at_open >= published
    subscriber.acking = True  # it acks on the first resent entry: everything it holds
    second.start()
    try:
        subscriber.wait_for(lambda: second.outbox.acked_seq >= published, what="the ack of the first process's seqs")
        assert second.publisher.refused_acks == 0, "a real ack after a restart was refused"
        epoch = second.outbox.epoch
        beyond = (second.outbox.last_seq or 0) + 10_000
        forger.ack(epoch, beyond)
        wait_for(lambda: second.publisher.refused_acks == 1, what="a forged ack after the restart to be refused")
        assert second.outbox.acked_seq < beyond
    finally:
        second.stop()


def test_the_real_uploader_never_has_an_ack_refused(mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path) -> None:
    """Bridge and the real uploader, with the uploader restarted midway (it repeats its acks then)."""
    raw = chamber_config(mosquitto, gauges, tmp_path)
    bridge = BridgeService(parse_config(raw), FAST)
    bridge.start()
    settings = UploaderSettings(status_interval=0.5, backoff_initial=0.1, backoff_cap=1.0)
    uploader = UploaderService(parse_config(raw), settings=settings)
    uploader.start()
    try:
        wait_for(lambda: bridge.outbox.acked_seq > 100, what="the uploader's acks")
        uploader.stop()
        mark = bridge.outbox.last_seq or 0
        uploader = UploaderService(parse_config(raw), settings=settings)
        uploader.start()
        wait_for(lambda: bridge.outbox.acked_seq > mark + 50, what="acks from the restarted uploader")
    finally:
        uploader.stop()
        bridge.stop()
    assert bridge.publisher.refused_acks == 0

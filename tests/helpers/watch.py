"""Watching a private broker from outside: retained statuses and the broker's own counters.

:class:`Watcher` keeps every message on the topics it is given (JSON decoded where it can be)
with the time it arrived, so a test can ask when an alarm first showed on a status topic.
:func:`sys_broker` starts a Mosquitto that publishes its ``$SYS`` counters every second;
:meth:`Watcher.dropped` sums ``$SYS/broker/publish/messages/dropped`` over the broker's restarts
(the counter starts again at 0 with every broker process). docs/design.md section 12: a QoS1 subscriber
that falls behind loses messages the publisher saw PUBACKed, and this counter is how it shows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.mosquitto import MosquittoBroker

DROPPED = "$SYS/broker/publish/messages/dropped"


def sys_broker(workdir: Path, extra_config: str = "") -> MosquittoBroker:
    """A started private Mosquitto whose ``$SYS`` topics are refreshed every second."""
    broker = MosquittoBroker(workdir, extra_config="sys_interval 1\n" + extra_config)
    broker.start()
    return broker


class Watcher:
    """Every message on ``topics`` (wildcards allowed), kept with its arrival time (monotonic)."""

    def __init__(self, broker: MosquittoBroker, topics: list[str], client_id: str = "fault-watcher") -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[float, str, Any]] = []
        self._dropped_runs: list[int] = [0]  # the last value seen per broker process
        self.topics = [*topics, DROPPED]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]  # paho takes floats too
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        if message.topic == DROPPED:
            value = int(payload or b"0")
            with self.lock:
                if value < self._dropped_runs[-1]:
                    self._dropped_runs.append(value)  # a new broker process counts from 0
                else:
                    self._dropped_runs[-1] = value
            return
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = payload
        with self.lock:
            self.messages.append((time.monotonic(), message.topic, body))

    def dropped(self) -> int:
        """Messages the broker dropped, summed over its restarts (as of its last ``$SYS`` update)."""
        with self.lock:
            return sum(self._dropped_runs)

    def on(self, topic: str, since: float = 0.0) -> list[tuple[float, Any]]:
        with self.lock:
            return [(at, body) for at, t, body in self.messages if t == topic and at >= since]

    def latest(self, topic: str) -> Any:
        found = self.on(topic)
        return found[-1][1] if found else None

    def first(self, topic: str, condition: Callable[[Any], bool], since: float = 0.0) -> tuple[float, Any] | None:
        """The first message on ``topic`` since ``since`` that meets ``condition``: (arrival, body)."""
        return next(((at, body) for at, body in self.on(topic, since) if _safe(condition, body)), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _safe(condition: Callable[[Any], bool], body: Any) -> bool:
    try:
        return bool(condition(body))
    except (KeyError, TypeError, IndexError, AttributeError):
        return False

"""Stands in for the uploader: a persistent QoS1 subscriber that dedupes and acknowledges.

It keeps every (epoch, seq) once, acknowledges the highest contiguous seq on the ack topic
(docs/design.md section 3), and can be told to stop acknowledging, to show the outbox grow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.wire import contract
from bridge.wire.topics import Topics


class AckingSubscriber:
    def __init__(self, host: str, port: int, prefix: str, site: str, client_id: str = "test-uploader",
                 credentials: tuple[str, str] | None = None) -> None:
        self.topics = Topics(prefix, site)
        self.lock = threading.Lock()
        self.entries: dict[int, contract.LogEntry] = {}
        self.arrival: list[int] = []
        self.duplicates = 0
        self.conflicts: list[int] = []
        self.epoch: str | None = None
        self.acking = True
        self.acked = 0
        self.retained: dict[str, bytes] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]  # paho takes floats too
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(self.topics.data, 1), (self.topics.status, 1), (self.topics.run, 1)])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.topics.data:
            with self.lock:
                self.retained[message.topic] = bytes(message.payload)
            return
        batch = contract.decode_batch(bytes(message.payload), message.topic.split("/")[-2])
        with self.lock:
            self.epoch = batch.epoch
            for entry in batch.entries:
                known = self.entries.get(entry.seq)
                if known is None:
                    self.entries[entry.seq] = entry
                    self.arrival.append(entry.seq)
                else:
                    self.duplicates += 1
                    if known != entry:
                        self.conflicts.append(entry.seq)
        self.ack()

    def contiguous(self) -> int:
        with self.lock:
            seq = self.acked
            while seq + 1 in self.entries:
                seq += 1
            return seq

    def ack(self) -> None:
        if not self.acking or self.epoch is None:
            return
        seq = self.contiguous()
        self.acked = seq
        self.client.publish(self.topics.ack, contract.encode_ack(self.epoch, seq), qos=1)

    def readings(self) -> list[contract.LogEntry]:
        with self.lock:
            return [self.entries[s] for s in sorted(self.entries) if self.entries[s].kind == "reading"]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

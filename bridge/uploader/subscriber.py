"""The uploader's MQTT side: a persistent QoS1 session that hands every message to a queue.

Persistent, so the broker queues data while the uploader is away: a fixed client id, MQTT v5
with a session expiry interval (without one the session dies at disconnect and the bridges'
publishes are dropped as "no matching subscribers", docs/design.md section 12) or 3.1.1 with
``clean_session`` false. ``manual_ack``: paho would otherwise PUBACK a message as soon as the
callback returns, before it is on disk; here the service acks after the spool commit, in
receive order. The callbacks only put messages on a queue: nothing slow, nothing that can
block paho's network thread (which holds its locks while calling them).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from bridge.config import MqttConfig
from bridge.wire.mqtt import CallbackErrors, connect_properties, guarded, make_client, revive_network_thread

log = logging.getLogger(__name__)


class Message(NamedTuple):
    mid: int
    qos: int
    topic: str
    payload: bytes


class Subscriber:
    def __init__(self, config: MqttConfig, client_id: str, topics: list[str], *, session_expiry: int,
                 will: tuple[str, bytes] | None = None) -> None:
        self.config = config
        self.topics = topics
        self.session_expiry = session_expiry
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.callback_errors = CallbackErrors()
        self._leaving = False
        self.loop_restarts = 0
        self.connected = threading.Event()
        self.on_connected: list[Any] = []
        self.client = make_client(config, client_id, clean_start=False, manual_ack=True)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = guarded(self.callback_errors, "on_connect", self._on_connect)
        self.client.on_disconnect = guarded(self.callback_errors, "on_disconnect", self._on_disconnect)
        self.client.on_message = guarded(self.callback_errors, "on_message", self._on_message)

    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive,
                                  clean_start=False, properties=connect_properties(self.config, self.session_expiry))
        self.client.loop_start()

    def stop(self, last_words: tuple[str, bytes] | None = None) -> None:
        if last_words is not None and self.connected.is_set():
            info = self.client.publish(last_words[0], last_words[1], qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                log.warning("could not publish the offline status before disconnecting")
        self._leaving = True  # a disconnect we asked for is not news
        self.client.disconnect()
        self.client.loop_stop()

    def watch(self) -> None:
        if revive_network_thread(self.client):
            self.loop_restarts += 1
            log.error("the MQTT network thread was gone; restarted it (restart %d)", self.loop_restarts)

    def ack(self, message: Message) -> None:
        """PUBACK one message, now that it is durable (QoS0 messages have nothing to ack)."""
        if message.qos > 0:
            self.client.ack(message.mid, message.qos)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.config.host, self.config.port, reason_code)
            return
        session = getattr(flags, "session_present", None)
        log.info("connected to %s:%s (session present: %s)", self.config.host, self.config.port, session)
        client.subscribe([(topic, 1) for topic in self.topics])
        self.connected.set()
        for callback in self.on_connected:
            callback()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if self.connected.is_set() and not self._leaving:
            log.warning("lost the broker (%s); the bridges keep everything in their outboxes", reason_code)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Message(message.mid, message.qos, message.topic, bytes(message.payload)))

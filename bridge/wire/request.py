"""One-shot MQTT exchanges from the command line: ask a site's bridge, or read a retained status.

Both open a throw-away clean session (:class:`OneShot`), subscribe to one topic and wait for one
message, and both must say plainly why nothing came: no broker, a refused login, a subscription
the ACL denies, a connection the broker closed, or silence. That logic lives here once.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt

from bridge.config import MqttConfig
from bridge.errors import BridgeError, ProtocolError
from bridge.wire import contract
from bridge.wire.mqtt import CallbackErrors, guarded, make_client
from bridge.wire.topics import Topics


class NoAnswer(BridgeError):
    """Nobody answered: no broker, a refused login or subscription, or nothing on the topic in time."""


class OneShot:
    """A clean session subscribed to ``topic``: ``with OneShot(...) as s: s.publish(...); s.wait(...)``.

    Entering connects and waits until the subscription is granted, raising :class:`NoAnswer` with
    the reason when it cannot; the session is gone (disconnected, nothing kept at the broker)
    when the block ends.
    """

    def __init__(self, config: MqttConfig, topic: str, *, purpose: str, timeout: float) -> None:
        self.config = config
        self.topic = topic
        self.timeout = timeout
        self.where = f"{config.host}:{config.port}"
        self.login = config.username if config.username is not None else "anonymous"
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._errors = CallbackErrors()
        self.client = make_client(config, f"chamber-bridge-{purpose}-{uuid.uuid4().hex[:12]}")
        self.client.connect_timeout = timeout
        self.client.on_connect = guarded(self._errors, "on_connect", self._on_connect)
        self.client.on_subscribe = guarded(self._errors, "on_subscribe", self._on_subscribe)
        self.client.on_message = guarded(self._errors, "on_message", self._on_message)
        self.client.on_disconnect = guarded(self._errors, "on_disconnect", self._on_disconnect)

    def __enter__(self) -> Self:
        try:
            self.client.connect(self.config.host, self.config.port, keepalive=max(self.config.keepalive, 5))
        except OSError as exc:
            raise NoAnswer(f"no broker at {self.where}: {exc.strerror or exc}") from exc
        self.client.loop_start()
        try:
            self._wait_subscribed()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def wait(self, accept: Callable[[bytes], bool], silence: str) -> bytes:
        """The first message on the topic that ``accept`` takes; NoAnswer saying ``silence`` after the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            kind, value = self._next(deadline, silence)
            if kind == "message" and accept(value):
                return bytes(value)
            if kind == "disconnected":
                raise NoAnswer(f"the broker at {self.where} closed the connection: {value}")

    def _wait_subscribed(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            kind, value = self._next(deadline, f"no broker at {self.where}: no answer within {self.timeout:g} s")
            if kind == "subscribed":
                return
            if kind == "refused":
                raise NoAnswer(f"the broker at {self.where} refused the login of {self.login}: {value}")
            if kind == "denied":
                raise NoAnswer(f"{self.login} may not read {self.topic} (broker ACL): {value}")
            if kind == "disconnected":
                raise NoAnswer(f"the broker at {self.where} closed the connection: {value}")
            if kind == "message":  # a retained message may arrive before SUBACK: keep it for wait()
                self._events.put((kind, value))
                return

    def _next(self, deadline: float, silence: str) -> tuple[str, Any]:
        try:
            return self._events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise NoAnswer(silence) from None

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._events.put(("refused", reason_code))
        else:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        code = codes[0] if codes else None
        self._events.put(("denied" if code is None or code.is_failure else "subscribed", code))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topic:
            self._events.put(("message", bytes(message.payload)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._events.put(("disconnected", reason_code))


def request(config: MqttConfig, site: str, action: str,
            params: Mapping[str, Any] | contract.CommandParams, timeout: float = 10.0) -> contract.Reply:
    """Publish a command and return the bridge's reply to it (matched by request id).

    The params are checked by the wire contract before anything is connected or sent
    (:class:`~bridge.wire.contract.CommandError`, a one-line ProtocolError), so the operator
    hears of a bad name at once, in the same words the bridge would use.
    """
    topics = Topics(config.topic_prefix, site)
    request_id = uuid.uuid4().hex
    command = contract.encode_command(request_id, action, params)  # type: ignore[arg-type]  # checked inside

    def ours(data: bytes) -> bool:
        try:
            return contract.decode_reply(data).request_id == request_id
        except ProtocolError:
            return False

    with OneShot(config, topics.command_reply, purpose="cli", timeout=timeout) as session:
        session.publish(topics.command, command)
        answer = session.wait(ours, f"no bridge for site {site!r} answered on {topics.command} within {timeout:g} s")
    return contract.decode_reply(answer)


def fetch_retained(config: MqttConfig, topic: str, timeout: float, who: str = "the service") -> bytes:
    """The retained message on ``topic``, fetched with a throw-away clean session."""
    with OneShot(config, topic, purpose="health", timeout=timeout) as session:
        return session.wait(lambda data: True, f"no status on {topic} within {timeout:g} s: {who} has never "
                                               f"connected to the broker at {session.where}")

"""Ask the site's bridge to do something (open or close a run) and wait for its answer."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt

from bridge.config import MqttConfig
from bridge.errors import BridgeError, ProtocolError
from bridge.wire import contract
from bridge.wire.mqtt import CallbackErrors, guarded, make_client
from bridge.wire.topics import Topics


class NoAnswer(BridgeError):
    """Nobody answered: no bridge for this site is connected, or the broker is unreachable."""


def request(config: MqttConfig, site: str, action: str,
            params: Mapping[str, Any] | contract.StartRun | contract.StopRun, timeout: float = 10.0) -> contract.Reply:
    """Publish a command and return the bridge's reply to it (matched by request id).

    The params are checked by the wire contract before anything is connected or sent
    (:class:`~bridge.wire.contract.CommandError`, a one-line ProtocolError), so the operator
    hears of a bad name at once, in the same words the bridge would use.
    """
    topics = Topics(config.topic_prefix, site)
    request_id = uuid.uuid4().hex
    payload = contract.encode_command(request_id, action, params)  # type: ignore[arg-type]  # checked inside
    replies: queue.Queue[contract.Reply] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    errors = CallbackErrors()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe(topics.command_reply, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        subscribed.put(True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            reply = contract.decode_reply(bytes(message.payload))
        except ProtocolError:
            return
        if reply.request_id == request_id:
            replies.put(reply)

    client = make_client(config, f"chamber-bridge-cli-{request_id[:12]}")
    client.on_connect = guarded(errors, "on_connect", on_connect)
    client.on_subscribe = guarded(errors, "on_subscribe", on_subscribe)
    client.on_message = guarded(errors, "on_message", on_message)
    where = f"{config.host}:{config.port}"
    try:
        client.connect(config.host, config.port, keepalive=config.keepalive)
    except OSError as exc:
        raise NoAnswer(f"cannot reach the broker at {where}: {exc.strerror or exc}") from exc
    client.loop_start()
    try:
        try:
            subscribed.get(timeout=timeout)
        except queue.Empty:
            raise NoAnswer(f"the broker at {where} did not accept a subscription within {timeout:g} s") from None
        client.publish(topics.command, payload, qos=1)
        try:
            return replies.get(timeout=timeout)
        except queue.Empty:
            raise NoAnswer(f"no bridge for site {site!r} answered on {topics.command} within {timeout:g} s") from None
    finally:
        client.disconnect()
        client.loop_stop()

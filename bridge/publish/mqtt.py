"""One way to build a paho client from the config, for the bridge, the uploader and the CLI.

Every callback handed to paho goes through :func:`guarded`: an exception escaping a paho
callback silently kills its network thread while ``publish()`` keeps returning success
(RELIABILITY.md), so none may escape.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, ParamSpec

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bridge.config import MqttConfig

log = logging.getLogger("bridge.mqtt")

P = ParamSpec("P")


class CallbackErrors:
    """Counts exceptions caught in callbacks, so status and tests can see them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.last: str | None = None

    def record(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            self.last = f"{where}: {type(exc).__name__}: {exc}"


def guarded(errors: CallbackErrors, where: str, callback: Callable[P, None]) -> Callable[P, None]:
    """Wrap a paho callback so that nothing it raises reaches paho's network thread."""

    @functools.wraps(callback)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            callback(*args, **kwargs)
        except Exception as exc:
            errors.record(where, exc)
            log.exception("MQTT callback %s failed; the network thread carries on", where)

    return wrapper


def make_client(config: MqttConfig, client_id: str, *, clean_start: bool = True,
                manual_ack: bool = False) -> mqtt.Client:
    """A paho 2.x client (callback API v2) with credentials and TLS from the config."""
    protocol = MQTTProtocolVersion.MQTTv5 if config.protocol == "5" else MQTTProtocolVersion.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
        clean_session=None if protocol is MQTTProtocolVersion.MQTTv5 else clean_start,
        manual_ack=manual_ack,
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.read_password())
    if config.tls is not None:
        client.tls_set(
            ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
            certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
            keyfile=str(config.tls.key_file) if config.tls.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)  # paho's own capped backoff
    # paho's queue lives in memory only: the publisher keeps a few batches in flight and the
    # outbox holds the rest (RELIABILITY.md: 65,535 message ids at most).
    client.max_inflight_messages_set(20)
    return client


def connect_properties(config: MqttConfig, session_expiry: int | None = None) -> Any:
    """MQTT v5 CONNECT properties (a session expiry interval), or None for 3.1.1."""
    if config.protocol != "5" or session_expiry is None:
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry
    return properties


def revive_network_thread(client: mqtt.Client) -> bool:
    """Restart paho's loop thread if it died (RELIABILITY.md: it can, silently); True if it had to."""
    thread = getattr(client, "_thread", None)
    if thread is not None and thread.is_alive():
        return False
    client.loop_stop()
    client.loop_start()
    return True

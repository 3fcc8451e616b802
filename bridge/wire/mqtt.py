"""One way to build a paho client from the config, for the bridge, the uploader and the CLI.

Every callback handed to paho goes through :func:`guarded`: an exception escaping a paho
callback silently kills its network thread while ``publish()`` keeps returning success
(docs/design.md section 12), so none may escape.

paho retries a failed connection in silence (its ``on_connect_fail`` is told nothing of why), so
a wrong CA or host name looked like a broker that was merely slow. The client built here keeps
the reason of every failed attempt in its :class:`LinkState` and logs each new reason at once.
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from bridge.config import MqttConfig

log = logging.getLogger("bridge.wire.mqtt")

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


def describe_connect_error(exc: BaseException) -> str:
    """Why a connection attempt failed, in words that point at the setting to fix."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _ssl_text(exc)
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return f"TLS: the broker's certificate does not match mqtt.host ({detail})"
        return f"TLS: the broker's certificate is not trusted ({detail}); check mqtt.tls.ca_file"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {_ssl_text(exc)} (is this port a TLS listener?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _ssl_text(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc).split(" (_ssl.c:")[0]


class LinkState:
    """The last failed connection attempt of one client: counted, kept for status, logged once per reason.

    A failure with the same reason as the last logged one is not logged again, so a broker that
    stays away for hours leaves one line, not one per retry; a connection clears that memory, so
    the next outage is logged again.
    """

    def __init__(self, host: str, port: int) -> None:
        self._lock = threading.Lock()
        self.where = f"{host}:{port}"
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.connected = False
        self._logged: str | None = None

    def failed(self, exc: BaseException, *, log_it: bool = True) -> None:
        reason = describe_connect_error(exc)
        with self._lock:
            self.failures += 1
            self.last_error = reason
            self.last_error_time = time.time()
            self.connected = False
            new = log_it and reason != self._logged
            if log_it:
                self._logged = reason
        if new:
            level = logging.ERROR if isinstance(exc, ssl.SSLError) else logging.WARNING
            log.log(level, "cannot connect to the broker at %s: %s; retrying", self.where, reason)

    def succeeded(self) -> None:
        with self._lock:
            self.connected = True
            self._logged = None

    def status(self) -> dict[str, Any]:
        """For a service's status: how many attempts failed and the last reason (kept after recovery)."""
        with self._lock:
            return {"connect_failures": self.failures, "last_connect_error": self.last_error,
                    "last_connect_error_time": self.last_error_time}


class Client(mqtt.Client):
    """paho's client with a :class:`LinkState`: every attempt, first or retry, reports how it went.

    ``reconnect`` is where paho opens the socket and does the TLS handshake, for ``connect()`` and
    for its own attempts in the network thread (``connect_async``, retries) alike. A failure inside
    ``connect()`` raises to its caller, who reports it, so only the network thread's are logged here.
    """

    link: LinkState
    _in_connect = False

    def connect(self, *args: Any, **kwargs: Any) -> MQTTErrorCode:
        self._in_connect = True
        try:
            return super().connect(*args, **kwargs)
        finally:
            self._in_connect = False

    def reconnect(self) -> MQTTErrorCode:
        try:
            result = super().reconnect()
        except OSError as exc:  # ssl.SSLError, ConnectionRefusedError, socket.gaierror, timeouts...
            self.link.failed(exc, log_it=not self._in_connect)
            raise
        self.link.succeeded()
        return result


def make_client(config: MqttConfig, client_id: str, *, clean_start: bool = True,
                manual_ack: bool = False) -> Client:
    """A paho 2.x client (callback API v2) with credentials and TLS from the config.

    The TLS files are loaded here, by the same code as ``check`` (a ConfigError naming the key).
    """
    protocol = MQTTProtocolVersion.MQTTv5 if config.protocol == "5" else MQTTProtocolVersion.MQTTv311
    client = Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
        clean_session=None if protocol is MQTTProtocolVersion.MQTTv5 else clean_start,
        manual_ack=manual_ack,
    )
    client.link = LinkState(config.host, config.port)
    if config.username is not None:
        client.username_pw_set(config.username, config.read_password())
    if config.tls is not None:
        client.tls_set_context(config.tls.ssl_context())
    client.reconnect_delay_set(min_delay=1, max_delay=30)  # paho's own capped backoff
    # paho's queue lives in memory only: the publisher keeps a few batches in flight and the
    # outbox holds the rest (docs/design.md section 12: 65,535 message ids at most).
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
    """Restart paho's loop thread if it died (docs/design.md section 12: it can, silently); True if it had to."""
    thread = getattr(client, "_thread", None)
    if thread is not None and thread.is_alive():
        return False
    client.loop_stop()
    client.loop_start()
    return True

"""Publishes the outbox to MQTT in seq order and trims it only on the uploader's ack.

A PUBACK does not make a message safe (docs/design.md section 12), so the outbox keeps every entry until
the uploader acknowledges it on ``{prefix}/{site}/ack``; after a reconnect, or when acks stop
coming while entries are outstanding, publishing rewinds to the last acknowledged seq.
Duplicates that this causes are expected and removed by the uploader.

An ack deletes data, so it must be one the uploader could have sent: an ack for another epoch
or for a seq never published is refused, logged and counted (:meth:`Publisher._ack_refusal`).
Commands are checked by the wire contract (:func:`contract.decode_command`) and every one whose
request id can be read is answered, refusals included.

All work happens in one sender thread; paho's callbacks only set flags and queue messages
(a callback must never block: paho holds its locks while calling them).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from bridge.config import MqttConfig
from bridge.edge.outbox import Outbox
from bridge.errors import ProtocolError
from bridge.names import printable
from bridge.wire import contract
from bridge.wire.mqtt import CallbackErrors, connect_properties, guarded, make_client, revive_network_thread
from bridge.wire.topics import Topics

log = logging.getLogger("bridge.edge.publisher")

CommandHandler = Callable[[contract.Command], tuple[bool, str, int | None]]
StatusProvider = Callable[[], dict[str, Any]]

#: a refused ack or command is logged at most this often per reason (a flood must not fill the disk)
REFUSAL_LOG_INTERVAL = 60.0


@dataclass
class PublisherSettings:
    #: entries per data message
    batch_size: int = 500
    #: data messages published but not yet PUBACKed
    max_in_flight: int = 4
    #: with entries outstanding and no ack progress for this long, resend from the acked seq
    ack_timeout: float = 10.0
    #: each resend without progress doubles the wait, up to this: an uploader that is away for
    #: hours has its session queue at the broker filled with the outbox once, not once per 10 s
    ack_timeout_cap: float = 300.0
    #: retained status is refreshed at least this often
    status_interval: float = 5.0
    #: how long a clean shutdown waits for the uploader to acknowledge what is left
    drain_timeout: float = 3.0


class Publisher:
    def __init__(self, config: MqttConfig, site: str, outbox: Outbox, *, status: StatusProvider,
                 commands: CommandHandler, settings: PublisherSettings | None = None) -> None:
        self.config = config
        self.site = site
        self.outbox = outbox
        self.topics = Topics(config.topic_prefix, site)
        self.settings = settings or PublisherSettings()
        self._status = status
        self._commands = commands
        self.callback_errors = CallbackErrors()
        self._leaving = False
        self.loop_restarts = 0
        self.client = make_client(config, f"chamber-bridge-{site}")
        self.client.will_set(self.topics.status, self._status_payload("offline"), qos=1, retain=True)
        self.client.on_connect = guarded(self.callback_errors, "on_connect", self._on_connect)
        self.client.on_disconnect = guarded(self.callback_errors, "on_disconnect", self._on_disconnect)
        self.client.on_publish = guarded(self.callback_errors, "on_publish", self._on_publish)
        self.client.on_message = guarded(self.callback_errors, "on_message", self._on_message)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._rewind = True
        self._in_flight: dict[int, float] = {}  # mid -> when it was published (monotonic)
        self._cursor = outbox.acked_seq
        self._last_ack_progress = time.monotonic()
        self._stall_timeout = self.settings.ack_timeout
        self._stop = threading.Event()
        self._status_due = 0.0
        self._status_dirty = threading.Event()
        self._thread: threading.Thread | None = None
        self.published_batches = 0
        self.resends = 0
        #: PUBACKs with a failure reason code (MQTT v5: 0x87 not authorized...); the last one as text
        self.rejected = 0
        self.last_rejection: str | None = None
        self._rejection_logged = 0.0
        #: connections lost (not asked for), and paho's reason for the last one
        self.disconnects = 0
        self.last_disconnect: str | None = None
        #: the highest seq handed to paho by this process (see _ack_refusal)
        self._published_seq = 0
        #: acks refused (another epoch, a seq never published) and commands refused by the contract
        self.refused_acks = 0
        self.refused_commands = 0
        self._refusal_logged: dict[str, float] = {}

    # ---------------------------------------------------------- life

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive,
                                  clean_start=True, properties=connect_properties(self.config))
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Give the uploader a moment to acknowledge the rest, then say offline and disconnect."""
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.connected and self.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.connected:
            info = self.client.publish(self.topics.status, self._status_payload("offline"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                log.warning("could not publish offline status before disconnecting")
        self._leaving = True  # a disconnect we asked for is not news
        self.client.disconnect()
        self.client.loop_stop()

    def status_changed(self) -> None:
        """Publish the retained status soon (an instrument's availability changed)."""
        self._status_dirty.set()

    # ---------------------------------------------------------- paho callbacks (flags only)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.config.host, self.config.port, reason_code)
            return
        client.subscribe([(self.topics.ack, 1), (self.topics.command, 1)])
        with self._lock:
            self._rewind = True
            self._in_flight.clear()
        self._connected.set()
        self._status_dirty.set()
        log.info("connected to %s:%s", self.config.host, self.config.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if self._connected.is_set() and not self._leaving:
            self.disconnects += 1
            self.last_disconnect = str(reason_code)
            log.warning("lost the broker (%s); the outbox keeps everything", reason_code)
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            self._in_flight.pop(mid, None)
        if reason_code.is_failure:  # MQTT v5 only: under 3.1.1 a broker acknowledges and drops in silence
            self._rejected(reason_code)

    def _rejected(self, reason_code: Any) -> None:
        """The broker refused a message (ACL, quota...): say so; the entries stay in the outbox."""
        text = f"{reason_code} (0x{reason_code.value:02X})"
        self.rejected += 1
        now = time.monotonic()
        if text != self.last_rejection or now - self._rejection_logged >= 60:
            self._rejection_logged = now
            log.error("the broker refused a message: %s (%d so far); check its ACL and message size limit for "
                      "%s; the outbox keeps the data", text, self.rejected, self.topics.data)
        self.last_rejection = text

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put((message.topic, bytes(message.payload)))

    # ---------------------------------------------------------- the sender thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self._step()
            except Exception:  # the sender must survive anything one step throws
                log.exception("publisher step failed; retrying")
                busy = False
            if not busy:
                self._stop.wait(0.02)

    def _step(self) -> bool:
        self._watch_network_thread()
        self._handle_inbox()
        now = time.monotonic()
        if self._status_dirty.is_set() or now >= self._status_due:
            self._publish_status()
        if not self.connected:
            return False
        return self._publish_pending(now)

    def _publish_pending(self, now: float) -> bool:
        acked = self.outbox.acked_seq
        with self._lock:
            if self._rewind or (self._cursor > acked and now - self._last_ack_progress > self._stall_timeout):
                if not self._rewind:
                    self.resends += 1
                    log.warning("no ack for %.0f s with entries %d..%d outstanding: resending",
                                self._stall_timeout, acked + 1, self._cursor)
                    self._stall_timeout = min(self.settings.ack_timeout_cap, 2 * self._stall_timeout)
                self._cursor = acked
                self._rewind = False
                self._last_ack_progress = now
            if len(self._in_flight) >= self.settings.max_in_flight:
                self._free_lost_slots(now)
                if len(self._in_flight) >= self.settings.max_in_flight:
                    return False
            cursor = self._cursor
        entries = self.outbox.pending_stored(cursor, self.settings.batch_size)
        if not entries:
            return False
        payload = contract.encode_stored_batch(self.site, self.outbox.epoch, entries)
        # counted as published before paho answers: it may queue and send a message even when it
        # returns an error, and a real ack for it must never be refused (_ack_refusal)
        self._published_seq = max(self._published_seq, entries[-1][0])
        info = self.client.publish(self.topics.data, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False  # not connected after all: the next connect rewinds anyway
        with self._lock:
            self._in_flight[info.mid] = now
            self._cursor = entries[-1][0]
        self.published_batches += 1
        return True

    def _free_lost_slots(self, now: float) -> None:
        """With _lock held: a batch not PUBACKed within ack_timeout gives its slot back.

        PUBACKs are flow control only (the uploader's ack decides what is resent); one whose
        on_publish failed would otherwise hold its slot forever, and max_in_flight of them would
        stop publishing until the next reconnect.
        """
        lost = [mid for mid, published in self._in_flight.items() if now - published > self.settings.ack_timeout]
        for mid in lost:
            del self._in_flight[mid]
        if lost:
            log.warning("no PUBACK for %d data messages within %.0f s: their slots are free again", len(lost),
                        self.settings.ack_timeout)

    def _handle_inbox(self) -> None:
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                if topic == self.topics.ack:
                    self._handle_ack(contract.decode_ack(payload))
                elif topic == self.topics.command:
                    self._handle_command(payload)
            except ProtocolError as exc:
                self._log_refusal(f"bad message on {topic}", "ignored a bad message on %s: %s", topic,
                                  printable(exc))

    def _ack_refusal(self, ack: contract.Ack) -> tuple[str, str] | None:
        """Why ``ack`` cannot be the uploader's (a short key and one line), or None if it can be.

        The uploader acks only seqs it received, and it can only have received seqs of this
        outbox's epoch that some process of this bridge published. This process has published
        up to ``_published_seq`` (counted when handed to paho); earlier processes of the same
        epoch can only have published what they had committed, which is at most
        ``outbox.committed_at_open``. So a real ack is never above the larger of the two, even
        right after a restart, and one above it is forged or corrupt: trimming on it would delete
        entries the uploader never stored. (A forger that can read the data topic can still ack
        what was published; only the broker's ACL on the ack topic stops that, docs/security.md.)
        """
        if ack.epoch != self.outbox.epoch:
            return "epoch", (f"ack for epoch {ack.epoch} ignored: this outbox is epoch {self.outbox.epoch} "
                             f"(an uploader that remembers an older outbox, or a forged ack)")
        limit = max(self.outbox.committed_at_open, self._published_seq)
        if ack.seq > limit:
            return "beyond", (f"ack for seq {ack.seq} of epoch {ack.epoch} ignored: nothing beyond seq {limit} "
                              f"was ever published (a forged or corrupt ack)")
        return None

    def _handle_ack(self, ack: contract.Ack) -> None:
        refusal = self._ack_refusal(ack)
        if refusal is not None:
            self.refused_acks += 1
            key, text = refusal
            self._log_refusal(f"ack {key}", "%s (%d refused acks so far)", text, self.refused_acks)
            return
        before = self.outbox.acked_seq
        self.outbox.acknowledge(ack.epoch, ack.seq)
        with self._lock:
            # any ack, even one that moves nothing, says the uploader is there again (it acks on every
            # reconnect): the resend backoff for an absent uploader ends, so a hole it came back with
            # (its session expired meanwhile) is resent at once rather than after the backed-off wait
            self._stall_timeout = self.settings.ack_timeout
            if self.outbox.acked_seq > before:
                self._last_ack_progress = time.monotonic()
                self._cursor = max(self._cursor, self.outbox.acked_seq)

    def _handle_command(self, payload: bytes) -> None:
        """Decode, check and carry out a command; answer it whenever its request id can be read.

        A refusal by the contract is answered with ok=false and the reason; a failure while
        carrying it out (the outbox cannot commit) is answered too, so no requester waits in vain.
        """
        try:
            command = contract.decode_command(payload)
        except contract.CommandError as exc:
            self.refused_commands += 1
            self._log_refusal("command", "refused a command: %s (%d refused so far)", printable(exc),
                              self.refused_commands)
            if exc.request_id is not None:
                self._reply(exc.request_id, False, exc.reason, None)
            return
        try:
            ok, message, seq = self._commands(command)
        except Exception as exc:  # the requester is told; the sender thread goes on
            log.exception("command %s (%s) failed", command.request_id, command.action)
            ok, message, seq = False, f"{command.action} failed on the bridge: {exc}", None
        self._reply(command.request_id, ok, message, seq)
        self._status_dirty.set()

    def _reply(self, request_id: str, ok: bool, message: str, seq: int | None) -> None:
        self.client.publish(self.topics.command_reply,
                            contract.encode_reply(request_id, ok, printable(message, 300), seq), qos=1)

    def _log_refusal(self, key: str, message: str, *args: Any) -> None:
        """A warning, at most once per REFUSAL_LOG_INTERVAL for each ``key``: a flood of forged
        messages is counted in the status, not written line by line to the Pi's SD card."""
        now = time.monotonic()
        last = self._refusal_logged.get(key)
        if last is None or now - last >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged[key] = now
            log.warning(message, *args)

    def _watch_network_thread(self) -> None:
        """paho's loop thread can die (docs/design.md section 12); restart it rather than go quiet."""
        if revive_network_thread(self.client):
            self.loop_restarts += 1
            log.error("the MQTT network thread was gone; restarted it (restart %d)", self.loop_restarts)

    # ---------------------------------------------------------- status

    def _status_payload(self, state: str, details: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {"v": contract.SCHEMA_VERSION, "site": self.site, "state": state, "time": time.time()}
        if details is not None:
            body.update(details)
            body["publisher"] = {"callback_errors": self.callback_errors.count,
                                 "last_callback_error": self.callback_errors.last,
                                 "loop_restarts": self.loop_restarts, "resends": self.resends,
                                 "rejected": self.rejected, "last_rejection": self.last_rejection,
                                 "disconnects": self.disconnects, "last_disconnect": self.last_disconnect,
                                 "refused_commands": self.refused_commands}
        return json.dumps(body).encode()

    def _publish_status(self) -> None:
        """Retained status, and the retained run state dashboards show (the open run or none)."""
        self._status_dirty.clear()
        self._status_due = time.monotonic() + self.settings.status_interval
        if not self.connected:
            return
        details = self._status()
        self.client.publish(self.topics.status, self._status_payload("online", details), qos=1, retain=True)
        run = {"v": contract.SCHEMA_VERSION, "site": self.site, "run": details.get("run"),
               **({"auto_state": details["auto_state"]} if "auto_state" in details else {})}
        self.client.publish(self.topics.run, json.dumps(run).encode(), qos=1, retain=True)

"""``chamber-bridge upload``: subscriber -> spool -> ledger -> sink, with acks and a retained status.

Two threads do the work, so a slow sink never delays acknowledgements (and with them the
bridges' outboxes):

- **intake**: takes messages from the subscriber's queue, commits a group of them to the spool
  in one transaction, then PUBACKs them in receive order, then publishes each touched source's
  contiguous seq on ``{prefix}/{site}/ack`` (DESIGN.md section 3: commit, MQTT ack, app ack).
  While the spool is full it stops taking messages: they stay unacknowledged at the broker
  and in the bridges' outboxes.
- **delivery**: cuts chunks (the ledger's pass), initializes streams, pushes chunks in order
  and finalizes runs, recording every confirmation in the ledger; on a sink error it keeps the
  data and retries with capped, jittered backoff (honouring Retry-After).

Crash points (bridge/crashpoints.py) mark the places a crash must cost nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bridge.config import Config
from bridge.crashpoints import crash_point
from bridge.errors import BridgeError, ProtocolError
from bridge.publish import codec
from bridge.publish.topics import Topics, uploader_status
from bridge.uploader.ledger import Ledger, PendingChunk
from bridge.uploader.sinks.base import Sink, SinkError, SinkRejected
from bridge.uploader.spool import Spool, SpoolError
from bridge.uploader.subscriber import Message, Subscriber

log = logging.getLogger("bridge.uploader")


@dataclass(frozen=True, slots=True)
class UploaderSettings:
    """Timing knobs; the defaults suit a lab server, tests shorten them."""

    #: messages committed to the spool in one transaction at most
    intake_batch: int = 200
    #: seconds between retained status updates
    status_interval: float = 5.0
    #: backoff after a failed sink call: first delay and cap (seconds), full jitter
    backoff_initial: float = 1.0
    backoff_cap: float = 60.0
    #: chunks confirmed in the ledger per transaction at most
    confirm_rows: int = 100
    #: chunks pushed at once: the sink's round trips (an fsync, an HTTP request) overlap
    upload_workers: int = 4


def make_sink(config: Config) -> Sink:
    sink = config.uploader.sink
    if sink.kind == "local":
        from bridge.uploader.sinks.local import LocalSink

        return LocalSink(sink.path)
    try:
        from bridge.uploader.sinks.atomscale import AtomscaleSink
    except ImportError as exc:
        raise BridgeError(f"uploader.sink.kind atomscale needs the server extra: pip install "
                          f"'chamber-bridge[server]' ({exc})") from exc
    return AtomscaleSink(sink)


class UploaderService:
    def __init__(self, config: Config, sink: Sink | None = None, settings: UploaderSettings | None = None) -> None:
        self.config = config
        self.settings = settings or UploaderSettings()
        up = config.uploader
        up.state_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = config.mqtt.topic_prefix
        self.status_topic = uploader_status(self.prefix)
        write_lock = threading.Lock()
        self.spool = Spool(up.state_dir, max_entries=up.max_spool_entries, write_lock=write_lock)
        self.ledger = Ledger(up.state_dir, points_per_chunk=up.points_per_chunk, keep_idle=up.keep_idle,
                             grace=up.finalize_grace, write_lock=write_lock)
        self.sink = sink if sink is not None else make_sink(config)
        self.subscriber = Subscriber(
            config.mqtt, up.client_id, [f"{self.prefix}/+/data", f"{self.prefix}/+/status"],
            session_expiry=up.session_expiry, will=(self.status_topic, self._status_json("offline")))
        self.subscriber.on_connected.append(self._resend_acks)
        self._pool = ThreadPoolExecutor(self.settings.upload_workers, thread_name_prefix="uploader-push")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acked: dict[tuple[str, str], int] = {}
        self._clock: dict[str, dict[str, Any]] = {}
        #: the last failure to write the spool (disk full, I/O error); None once an intake commit succeeds
        self.spool_error: str | None = None
        self.bad_messages = 0
        self.last_bad_message: str | None = None
        self.last_upload_error: str | None = None
        self.sink_alarm = False
        self.epoch_changes: list[dict[str, Any]] = []
        self.finalized: list[str] = []
        self.chunks_confirmed = 0
        #: the status as last published (for a display that must not query the databases itself)
        self.last_status: dict[str, Any] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for source in self.ledger.sources():
            self._acked[(source.site, source.epoch)] = source.contiguous
        self.subscriber.start()
        for name, target in (("intake", self._intake_loop), ("delivery", self._delivery_loop)):
            thread = threading.Thread(target=self._guarded_loop, args=(name, target), name=f"uploader-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("uploader subscribed to %s/+/data; sink %s", self.prefix, self.sink.kind)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.subscriber.stop(last_words=(self.status_topic, self._status_json("offline")))
        self._pool.shutdown()
        self.sink.close()
        self.ledger.close()
        self.spool.close()

    def _guarded_loop(self, name: str, loop: Callable[[], None]) -> None:
        """A worker that survives anything one step throws: it logs, waits and goes on."""
        while not self._stop.is_set():
            try:
                loop()
            except SpoolError as exc:  # disk full, I/O error: nothing unwritten is acknowledged
                self.spool_error = str(exc)
                log.error("uploader %s: %s; nothing is acknowledged until the spool takes writes again; "
                          "retrying in 1 s", name, exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("uploader %s step failed; retrying in 1 s", name)
                self._stop.wait(1.0)

    # ------------------------------------------------------------ intake

    def _intake_loop(self) -> None:
        while not self._stop.is_set():
            self.subscriber.watch()
            try:
                first = self.subscriber.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            messages = [first]
            while len(messages) < self.settings.intake_batch:
                try:
                    messages.append(self.subscriber.inbox.get_nowait())
                except queue.Empty:
                    break
            self._take(messages)

    def _take(self, messages: list[Message]) -> None:
        while self.spool.full and self.spool.refresh_held() >= self.spool.max_entries and not self._stop.is_set():
            log.error("spool full (%d entries): intake paused; nothing is acknowledged until it drains",
                      self.spool.held)
            self._stop.wait(1.0)
        if self._stop.is_set():
            return  # not acked: the broker redelivers them to the next session
        batches = []
        for message in messages:
            if message.topic.endswith("/status"):
                self._note_bridge_status(message)
                continue
            try:
                batches.append(codec.decode_batch(message.payload))
            except ProtocolError as exc:
                # acked at the MQTT level (it will never decode) but not covered by an app ack:
                # the entries stay in the bridge's outbox
                self.bad_messages += 1
                self.last_bad_message = f"{message.topic}: {exc}"
                log.error("refused a message on %s: %s", message.topic, exc)
        intake = self.spool.commit(batches)
        self.spool_error = None
        crash_point("spool.after_commit")
        for message in messages:
            self.subscriber.ack(message)
        crash_point("spool.after_ack")
        for site, epoch in intake.new_sources:
            self._note_new_epoch(site, epoch)
        for (site, epoch), contiguous in intake.contiguous.items():
            self._ack(site, epoch, contiguous)
        if intake.stored:
            self._wake.set()

    def _ack(self, site: str, epoch: str, contiguous: int) -> None:
        with self._lock:
            self._acked[(site, epoch)] = contiguous
        self._publish_ack(site, epoch, contiguous)

    def _publish_ack(self, site: str, epoch: str, seq: int) -> None:
        """QoS0: an ack is cumulative and the next one supersedes a lost one (and every reconnect repeats
        them). At QoS1 it waited for a PUBACK queued behind the data backlog on the same connection: with
        paho's 20 in flight, acks fell minutes behind on a slow link and the bridges resent their backlog."""
        self.subscriber.publish(Topics(self.prefix, site).ack, codec.encode_ack(epoch, seq), qos=0)

    def _resend_acks(self) -> None:
        """After a (re)connect, tell every bridge where it stands (an ack may have been lost with the link)."""
        with self._lock:
            acked = dict(self._acked)
        for (site, epoch), seq in acked.items():
            self._publish_ack(site, epoch, seq)

    def _note_bridge_status(self, message: Message) -> None:
        site = message.topic[len(self.prefix) + 1:-len("/status")]
        try:
            status = json.loads(message.payload)
            clock = status.get("clock")
        except (ValueError, AttributeError):
            return
        if isinstance(clock, dict):
            with self._lock:
                self._clock[site] = clock

    def _note_new_epoch(self, site: str, epoch: str) -> None:
        older = [e for e in self.spool.epochs(site) if e != epoch]
        if older:
            change = {"site": site, "epoch": epoch, "previous": older[-1], "time": time.time()}
            self.epoch_changes.append(change)
            log.warning("%s: new outbox epoch %s (was %s): the bridge's outbox was replaced (new SD card?); "
                        "its seqs start again", site, epoch, older[-1])

    # ------------------------------------------------------------ delivery

    def _delivery_loop(self) -> None:
        failures = 0
        next_status = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_status:
                self._publish_status()
                next_status = time.monotonic() + self.settings.status_interval
            progress = self.ledger.advance()
            for (site, epoch), contiguous in progress.skipped.items():
                self._ack(site, epoch, contiguous)
            try:
                busy = self._deliver()
            except SinkError as exc:
                failures += 1
                self.last_upload_error = f"{type(exc).__name__}: {exc}"
                self.sink_alarm = isinstance(exc, SinkRejected)
                delay = self._backoff(failures, exc.retry_after)
                (log.error if self.sink_alarm else log.warning)(
                    "upload to the %s sink failed (%s); data kept, retrying in %.1f s", self.sink.kind, exc, delay)
                self._stop.wait(delay)
                continue
            if failures:
                log.info("uploads to the %s sink succeed again after %d failed attempts", self.sink.kind, failures)
                failures = 0
                self.sink_alarm = False
            if not busy and not progress.entries:
                self._wake.wait(0.2)
                self._wake.clear()

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        s = self.settings
        delay = random.uniform(0, min(s.backoff_cap, s.backoff_initial * 2 ** min(failures - 1, 30)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _deliver(self) -> bool:
        """One round: initialize new streams, push pending chunks, finalize finished runs. True if it did anything."""
        busy = False
        for stream in self.ledger.streams_to_initialize():
            data_id = self.sink.initialize(stream)
            self.ledger.set_data_id(stream.run_id, data_id)
            log.info("run %s (%s): stream %s initialized", stream.run_id, stream.stream_name, data_id)
            busy = True
        pending = self.ledger.pending_chunks()
        failure: SinkError | None = None
        for start in range(0, len(pending), self.settings.confirm_rows):
            group = pending[start:start + self.settings.confirm_rows]
            # once a push fails, the rest of the group is not sent: the target is down or asked for
            # a pause (Retry-After), and the service's backoff decides when to knock again
            halt = threading.Event()
            outcomes = list(self._pool.map(self._push, group, self.ledger.chunks(group), itertools.repeat(halt)))
            confirmed = [chunk for chunk, outcome in zip(group, outcomes, strict=True) if outcome is None]
            self.ledger.confirm(confirmed)
            self.chunks_confirmed += len(confirmed)
            failures = [(chunk, outcome) for chunk, outcome in zip(group, outcomes, strict=True)
                        if isinstance(outcome, SinkError)]
            if failures:
                for chunk, _ in failures:
                    self.ledger.count_retry(chunk.run_id)
                failure = failures[0][1]
                break
        if failure is not None:
            raise failure
        busy = busy or bool(pending)
        for run_id in self.ledger.runs_to_finalize():
            with self._lock:
                clock = self._clock.get(self.ledger.site_of(run_id), {})
            manifest = self.ledger.begin_finalize(run_id, {"ntp_synchronized": clock.get("ntp_synchronized")})
            crash_point("finalize.before_sink")
            self.sink.finalize(manifest["data_id"], manifest)
            crash_point("finalize.after_sink")
            self.ledger.end_finalize(run_id)
            self.finalized.append(run_id)
            report = manifest["report"]
            log.info("run %s (%s) finalized: %d readings (%d bad quality), %d chunks, %d retries, %s",
                     run_id, manifest["stream_name"], report["readings"], report["bad_quality"], report["chunks"],
                     report["retries"], "complete" if report["complete"] else f"{len(manifest['gaps'])} gaps")
            busy = True
        return busy

    def _push(self, chunk: PendingChunk, body: dict[str, Any], halt: threading.Event) -> SinkError | bool | None:
        """Push one chunk (in a pool thread): None once the sink confirmed it, the error if it failed,
        False if it was not sent because another push of its group failed (``halt``)."""
        if halt.is_set():
            return False
        crash_point("upload.before_push")
        try:
            self.sink.push_chunk(chunk.data_id, chunk.flow, body)
        except SinkError as exc:
            halt.set()
            return exc
        crash_point("upload.after_push")
        return None

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        sources = self.ledger.sources()
        return {
            "spool": {
                "depth": self.ledger.held(), "alarm": self.spool.full, "error": self.spool_error,
                "sources": [{"site": s.site, "epoch": s.epoch, "contiguous": s.contiguous, "max_seq": s.max_seq,
                             "missing": self.ledger.missing(s), "open_run": s.open_run} for s in sources],
                "epoch_changes": self.epoch_changes[-10:],
                "bad_messages": self.bad_messages, "last_bad_message": self.last_bad_message,
            },
            "runs_open": self.ledger.open_runs(),
            "sinks": {self.sink.kind: {"backlog": self.ledger.backlog(), "alarm": self.sink_alarm,
                                       "last_error": self.last_upload_error}},
            "last_upload_error": self.last_upload_error,
            "finalized": len(self.finalized),
            "mqtt": {"connected": self.subscriber.connected.is_set(),
                     "callback_errors": self.subscriber.callback_errors.count,
                     "loop_restarts": self.subscriber.loop_restarts},
        }

    def _status_json(self, state: str, details: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {"v": codec.SCHEMA_VERSION, "state": state, "time": time.time()}
        if details is not None:
            body.update(details)
        return json.dumps(body).encode()

    def _publish_status(self) -> None:
        self.last_status = self.status()
        if self.subscriber.connected.is_set():
            self.subscriber.publish(self.status_topic, self._status_json("online", self.last_status), retain=True)

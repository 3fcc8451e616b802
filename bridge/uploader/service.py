"""``chamber-bridge upload``: subscriber -> spool -> ledger -> sink, with acks and a retained status.

Two threads do the work, so a slow sink never delays acknowledgements (and with them the
bridges' outboxes):

- **intake**: takes messages from the subscriber's queue, commits a group of them to the spool
  in one transaction, then PUBACKs them in receive order, then publishes each touched source's
  contiguous seq on ``{prefix}/{site}/ack`` (docs/design.md section 3: commit, MQTT ack, app ack).
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
from bridge.errors import BridgeError
from bridge.names import check_site, printable
from bridge.uploader.ledger import Ledger, PendingChunk
from bridge.uploader.quarantine import BadInput, bad_input
from bridge.uploader.sinks.base import RunRejected, Sink, SinkError, SinkRejected
from bridge.uploader.spool import Intake, Spool, SpoolError
from bridge.uploader.subscriber import Message, Subscriber
from bridge.wire import contract
from bridge.wire.topics import Topics, site_level, uploader_status

log = logging.getLogger("bridge.uploader")

def _affects_the_target(exc: BaseException) -> bool:
    """Whether a sink error is the target's as a whole (down, overloaded, our key refused), not one run's.

    Those pause every run (the service's backoff); anything else (a 4xx about this run's data,
    a bug met by one run's chunks) sets that run aside alone (docs/security.md).
    """
    if not isinstance(exc, SinkError):
        return False
    if not isinstance(exc, SinkRejected):
        return True  # SinkUnavailable: network, 5xx, 429...
    if isinstance(exc, RunRejected):
        return False
    return exc.status is None or exc.status in (401, 403, 407)


def _repack(entry: Any) -> bytes:
    """A refused entry as msgpack again, for its quarantined copy."""
    try:
        return contract.pack(entry)
    except (TypeError, ValueError, OverflowError):
        return printable(repr(entry), 4096).encode()


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
    #: a run whose delivery failed for a reason of its own is tried again after this (doubling, up to 1 h)
    run_retry_initial: float = 30.0
    #: seconds ``stop()`` takes at most (SIGTERM: systemd and Docker kill after 10 s), and of them
    #: the grace a push in flight gets to finish before the sink aborts it
    stop_timeout: float = 8.0
    stop_grace: float = 1.0


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
                             grace=up.finalize_grace, write_lock=write_lock,
                             retry_first=self.settings.run_retry_initial)
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
        self._status_at = time.monotonic()
        self._status_lock = threading.Lock()
        for name, target in (("intake", self._intake_loop), ("delivery", self._delivery_loop),
                             ("status", self._status_loop)):
            thread = threading.Thread(target=self._guarded_loop, args=(name, target), name=f"uploader-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("uploader subscribed to %s/+/data; sink %s", self.prefix, self.sink.kind)

    def stop(self) -> None:
        """Stop within ``stop_timeout`` seconds, whatever the sink is doing.

        The workers get ``stop_grace`` to finish; then the sink is closed, which aborts any
        request still in flight (an endpoint dripping its answer) so the push returns at once, and
        the workers are waited for until the bound. One that still runs (a name lookup that hangs)
        is left behind with the databases open under it rather than closed under its feet: what is
        unconfirmed stays in the spool either way, and SQLite keeps the files consistent."""
        until = time.monotonic() + self.settings.stop_timeout
        self._stop.set()
        self._wake.set()
        self._join(min(until, time.monotonic() + self.settings.stop_grace))
        self.sink.close()
        left = self._join(until - 2.5)  # the offline status below waits up to 2 s for its PUBACK
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.subscriber.stop(last_words=(self.status_topic, self._status_json("offline")))
        if left:
            log.warning("uploader stopped with %s still running; the spool keeps what it holds",
                        ", ".join(t.name for t in left))
            return
        self.ledger.close()
        self.spool.close()

    def _join(self, until: float) -> list[threading.Thread]:
        """Wait for the worker threads until ``until`` (monotonic); return those still running."""
        for thread in self._threads:
            thread.join(timeout=max(0.0, until - time.monotonic()))
        return [thread for thread in self._threads if thread.is_alive()]

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
        batches: list[contract.Batch] = []
        bad: list[BadInput] = []
        for message in messages:
            if message.topic.endswith("/status"):
                self._note_bridge_status(message, bad)
                continue
            batch = self._decode(message, bad)
            if batch is not None:
                batches.append(batch)
        intake = self._commit(batches, bad)
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

    def _decode(self, message: Message, bad: list[BadInput]) -> contract.Batch | None:
        """The message's batch, checked against the wire contract; None (and a quarantine record) if refused.

        A refused message is still PUBACKed with its group: held back it would come again after
        every reconnect and fill the broker's in-flight window, starving every other site.
        """
        site = message.topic
        try:
            site = site_level(message.topic, self.prefix, "data")
            check_site(site)
            batch = contract.decode_batch(message.payload, site)
        except contract.BadMessage as exc:
            bad.append(bad_input(message.topic, site, exc.reason, str(exc), message.payload))
            return None
        except ValueError as exc:  # the topic's site level is not a valid site name
            bad.append(bad_input(message.topic, site, "bad_site", str(exc), message.payload))
            return None
        except Exception as exc:  # nothing one message holds may stop the intake
            bad.append(bad_input(message.topic, site, "undecodable", f"{type(exc).__name__}: {exc}", message.payload))
            return None
        for refused in batch.refused:
            bad.append(bad_input(message.topic, site, refused.reason, refused.detail, _repack(refused.entry)))
        return batch

    def _commit(self, batches: list[contract.Batch], bad: list[BadInput]) -> Intake:
        """One transaction for the group; if the data (not the disk) makes it fail, one per batch.

        A batch that SQLite itself refuses (a value the contract let through but the database
        cannot hold) is quarantined; the rest of the group is stored as usual.
        """
        try:
            return self.spool.commit(batches, bad=bad)
        except SpoolError as exc:
            if not exc.data_error:
                raise
            log.error("the spool refused a group of %d messages (%s); storing them one by one", len(batches), exc)
        total = Intake()
        for batch in batches:
            try:
                one = self.spool.commit([batch])
            except SpoolError as exc:
                if not exc.data_error:
                    raise
                bad.append(bad_input(f"{self.prefix}/{batch.site}/data", batch.site, "spool_refused", str(exc),
                                     b""))
                continue
            total.contiguous.update(one.contiguous)
            total.stored += one.stored
            total.duplicates += one.duplicates
            total.new_sources.extend(one.new_sources)
        self.spool.commit([], bad=bad)
        return total

    def _ack(self, site: str, epoch: str, contiguous: int) -> None:
        with self._lock:
            self._acked[(site, epoch)] = contiguous
        self._publish_ack(site, epoch, contiguous)

    def _publish_ack(self, site: str, epoch: str, seq: int) -> None:
        """QoS0: an ack is cumulative and the next one supersedes a lost one (and every reconnect repeats
        them). At QoS1 it waited for a PUBACK queued behind the data backlog on the same connection: with
        paho's 20 in flight, acks fell minutes behind on a slow link and the bridges resent their backlog."""
        self.subscriber.publish(Topics(self.prefix, site).ack, contract.encode_ack(epoch, seq), qos=0)

    def _resend_acks(self) -> None:
        """After a (re)connect, tell every bridge where it stands (an ack may have been lost with the link)."""
        with self._lock:
            acked = dict(self._acked)
        for (site, epoch), seq in acked.items():
            self._publish_ack(site, epoch, seq)

    def _note_bridge_status(self, message: Message, bad: list[BadInput]) -> None:
        """Keep a bridge's clock-sync state from its retained status (for the runs' reports)."""
        if message.topic == self.status_topic:
            return  # our own retained status, matched by {prefix}/+/status
        site = message.topic
        try:
            site = check_site(site_level(message.topic, self.prefix, "status"))
            status = contract.decode_status(message.payload, f"status of {site}")
        except contract.BadMessage as exc:
            bad.append(bad_input(message.topic, site, exc.reason, str(exc), message.payload))
            return
        except ValueError as exc:  # the topic's site level is not a valid site name
            bad.append(bad_input(message.topic, site, "bad_site", str(exc), message.payload))
            return
        with self._lock:
            self._clock[site] = {"ntp_synchronized": contract.ntp_synchronized(status)}

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
            try:
                data_id = self.sink.initialize(stream)
            except Exception as exc:
                self._run_failed(stream.run_id, exc)
                continue
            self.ledger.set_data_id(stream.run_id, data_id)
            log.info("run %s (%s): stream %s initialized", stream.run_id, printable(stream.stream_name, 200), data_id)
            busy = True
        pending = self.ledger.pending_chunks()
        failure: SinkError | None = None
        for start in range(0, len(pending), self.settings.confirm_rows):
            group = pending[start:start + self.settings.confirm_rows]
            # once a push fails, the rest of the group is not sent: the target is down or asked for
            # a pause (Retry-After), and the service's backoff decides when to knock again
            halt = threading.Event()
            outcomes = list(self._pool.map(self._push, group, self._bodies(group), itertools.repeat(halt)))
            confirmed = [chunk for chunk, outcome in zip(group, outcomes, strict=True) if outcome is None]
            self.ledger.confirm(confirmed)
            self.chunks_confirmed += len(confirmed)
            failures = [(chunk, outcome) for chunk, outcome in zip(group, outcomes, strict=True)
                        if isinstance(outcome, Exception)]
            for chunk, outcome in failures:
                if _affects_the_target(outcome):
                    self.ledger.count_retry(chunk.run_id)
                    failure = failure or outcome  # type: ignore[assignment]  # _affects_the_target: a SinkError
                else:
                    self._run_failed(chunk.run_id, outcome)
            if failure is not None:
                break
        if failure is not None:
            raise failure
        busy = busy or bool(pending)
        for run_id in self.ledger.runs_to_finalize():
            try:
                self._finalize(run_id)
            except Exception as exc:
                self._run_failed(run_id, exc)
            busy = True
        return busy

    def _finalize(self, run_id: str) -> None:
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
                 run_id, printable(manifest["stream_name"], 200), report["readings"], report["bad_quality"],
                 report["chunks"], report["retries"],
                 "complete" if report["complete"] else f"{len(manifest['gaps'])} gaps")

    def _bodies(self, group: list[PendingChunk]) -> list[dict[str, Any] | Exception]:
        """The chunks' bodies; if building them fails, each on its own, so one bad run fails alone."""
        try:
            return list(self.ledger.chunks(group))
        except SpoolError:
            raise
        except Exception:
            pass
        bodies: list[dict[str, Any] | Exception] = []
        for chunk in group:
            try:
                bodies.append(self.ledger.chunk(chunk))
            except SpoolError:
                raise
            except Exception as exc:
                bodies.append(exc)
        return bodies

    def _run_failed(self, run_id: str, exc: Exception) -> None:
        """One run's delivery failed for a reason of its own: set it aside; every other run goes on."""
        if isinstance(exc, SpoolError):
            raise exc
        if _affects_the_target(exc):
            raise exc  # the target is down or refuses us all: the service's backoff, for every run
        reason = f"{type(exc).__name__}: {exc}"
        self.last_upload_error = printable(f"run {run_id}: {reason}", 500)
        if not isinstance(exc, SinkError):
            log.error("run %s: unexpected failure while delivering it", run_id, exc_info=exc)
        self.ledger.fail_run(run_id, reason)

    def _push(self, chunk: PendingChunk, body: dict[str, Any] | Exception,
              halt: threading.Event) -> Exception | bool | None:
        """Push one chunk (in a pool thread): None once the sink confirmed it, the error if it failed,
        False if it was not sent because another push of its group failed (``halt``)."""
        if isinstance(body, Exception):
            return body
        if halt.is_set():
            return False
        crash_point("upload.before_push")
        try:
            self.sink.push_chunk(chunk.data_id, chunk.flow, body)
        except Exception as exc:
            if _affects_the_target(exc):
                halt.set()
            return exc
        crash_point("upload.after_push")
        return None

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        sources = self.ledger.sources()
        bad = self.ledger.bad_counts()
        last_bad = self.ledger.quarantined(1)
        failed_runs = self.ledger.failed_runs()
        return {
            "spool": {
                "depth": self.ledger.held(), "alarm": self.spool.full, "error": self.spool_error,
                "sources": [{"site": s.site, "epoch": s.epoch, "contiguous": s.contiguous, "max_seq": s.max_seq,
                             "missing": self.ledger.missing(s), "open_run": s.open_run} for s in sources],
                "epoch_changes": self.epoch_changes[-10:],
                "bad_messages": sum(n for reasons in bad.values() for n in reasons.values()),
                "last_bad_message": last_bad[0]["detail"] if last_bad else None,
            },
            "bad_messages": bad,
            "runs_failed": failed_runs,
            "sources_failed": [{"site": site, "epoch": epoch, "reason": f.reason, "since": f.since,
                                "failures": f.failures} for (site, epoch), f in self.ledger.failed_sources.items()],
            "runs_open": self.ledger.open_runs(),
            "sinks": {self.sink.kind: {"backlog": self.ledger.backlog(), "alarm": self.sink_alarm,
                                       "last_error": self.last_upload_error, **self._sink_warning()}},
            "last_upload_error": self.last_upload_error,
            "finalized": len(self.finalized),
            "mqtt": {"connected": self.subscriber.connected.is_set(),
                     "callback_errors": self.subscriber.callback_errors.count,
                     "loop_restarts": self.subscriber.loop_restarts, **self.subscriber.client.link.status()},
        }

    def _status_json(self, state: str, details: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {"v": contract.SCHEMA_VERSION, "state": state, "time": time.time()}
        if details is not None:
            body.update(details)
        return json.dumps(body).encode()

    def _publish_status(self) -> None:
        status = self.status()
        with self._status_lock:
            self.last_status = status
            if self.subscriber.connected.is_set():
                self.subscriber.publish(self.status_topic, self._status_json("online", status), retain=True)
            self._status_at = time.monotonic()

    def _sink_warning(self) -> dict[str, str]:
        """``{"warning": ...}`` while the sink reports a standing condition (a plain-http endpoint), else nothing."""
        warning = getattr(self.sink, "warning", None)
        return {"warning": warning} if isinstance(warning, str) and warning else {}

    def _status_loop(self) -> None:
        """Keep the retained status fresh while the delivery thread is held up in a slow sink call.

        The delivery thread builds the status (it alone reads the ledger). When its last one is
        older than one and a half intervals, this republishes it with the time and the live fields
        (the sink's alarm and error, MQTT) brought up to date, and ``delivery_busy_s``: how long the
        delivery thread has been in its current step, so how old the ledger's figures are."""
        interval = self.settings.status_interval
        while not self._stop.wait(interval / 2):
            with self._status_lock:
                busy = time.monotonic() - self._status_at
                if busy < interval * 1.5 or not self.last_status or not self.subscriber.connected.is_set():
                    continue
                status = dict(self.last_status)
                status["sinks"] = {kind: {**sink, "alarm": self.sink_alarm, "last_error": self.last_upload_error,
                                          **self._sink_warning()}
                                   for kind, sink in status.get("sinks", {}).items()}
                status["last_upload_error"] = self.last_upload_error
                status["mqtt"] = {"connected": True, "callback_errors": self.subscriber.callback_errors.count,
                                  "loop_restarts": self.subscriber.loop_restarts,
                                  **self.subscriber.client.link.status()}
                status["delivery_busy_s"] = round(busy, 1)
                self.subscriber.publish(self.status_topic, self._status_json("online", status), retain=True)

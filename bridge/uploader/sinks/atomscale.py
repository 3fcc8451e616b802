"""The Atomscale API sink: the project's own HTTP client for Atomscale timeseries streams.

Why not the official SDK (``atomscale`` 0.21.10, ``TimeseriesStreamer``): its ``push`` is
fire-and-forget, a chunk that fails three quick attempts (about 1.5 s) is dropped with a log
line, and ``finalize`` can reach the server before the chunks do. The uploader needs a
confirmation per chunk before it marks it done in its ledger, so it talks HTTP itself and keeps
the SDK as the reference for the wire contract: for the same inputs this sink sends the same
requests (method, path, JSON keys, ``X-API-KEY``), which ``tests/system/test_atomscale_contract.py``
checks by running both against the emulator in :mod:`simulators.services.atomscale`.

``initialize`` follows the SDK's sequence (docs/design.md section 5): ``GET /gateway/time`` (no key;
before the first initialize and then at most every 5 minutes, as the SDK's clock samples;
skipped when ``ATOMSCALE_SKIP_CLOCK_SYNC`` is set, as the SDK does), resolve or create the
physical sample and each tag by name, ``POST /tool-state/stream/initialize``, then link the sample
(and the project's tracking sample) and the tags. The SDK runs the sample and tag look-ups
concurrently and the two link groups concurrently; this sink runs them one after another in one
of the orders the SDK may produce. Where the SDK corrects every timestamp by the measured offset
to AtomCloud's clock, this sink sends the bridge's timestamps unchanged: they were read on the
bridge, not here, so the uploader's offset does not apply to them, and a retried chunk must stay
byte-identical to the spooled one. The offset is measured anyway and kept in :attr:`clock`.

Failures (the uploader keeps every chunk in its spool until a call here returns):

- network errors, timeouts, 5xx, 408, 409, 425 and 429 are retried inside the call with capped
  exponential backoff and full jitter (``Retry-After`` honoured, seconds or an HTTP date) for at
  most ``call_budget`` seconds, then raise :class:`SinkUnavailable` (with ``retry_after`` when
  the server named one), and the uploader's worker tries again later;
- 401/403: the API key is read again (``AtomscaleSinkConfig.read_api_key``) and, if it changed
  (rotated), the request is repeated at once with the new key; otherwise, and for every other
  4xx, :class:`SinkRejected` is raised and an alarm line logged naming the status and path;
- a certificate that fails verification is a :class:`SinkRejected` too (an alarm naming the
  endpoint and OpenSSL's reason): it does not clear on its own, a person must install the right
  CA (``uploader.sink.ca_file``) or fix the endpoint, and nothing is sent meanwhile.

Every exchange is bounded (:mod:`bridge.uploader.sinks.bounded_http`): connect, send and receive
end by ``deadline`` seconds together, however slowly a server drips its answer, and at most
``max_body`` bytes of an answer are read (a 2xx answer past it is a :class:`SinkUnavailable`
naming the cap). :meth:`AtomscaleSink.close` aborts the exchanges in flight at once, so the
uploader stops promptly whatever the endpoint does.

The endpoint is ``https://`` unless the config sets ``allow_insecure_http`` (the emulator in
tests); then :attr:`AtomscaleSink.warning` says so and the uploader's status carries it.

The API key never appears in a log line or an exception message: it is only ever put in the
``X-API-KEY`` header, and any text taken from a response is scrubbed of it.

Every call is safe to repeat: chunk pushes and finalize are idempotent on the server (a chunk
lands at its (data_id, channel, chunk_index)), and ``initialize`` remembers the stream it created
per ``run_id`` (until it is finalized), so a repeat after a failed link step finishes linking that
stream rather than creating another. (An ``initialize`` POST whose answer is lost, or a crash
before the ledger records the data_id, can still leave an empty stream behind on the server: the
API has no idempotency key to prevent it.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from bridge import __version__
from bridge.config import AtomscaleSinkConfig
from bridge.errors import ConfigError
from bridge.uploader.chunker import numeric_body
from bridge.uploader.sinks.base import ChunkBody, SinkError, SinkRejected, SinkUnavailable, StreamInfo
from bridge.uploader.sinks.bounded_http import (
    DEFAULT_MAX_BODY,
    BoundedClient,
    aborted,
    deadline_passed,
    format_size,
    tls_verification_failure,
)

log = logging.getLogger("bridge.uploader.sinks.atomscale")

KEY_HEADER = "X-API-KEY"
#: what the SDK reads to switch its clock measurement off; this sink honours it the same way
SKIP_CLOCK_SYNC_ENV = "ATOMSCALE_SKIP_CLOCK_SYNC"
#: 4xx statuses that clear on their own (base.SinkUnavailable); every other 4xx is a rejection
TRANSIENT_4XX = frozenset({408, 409, 425, 429})
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DETAIL_CHARS = 200
#: how often the clock is measured again (the SDK's steady sampling interval)
CLOCK_INTERVAL = 300.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _ascii_fold(text: str) -> str:
    """Lower-case ASCII letters only: the SDK's ``eq_ignore_ascii_case``."""
    return text.encode("utf-8").lower().decode("utf-8")


def _clean_tags(tags: tuple[str, ...]) -> list[str]:
    """Trim, drop empty ones, dedupe ASCII case-insensitively keeping the first spelling (as the SDK)."""
    seen: set[str] = set()
    cleaned: list[str] = []
    for raw in tags:
        tag = raw.strip()
        if tag and _ascii_fold(tag) not in seen:
            seen.add(_ascii_fold(tag))
            cleaned.append(tag)
    return cleaned


def _synth_source_id(value: str | None) -> int | None:
    """The SDK sends the growth instrument id as an integer."""
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise SinkRejected(f"synth_source_id must be an integer (the instrument id), not {value!r}") from None


@dataclass(frozen=True, slots=True)
class ClockCheck:
    """One measurement of this machine's clock against AtomCloud's (``GET /gateway/time``)."""

    #: reference UTC minus this machine's clock
    offset_ms: float
    #: bound on the error: half the round trip
    uncertainty_ms: float
    measured_at_unix_ms: float


@dataclass(slots=True)
class _Links:
    """What a created stream is linked to, resolved before it is created (as the SDK does)."""

    physical_sample_id: str | None
    project_id: str | None
    tag_ids: list[str]


@dataclass(slots=True)
class _Created:
    data_id: str
    links: _Links
    linked: bool = False


class AtomscaleSink:
    """:class:`~bridge.uploader.sinks.base.Sink` for the Atomscale API (``uploader.sink.kind: atomscale``)."""

    kind = "atomscale"

    def __init__(
        self,
        config: AtomscaleSinkConfig,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        call_budget: float = 20.0,
        backoff_initial: float = 0.5,
        backoff_cap: float = 8.0,
        backoff_floor: float = 0.05,
        deadline: float = 30.0,
        max_body: int = DEFAULT_MAX_BODY,
        rng: random.Random | None = None,
    ) -> None:
        """``call_budget``: seconds one call keeps retrying transient failures before it raises
        :class:`SinkUnavailable`; the delay before retry n is uniform in
        ``[backoff_floor, min(backoff_cap, backoff_initial * 2**n)]`` (full jitter; the floor
        keeps an unlucky draw from turning into a burst of requests). ``timeout`` bounds each
        socket operation, ``deadline`` one whole exchange (so one call takes at most about
        ``call_budget + deadline``); ``max_body``: bytes of an answer read at most."""
        self.config = config
        self.endpoint = config.endpoint.rstrip("/")
        self.call_budget = call_budget
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self.backoff_floor = backoff_floor
        self._rng = rng or random.Random()
        self.deadline = deadline
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._client = BoundedClient(timeout=self._timeout, verify=config.ssl_context() or True, max_body=max_body,
                                     headers={"User-Agent": f"chamber-bridge/{__version__}"})
        #: a standing condition an operator should know of (plain http), for the uploader's status
        self.warning: str | None = None
        if self.endpoint.startswith("http://"):
            self.warning = (f"endpoint {self.endpoint} is plain http (allow_insecure_http): "
                            f"the API key travels in clear text")
            log.warning("atomscale sink: %s", self.warning)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._key: str | None = None
        #: every key value read so far, scrubbed from any text that reaches a log or an exception
        self._secrets: set[str] = set()
        self._created: dict[str, _Created] = {}
        #: the last measurement of this machine's clock against AtomCloud's, if any succeeded
        self.clock: ClockCheck | None = None
        self._clock_tried_at: float | None = None
        #: retries done by all calls so far (for the completeness report)
        self.retries = 0

    # ------------------------------------------------------------------ Sink

    def initialize(self, stream: StreamInfo) -> str:
        """Create the stream and link it, in the SDK's order; return its data_id."""
        with self._lock:
            created = self._created.get(stream.run_id)
        try:
            if created is None:
                created = self._create(stream)
            if not created.linked:
                self._link(stream, created)
        except SinkRejected as exc:
            self._alarm(exc)
            raise
        return created.data_id

    def push_chunk(self, data_id: str, flow: str, body: ChunkBody) -> None:
        """``POST /tool-state/stream/chunk/multi`` with the numbers of ``body``; returns once the server
        answered 2xx.

        The API holds numbers and no quality: only ok values it can hold go (:func:`numeric_body`;
        the run's manifest counts what was left out: ``bad_quality``, ``not_numeric``)."""
        if body.get("data_id") != data_id:
            raise ValueError(f"chunk body names data_id {body.get('data_id')!r}, not {data_id!r}")
        if not isinstance(body.get("channels"), Mapping):
            raise ValueError("chunk body has no channels")
        body, _ = numeric_body(body)
        channels = body["channels"]
        # The SDK leaves out a channel with no points (the server rejects an empty one) and sends
        # nothing for a chunk without any; the chunker already does so, this keeps it true.
        kept = {name: ch for name, ch in channels.items() if ch.get("timestamps")}
        if not kept:
            return
        if len(kept) != len(channels):
            body = {**body, "channels": kept}
        try:
            self._request("POST", "/tool-state/stream/chunk/multi", body,
                          what=f"chunk {body.get('chunk_index')} of {flow}")
        except SinkRejected as exc:
            self._alarm(exc)
            raise

    def finalize(self, data_id: str, manifest: dict[str, Any]) -> None:
        """``POST /tool-state/stream/<data_id>/finalize`` (no body: the API has no place for the manifest)."""
        try:
            self._request("POST", f"/tool-state/stream/{quote(data_id, safe='')}/finalize", what="finalize")
        except SinkRejected as exc:
            self._alarm(exc)
            raise
        with self._lock:  # the run is over: no repeat of its initialize is expected any more
            for run_id in [r for r, c in self._created.items() if c.data_id == data_id]:
                del self._created[run_id]
        log.debug("atomscale stream %s finalized", data_id)

    def close(self) -> None:
        """Stop any retry wait and abort every request in flight at once, then close the connections."""
        self._closed.set()
        self._client.close()

    # ------------------------------------------------------------------ initialize, step by step

    def _create(self, stream: StreamInfo) -> _Created:
        synth = _synth_source_id(stream.synth_source_id)
        sample = (stream.physical_sample or "").strip() or None
        project_id = (stream.project_id or "").strip() or None
        self._check_clock()
        links = _Links(
            physical_sample_id=self._resolve_sample(sample) if sample is not None else None,
            project_id=project_id,
            tag_ids=self._resolve_tags(_clean_tags(stream.tags)),
        )
        request: dict[str, Any] = {"stream_name": stream.stream_name}
        if synth is not None:
            request["synth_source_id"] = synth
        request["points_per_chunk"] = stream.points_per_chunk
        request["project_id"] = project_id
        answer = self._json(self._request("POST", "/tool-state/stream/initialize", request, what="initialize"))
        data_id = answer.get("data_id") if isinstance(answer, dict) else None
        if not isinstance(data_id, str) or not data_id:
            raise SinkRejected("POST /tool-state/stream/initialize: the answer has no data_id")
        created = _Created(data_id, links)
        with self._lock:
            self._created[stream.run_id] = created
        log.info("atomscale stream %s created for run %s (%s)", data_id, stream.run_id, stream.stream_name)
        return created

    def _link(self, stream: StreamInfo, created: _Created) -> None:
        """Link the sample (then the project's tracking sample) and the tags, as the SDK does after
        creating the stream. Retried later on a transient failure; on a rejection the stream is
        ended, as the SDK ends it, so nothing stays open that nobody will finalize."""
        links, data_id = created.links, created.data_id
        try:
            if links.physical_sample_id is not None:
                self._request("POST", "/data_entries/physical_sample",
                              {"data_ids": [data_id], "physical_sample_id": links.physical_sample_id},
                              what="link the physical sample")
                if links.project_id is not None:
                    self._request("POST",
                                  f"/projects/{quote(links.project_id, safe='')}/configuration/tracking_samples",
                                  {"physical_sample_id": links.physical_sample_id, "set_active": True},
                                  what="set the project's tracking sample")
            if links.tag_ids:
                self._request("POST", "/tags/data-items/", {"data_ids": [data_id], "tag_ids": links.tag_ids},
                              what="attach the tags")
        except SinkRejected as exc:
            with self._lock:
                self._created.pop(stream.run_id, None)
            try:
                self._request("POST", f"/tool-state/stream/{quote(data_id, safe='')}/finalize",
                              what="end the unlinked stream")
                ended = "so it was ended"
            except SinkError as end_exc:
                ended = f"and ending it failed ({end_exc})"
            raise SinkRejected(f"stream {data_id} was created but could not be linked, {ended}: {exc}",
                               status=exc.status) from exc
        created.linked = True

    def _check_clock(self) -> None:
        """One ``GET /gateway/time`` exchange, as the SDK measures before its first initialize.

        Best effort, one attempt, at most every :data:`CLOCK_INTERVAL`: a failure only means
        :attr:`clock` is not refreshed."""
        flag = os.environ.get(SKIP_CLOCK_SYNC_ENV)
        if flag and flag != "0":
            return
        now = time.monotonic()
        if self._clock_tried_at is not None and now - self._clock_tried_at < CLOCK_INTERVAL:
            return
        self._clock_tried_at = now
        sent = time.time() * 1000.0
        try:
            answer = self._client.exchange("GET", self.endpoint + "/gateway/time", deadline=min(self.deadline, 10.0),
                                           headers={"Cache-Control": "no-store"})
            received = time.time() * 1000.0
            response = answer.response
            if answer.truncated:
                raise ValueError(f"the answer is over {format_size(self._client.max_body)}")
            response.raise_for_status()
            answer = response.json()
            server_received = float(answer["receivedAtUnixMs"])
            server_sent = float(answer["transmittedAtUnixMs"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("atomscale clock check failed: %s", self._scrub(str(exc)))
            return
        held = server_sent - server_received
        delay = received - sent - held
        if delay < 0 or held < 0:
            return  # this machine's clock was stepped during the exchange
        self.clock = ClockCheck(offset_ms=((server_received - sent) + (server_sent - received)) / 2,
                                uncertainty_ms=delay / 2, measured_at_unix_ms=server_sent)

    def _resolve_sample(self, name_or_id: str) -> str:
        """The sample's id: a UUID must exist; a name is matched (trimmed, ASCII case-insensitive) or created."""
        samples = self._list("/physical_samples/", "list physical samples")
        if _UUID.match(name_or_id):
            for sample in samples:
                if sample.get("id") == name_or_id:
                    return name_or_id
            raise SinkRejected(f"physical sample with id {name_or_id!r} not found")
        found = self._find(samples, name_or_id, trim=True)
        if found is not None:
            return found
        try:
            response = self._request("POST", "/physical_samples/", {"name": name_or_id},
                                     what="create the physical sample", answers=(409,))
        except SinkRejected:
            # A failed create: another client may have created it meanwhile (as the SDK re-lists).
            found = self._find(self._list("/physical_samples/", "list physical samples"), name_or_id, trim=True)
            if found is None:
                raise
            return found
        answer = self._json(response)
        if response.status_code == 409:
            # the name is taken in the organisation; the answer names the existing sample
            answer = answer.get("detail") if isinstance(answer, dict) else None
        sample_id = _id_of(answer, "physical_sample_id", "id")
        if sample_id is None:
            raise SinkRejected(f"POST /physical_samples/ -> HTTP {response.status_code}: the answer has no id")
        return sample_id

    def _resolve_tags(self, tags: list[str]) -> list[str]:
        """Each tag's id, in order: a UUID must exist; a name is matched or created."""
        if not tags:
            return []
        existing = self._list("/tags/", "list tags")
        ids: list[str] = []
        for tag in tags:
            if _UUID.match(tag):
                if not any(t.get("id") == tag for t in existing):
                    raise SinkRejected(f"tag with id {tag!r} not found")
                ids.append(tag)
                continue
            found = self._find(existing, tag, trim=False)
            if found is None:
                try:
                    found = _id_of(self._json(self._request("POST", "/tags/", {"name": tag}, what="create a tag")),
                                   "id")
                except SinkRejected:
                    # the server refuses a duplicate name (400): someone created it meanwhile
                    found = self._find(self._list("/tags/", "list tags"), tag, trim=False)
                    if found is None:
                        raise
                if found is None:
                    raise SinkRejected("POST /tags/: the answer has no id")
            ids.append(found)
        return ids

    def _list(self, path: str, what: str) -> list[dict[str, Any]]:
        answer = self._json(self._request("GET", path, what=what))
        if not isinstance(answer, list):
            raise SinkRejected(f"GET {path}: expected a list")
        return [item for item in answer if isinstance(item, dict)]

    @staticmethod
    def _find(items: list[dict[str, Any]], name: str, *, trim: bool) -> str | None:
        wanted = _ascii_fold(name)
        for item in items:
            item_name = item.get("name")
            if isinstance(item_name, str) and _ascii_fold(item_name.strip() if trim else item_name) == wanted:
                return _id_of(item, "id")
        return None

    # ------------------------------------------------------------------ HTTP with retries

    def _read_key(self) -> str:
        try:
            key = self.config.read_api_key()
        except ConfigError as exc:
            raise SinkRejected(f"cannot read the Atomscale API key: {exc}") from None
        if not key:
            raise SinkRejected("the Atomscale API key is empty")
        self._secrets.add(key)
        return key

    def _current_key(self) -> str:
        with self._lock:
            key = self._key
        if key is None:
            key = self._read_key()
            with self._lock:
                self._key = key
        return key

    def _request(self, method: str, path: str, body: Any = None, *, what: str,
                 answers: tuple[int, ...] = ()) -> httpx.Response:
        """One API call: 2xx (or a status in ``answers``) returns the response; transient failures
        are retried within ``call_budget``; see the module docstring for the rest."""
        url = self.endpoint + path
        content = None
        if body is not None:
            try:
                content = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
            except ValueError as exc:  # NaN or infinity: the API cannot take it, and it never will
                raise SinkRejected(f"{method} {path} ({what}): the body is not valid JSON: {exc}") from None
        deadline = time.monotonic() + self.call_budget
        attempt = 0
        rotated = False
        while True:
            if self._closed.is_set():
                raise SinkUnavailable(f"{method} {path} ({what}): the sink is closed")
            key = self._current_key()
            headers = {KEY_HEADER: key}
            if content is not None:
                headers["Content-Type"] = "application/json"
            failure: SinkError
            try:
                answer = self._client.exchange(method, url, deadline=self.deadline, content=content,
                                               headers=headers)
            except httpx.TransportError as exc:
                if self._closed.is_set() or aborted(exc):
                    raise SinkUnavailable(f"{method} {path} ({what}): the sink is closed") from None
                failure = self._transport_failure(f"{method} {path} ({what})", exc)
            except RuntimeError:
                if not self._closed.is_set():
                    raise
                raise SinkUnavailable(f"{method} {path} ({what}): the sink is closed") from None
            else:
                response = answer.response
                status = response.status_code
                ok = 200 <= status < 300 or status in answers
                if ok and answer.truncated:
                    # the request may well have been applied: repeating it is safe, reading on is not
                    failure = SinkUnavailable(f"{method} {path} ({what}) -> HTTP {status}: the answer is over the "
                                              f"{format_size(self._client.max_body)} cap; stopped reading it",
                                              status=status)
                elif ok:
                    return response
                elif status in (401, 403):
                    fresh = self._read_key()
                    with self._lock:
                        self._key = fresh
                    if fresh != key and not rotated:
                        rotated = True
                        log.info("atomscale: HTTP %d for %s %s; the API key changed, trying the new one",
                                 status, method, path)
                        continue
                    raise SinkRejected(f"{method} {path} ({what}) -> HTTP {status}: {self._detail(response)}",
                                       status=status)
                elif status >= 500 or status in TRANSIENT_4XX:
                    failure = SinkUnavailable(f"{method} {path} ({what}) -> HTTP {status}: {self._detail(response)}",
                                              status=status,
                                              retry_after=parse_retry_after(response.headers.get("Retry-After")))
                else:
                    raise SinkRejected(f"{method} {path} ({what}) -> HTTP {status}: {self._detail(response)}",
                                       status=status)
            if isinstance(failure, SinkRejected):
                raise failure
            attempt += 1
            delay = self._rng.uniform(self.backoff_floor,
                                      max(self.backoff_floor,
                                          min(self.backoff_cap, self.backoff_initial * 2 ** min(attempt - 1, 30))))
            if failure.retry_after is not None:
                delay = max(delay, failure.retry_after)
            if time.monotonic() + delay > deadline:
                raise failure
            log.debug("atomscale: %s; retry %d in %.2f s", failure, attempt, delay)
            self.retries += 1
            if self._closed.wait(delay):
                raise SinkUnavailable(f"{method} {path} ({what}): the sink is closed") from failure

    def _transport_failure(self, call: str, exc: httpx.TransportError) -> SinkError:
        """What a failed exchange means: a certificate that fails verification is an alarm (a person
        must act); anything else on the way (refused, reset, timed out, the deadline) clears on its own."""
        bad_certificate = tls_verification_failure(exc)
        if bad_certificate is not None:
            reason = bad_certificate.verify_message or bad_certificate.reason or str(bad_certificate)
            hint = ("uploader.sink.ca_file names another CA" if self.config.ca_file is not None
                    else "for a private CA, set uploader.sink.ca_file")
            return SinkRejected(f"{call}: the TLS certificate of {self.endpoint} failed verification: "
                                f"{reason} ({hint}); nothing was sent")
        if deadline_passed(exc):
            return SinkUnavailable(f"{call}: no complete answer within the {self.deadline:g} s deadline")
        if isinstance(exc, httpx.TimeoutException):
            return SinkUnavailable(f"{call}: timed out ({type(exc).__name__})")
        return SinkUnavailable(f"{call}: {type(exc).__name__}: {self._scrub(str(exc)) or 'connection failed'}")

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise SinkRejected(f"{response.request.method} {response.request.url.path} -> "
                               f"HTTP {response.status_code}: the answer is not JSON") from None

    def _detail(self, response: httpx.Response) -> str:
        """A short, key-free excerpt of an error answer."""
        try:
            text = response.text
        except (UnicodeDecodeError, httpx.HTTPError):
            return "(unreadable answer)"
        text = " ".join(text.split())
        if len(text) > _DETAIL_CHARS:
            text = text[:_DETAIL_CHARS] + "..."
        return self._scrub(text) or response.reason_phrase

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _alarm(self, exc: SinkRejected) -> None:
        log.error("ALARM atomscale sink: %s; the data is kept and the call retried later", self._scrub(str(exc)))


def _id_of(answer: Any, *names: str) -> str | None:
    if not isinstance(answer, dict):
        return None
    for name in names:
        value = answer.get(name)
        if isinstance(value, str) and value:
            return value
    return None

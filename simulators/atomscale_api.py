"""An emulator of the Atomscale HTTP API: the endpoints a timeseries stream uses, with faults.

Why it exists: the uploader must never lose or double a chunk, and the only way to show that is
to run the real client code over real HTTP against a server that can fail the way a cloud API
fails, and then look at exactly what it stored. The emulator also records every request, so the
contract test can run the official SDK (``atomscale`` 0.21.10) and the project's own sink against
it and compare what each sent.

It is a real HTTP/1.1 server (stdlib ``ThreadingHTTPServer``) on 127.0.0.1, state in memory.
``AtomscaleEmulator(...).start()`` serves on a free port (``.url``); ``stop()`` ends it.
``chamber-bridge simulate atomscale [--port P] [--tls DIR]`` runs one standalone.

With ``tls=make_tls_files(directory)`` it serves HTTPS with a certificate for 127.0.0.1, ::1
and localhost signed by a throwaway CA made there (``openssl`` CLI): a client that trusts that CA
(``ca_file``) connects, any other fails verification, as with a private CA or a wrong endpoint.

Endpoints (JSON bodies; every one except ``GET /gateway/time`` needs header ``X-API-KEY`` holding
one of the valid keys, else 401):

===========================================================  ==========================================
``GET  /gateway/time``                                       ``{"receivedAtUnixMs", "transmittedAtUnixMs"}``
``GET  /physical_samples/``                                  ``[{"id", "name"}]``
``POST /physical_samples/ {"name"}``                         ``{"id", "name"}``; a name already taken
                                                             (trimmed, ASCII case-insensitive) is 409
                                                             ``{"detail": {"physical_sample_id"}}``
``GET  /tags/``, ``POST /tags/ {"name"}``                    as samples; a taken name is 400
``POST /tool-state/stream/initialize``                       ``{"stream_name", "synth_source_id"?,
                                                             "points_per_chunk", "project_id"}`` ->
                                                             ``{"data_id", "processed_data_id"}``
``POST /tags/data-items/ {"data_ids", "tag_ids"}``           attach tags (unknown ids: 404)
``POST /data_entries/physical_sample``                       ``{"data_ids", "physical_sample_id"}``
``POST /projects/<id>/configuration/tracking_samples``       ``{"physical_sample_id", "set_active"}``
``POST /tool-state/stream/chunk``                            ``{"data_id", "chunk_index", "channel_name",
                                                             "timestamps", "values", "units"?}``
``POST /tool-state/stream/chunk/multi``                      ``{"data_id", "chunk_index", "channels":
                                                             {name: {"timestamps", "values", "units"?}}}``
``POST /tool-state/stream/<data_id>/finalize``               no body; repeating it answers 200 again
===========================================================  ==========================================

Chunks are stored per (data_id, channel_name, chunk_index). Pushing a key again with the same
content is idempotent (counted in ``repeats``); with different content it is a ``conflict`` and
both versions are kept, so a client that doubles data shows up in :meth:`duplicates_stored`.
Chunks that arrive after their stream was finalized are stored and counted per stream.

Faults (:class:`Fault`; from Python with :meth:`AtomscaleEmulator.add_fault`, or from another
process with ``POST /_emulator/faults``), checked before the key and the route:

- ``http_5xx``: answer ``status`` (500, 502 or 503) without doing anything
- ``reset``: read the request, then drop the connection with a TCP reset, nothing done
- ``slow``: wait ``delay`` seconds, then handle the request normally (a client that timed out
  meanwhile finds the request applied all the same, as with a slow real server)
- ``rate_limit``: 429 with ``Retry-After: retry_after`` (seconds, or an HTTP date)
- ``unauthorized``: 401 whatever the key (and :meth:`AtomscaleEmulator.set_keys` rotates keys)
- ``forbidden``: 403 whatever the key (the key is valid but lacks a permission, until an admin grants it)
- ``lost_response``: apply the request, then drop the connection without answering
- ``drip``: apply the request, then send the answer (status line and headers too) one byte
  every ``delay`` seconds: each read a client makes gets a byte well within its read timeout,
  so only an overall deadline ends the exchange
- ``huge_body``: apply the request, then answer its status with a body of ``size`` bytes
  (default 100 MB; valid JSON ``{"pad": "xxx..."}``), streamed in pieces, never held in memory

Each fault applies to the next ``count`` matching requests, or to each with ``probability``
(drawn from a generator seeded by ``seed``), or to every one until cleared when neither is given;
``path_prefix`` limits it to paths starting with that prefix. The first matching fault wins.

Admin endpoints (no key, not logged, never faulted): ``GET /_emulator/state``, ``GET
/_emulator/requests``, ``POST /_emulator/faults`` (one fault object or ``{"faults": [...]}``;
appended), ``DELETE /_emulator/faults``, ``POST /_emulator/keys {"keys": [...]}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

log = logging.getLogger("simulators.atomscale_api")

FAULT_KINDS = ("http_5xx", "reset", "slow", "rate_limit", "unauthorized", "forbidden", "lost_response", "drip",
               "huge_body")
#: the body ``huge_body`` sends by default
HUGE_BODY = 100_000_000
_HUGE_PREFIX = b'{"pad":"'
_HUGE_SUFFIX = b'"}'
KEY_HEADER = "X-API-KEY"
ADMIN_PREFIX = "/_emulator/"
DEFAULT_KEY = "emulator-key"
_KEY = KEY_HEADER.lower()

_STREAM_PREFIX = "/tool-state/stream/"
_FINALIZE_SUFFIX = "/finalize"
_PROJECT_PREFIX = "/projects/"
_TRACKING_SUFFIX = "/configuration/tracking_samples"


@dataclass
class Fault:
    """One switchable failure; see the module docstring for the kinds."""

    kind: str
    #: applies to the next ``count`` matching requests (this many remain)
    count: int | None = None
    #: or to each matching request with this probability
    probability: float | None = None
    #: only paths starting with this (e.g. ``/tool-state/stream/chunk``)
    path_prefix: str | None = None
    #: the status of ``http_5xx``
    status: int = 503
    #: seconds a ``slow`` request waits; seconds between two bytes of a ``drip`` answer
    delay: float = 1.0
    #: bytes of a ``huge_body`` answer
    size: int = HUGE_BODY
    #: the ``Retry-After`` of ``rate_limit``, in seconds
    retry_after: float = 1.0
    #: send ``Retry-After`` as an HTTP date instead of seconds
    retry_after_date: bool = False
    #: how many requests this fault has hit so far
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.count is not None and self.probability is not None:
            raise ValueError("a fault has a count or a probability, not both")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        if self.kind == "http_5xx" and not 500 <= self.status <= 599:
            raise ValueError("http_5xx needs a 5xx status")
        if self.delay < 0 or self.retry_after < 0:
            raise ValueError("delay and retry_after must be >= 0")
        if self.size < len(_HUGE_PREFIX) + len(_HUGE_SUFFIX):
            raise ValueError(f"size must be >= {len(_HUGE_PREFIX) + len(_HUGE_SUFFIX)}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """A fault from the admin endpoint's JSON (the same field names)."""
        known = {name for name in cls.__dataclass_fields__ if name != "hits"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        return cls(**dict(data))


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate it signed (PEM files)."""

    #: the CA's certificate: what a client trusts (``uploader.sink.ca_file``)
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")) -> TlsFiles:
    """Make a CA and a server certificate for ``hosts`` in ``directory`` with the ``openssl`` CLI.

    (The ``cryptography`` package would do it in-process, but it is not among the project's
    dependencies; ``openssl`` is on every machine that runs the tests.)"""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    ext.write_text(f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=chamber-bridge test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={hosts[0]}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", "2", "-days", "2",
         "-extfile", ext, "-out", cert],
    ):
        done = subprocess.run([openssl, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")
    return TlsFiles(ca, cert, key)


@dataclass
class RequestRecord:
    """One request as the emulator saw it. The API key's value is never kept."""

    seq: int
    #: ``time.monotonic()`` when the request line and headers had arrived
    at: float
    method: str
    path: str
    query: str
    #: header names in lower case; ``x-api-key`` is left out (see ``api_key_present``)
    headers: dict[str, str]
    api_key_present: bool
    #: the parsed JSON body, or None (no body, or not JSON)
    body: Any
    #: the body's top-level keys in the order sent, when it is a JSON object
    body_keys: tuple[str, ...] | None
    #: the status answered, or None when the connection was dropped instead
    status: int | None = None
    #: the fault applied to this request, if any
    fault: str | None = None
    #: ``time.monotonic()`` just before the answer was sent (or the connection dropped)
    answered_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EmulatedStream:
    """A stream as the server holds it."""

    data_id: str
    processed_data_id: str
    stream_name: str | None
    synth_source_id: int | None
    points_per_chunk: int
    project_id: str | None
    created_at: float
    finalized: bool = False
    finalize_calls: int = 0
    finalized_at: float | None = None
    tag_ids: list[str] = field(default_factory=list)
    physical_sample_id: str | None = None
    #: chunk requests that arrived after the first finalize
    chunks_after_finalize: int = 0


@dataclass(frozen=True)
class StoredChunk:
    """One stored version of one channel's chunk."""

    timestamps: tuple[float, ...]
    values: tuple[float, ...]
    units: str | None


@dataclass
class TrackingConfig:
    """A project's tracking samples, as ``/configuration/tracking_samples`` sets them."""

    tracking_physical_sample_ids: list[str] = field(default_factory=list)
    active_tracking_physical_sample_id: str | None = None


class ApiError(Exception):
    """Answer the request with ``status`` and ``{"detail": detail}``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass
class _Answer:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


ChunkKey = tuple[str, str, int]


class AtomscaleEmulator:
    """The emulated API: in-memory state, the request log, the faults and the HTTP server."""

    def __init__(self, keys: Iterable[str] = (DEFAULT_KEY,), *, port: int = 0, host: str = "127.0.0.1",
                 seed: int = 0, reference_offset_ms: float = 0.0, tls: TlsFiles | None = None) -> None:
        self._lock = threading.RLock()
        #: serve HTTPS with this certificate (None: plain HTTP)
        self.tls = tls
        self._keys: set[str] = set(keys)
        self._host = host
        self._port = port
        self._fault_rng = random.Random(seed)
        self._id_rng = random.Random(seed ^ 0x5EED)
        #: what ``/gateway/time`` adds to this machine's clock (a skewed reference clock)
        self.reference_offset_ms = reference_offset_ms
        self._faults: list[Fault] = []
        self._requests: list[RequestRecord] = []
        self._streams: dict[str, EmulatedStream] = {}
        self._samples: dict[str, str] = {}  # id -> name
        self._tags: dict[str, str] = {}  # id -> name
        self._projects: dict[str, TrackingConfig] = {}
        self._chunks: dict[ChunkKey, list[StoredChunk]] = {}
        self.repeats = 0
        self.conflicts = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Listen and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler, self)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
            # the handshake is made in the connection's thread (_Handler.setup), not in accept()
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="atomscale-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (state and log stay readable)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL a client is given as its endpoint."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self.tls is not None else 'http'}://{host}:{self.port}"

    # ------------------------------------------------------------------ knobs

    def set_keys(self, keys: Iterable[str]) -> None:
        """Replace the valid API keys (a key rotation: the old ones answer 401 from now on)."""
        with self._lock:
            self._keys = set(keys)

    def add_fault(self, kind: str | Fault, **options: Any) -> Fault:
        """Switch a fault on (``add_fault("http_5xx", count=3, status=502)``); returns it."""
        fault = kind if isinstance(kind, Fault) else Fault(kind, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[Fault]:
        with self._lock:
            return [Fault(**asdict(f)) for f in self._faults]

    def add_physical_sample(self, name: str) -> str:
        """A sample that already exists in the organisation; returns its id."""
        with self._lock:
            sample_id = self._new_id()
            self._samples[sample_id] = name
            return sample_id

    def add_tag(self, name: str) -> str:
        """A tag that already exists in the organisation; returns its id."""
        with self._lock:
            tag_id = self._new_id()
            self._tags[tag_id] = name
            return tag_id

    # ------------------------------------------------------------------ queries for tests

    def requests(self, path_prefix: str = "") -> list[RequestRecord]:
        """The request log (admin requests left out), oldest first."""
        with self._lock:
            return [r for r in self._requests if r.path.startswith(path_prefix)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def streams(self) -> list[EmulatedStream]:
        with self._lock:
            return [EmulatedStream(**{**asdict(s), "tag_ids": list(s.tag_ids)}) for s in self._streams.values()]

    def stream(self, data_id: str) -> EmulatedStream:
        with self._lock:
            s = self._streams[data_id]
            return EmulatedStream(**{**asdict(s), "tag_ids": list(s.tag_ids)})

    def physical_samples(self) -> dict[str, str]:
        """id -> name"""
        with self._lock:
            return dict(self._samples)

    def tags(self) -> dict[str, str]:
        """id -> name"""
        with self._lock:
            return dict(self._tags)

    def tracking(self, project_id: str) -> TrackingConfig | None:
        with self._lock:
            config = self._projects.get(project_id)
            if config is None:
                return None
            return TrackingConfig(list(config.tracking_physical_sample_ids), config.active_tracking_physical_sample_id)

    def chunk_keys(self, data_id: str | None = None) -> list[ChunkKey]:
        """Every stored (data_id, channel, chunk_index), sorted."""
        with self._lock:
            return sorted(k for k in self._chunks if data_id is None or k[0] == data_id)

    def chunk_versions(self, data_id: str, channel: str, chunk_index: int) -> list[StoredChunk]:
        """The versions stored at one key: one, or more after a conflict."""
        with self._lock:
            return list(self._chunks.get((data_id, channel, chunk_index), []))

    def channels(self, data_id: str) -> list[str]:
        with self._lock:
            return sorted({k[1] for k in self._chunks if k[0] == data_id})

    def points(self, data_id: str, channel: str) -> tuple[list[float], list[float]]:
        """One channel's stored timestamps and values, chunks in chunk_index order (every version)."""
        timestamps: list[float] = []
        values: list[float] = []
        with self._lock:
            for key in sorted(k for k in self._chunks if k[0] == data_id and k[1] == channel):
                for version in self._chunks[key]:
                    timestamps.extend(version.timestamps)
                    values.extend(version.values)
        return timestamps, values

    def units(self, data_id: str, channel: str) -> set[str | None]:
        with self._lock:
            return {v.units for k, versions in self._chunks.items() if k[:2] == (data_id, channel) for v in versions}

    def duplicates_stored(self, data_id: str | None = None) -> int:
        """How many (data_id, channel, timestamp) are stored more than once, across all chunk keys."""
        seen: dict[tuple[str, str, float], int] = {}
        with self._lock:
            for (stream, channel, _), versions in self._chunks.items():
                if data_id is not None and stream != data_id:
                    continue
                for version in versions:
                    for t in version.timestamps:
                        seen[(stream, channel, t)] = seen.get((stream, channel, t), 0) + 1
        return sum(1 for n in seen.values() if n > 1)

    def state(self) -> dict[str, Any]:
        """A JSON summary (what ``GET /_emulator/state`` answers)."""
        with self._lock:
            return {
                "streams": [asdict(s) for s in self._streams.values()],
                "chunks": len(self._chunks),
                "repeats": self.repeats,
                "conflicts": self.conflicts,
                "duplicates_stored": self.duplicates_stored(),
                "requests": len(self._requests),
                "faults": [asdict(f) for f in self._faults],
                "physical_samples": [{"id": i, "name": n} for i, n in self._samples.items()],
                "tags": [{"id": i, "name": n} for i, n in self._tags.items()],
            }

    # ------------------------------------------------------------------ request handling (server threads)

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _begin(self, method: str, path: str, query: str, headers: Mapping[str, str], body: Any,
               arrived: float) -> tuple[RequestRecord, Fault | None]:
        """Log the request and pick the fault that applies to it, if any (header names in lower case)."""
        clean = {k: v for k, v in headers.items() if k != _KEY}
        with self._lock:
            record = RequestRecord(
                seq=len(self._requests), at=arrived, method=method, path=path, query=query, headers=clean,
                api_key_present=headers.get(_KEY) is not None, body=body,
                body_keys=tuple(body) if isinstance(body, dict) else None,
            )
            self._requests.append(record)
            fault = self._pick_fault(path)
            if fault is not None:
                record.fault = fault.kind
            return record, fault

    def _pick_fault(self, path: str) -> Fault | None:
        for fault in list(self._faults):
            if fault.path_prefix is not None and not path.startswith(fault.path_prefix):
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            elif fault.probability is not None and self._fault_rng.random() >= fault.probability:
                continue
            fault.hits += 1
            return fault
        return None

    def _finish(self, record: RequestRecord, status: int | None) -> None:
        with self._lock:
            record.status = status
            record.answered_at = time.monotonic()

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _dispatch(self, method: str, path: str, headers: Mapping[str, str], body: Any, arrived_ms: float) -> _Answer:
        """Route one API request; ApiError becomes its status."""
        try:
            if (method, path) == ("GET", "/gateway/time"):
                offset = self.reference_offset_ms
                return _Answer(200, {"receivedAtUnixMs": arrived_ms + offset,
                                     "transmittedAtUnixMs": time.time() * 1000.0 + offset})
            key = headers.get(_KEY)
            with self._lock:
                if key is None or key not in self._keys:
                    raise ApiError(401, "missing or invalid API key")
                return self._route(method, path, body)
        except ApiError as exc:
            return _Answer(exc.status, {"detail": exc.detail})

    def _route(self, method: str, path: str, body: Any) -> _Answer:
        if path == "/physical_samples/":
            return self._samples_endpoint(method, body)
        if path == "/tags/":
            return self._tags_endpoint(method, body)
        _need_post(method)
        if path == "/tool-state/stream/initialize":
            return self._initialize(body)
        if path == "/tags/data-items/":
            return self._attach_tags(body)
        if path == "/data_entries/physical_sample":
            return self._link_sample(body)
        if path == "/tool-state/stream/chunk":
            return self._chunk_single(body)
        if path == "/tool-state/stream/chunk/multi":
            return self._chunk_multi(body)
        if path.startswith(_STREAM_PREFIX) and path.endswith(_FINALIZE_SUFFIX):
            data_id = unquote(path[len(_STREAM_PREFIX):-len(_FINALIZE_SUFFIX)])
            if data_id and "/" not in data_id:
                return self._finalize(data_id)
        if path.startswith(_PROJECT_PREFIX) and path.endswith(_TRACKING_SUFFIX):
            project_id = unquote(path[len(_PROJECT_PREFIX):-len(_TRACKING_SUFFIX)])
            if project_id and "/" not in project_id:
                return self._tracking(project_id, body)
        raise ApiError(404, "Not Found")

    def _samples_endpoint(self, method: str, body: Any) -> _Answer:
        if method == "GET":
            return _Answer(200, [{"id": i, "name": n} for i, n in self._samples.items()])
        _need_post(method)
        name = _text(_object(body), "name").strip()
        if not name:
            raise ApiError(422, "name must not be empty")
        for sample_id, existing in self._samples.items():
            if _same_name(existing.strip(), name):
                raise ApiError(409, {"physical_sample_id": sample_id})
        sample_id = self._new_id()
        self._samples[sample_id] = name
        return _Answer(201, {"id": sample_id, "name": name})

    def _tags_endpoint(self, method: str, body: Any) -> _Answer:
        if method == "GET":
            return _Answer(200, [{"id": i, "name": n} for i, n in self._tags.items()])
        _need_post(method)
        name = _text(_object(body), "name").strip()
        if not name:
            raise ApiError(422, "name must not be empty")
        if any(_same_name(existing, name) for existing in self._tags.values()):
            raise ApiError(400, f"a tag named {name!r} already exists")
        tag_id = self._new_id()
        self._tags[tag_id] = name
        return _Answer(201, {"id": tag_id, "name": name})

    def _initialize(self, body: Any) -> _Answer:
        data = _object(body)
        stream_name = data.get("stream_name")
        if stream_name is not None and not isinstance(stream_name, str):
            raise ApiError(422, "stream_name must be a string or null")
        synth = data.get("synth_source_id")
        if synth is not None and (isinstance(synth, bool) or not isinstance(synth, int)):
            raise ApiError(422, "synth_source_id must be an integer")
        ppc = data.get("points_per_chunk")
        if isinstance(ppc, bool) or not isinstance(ppc, int) or ppc <= 0:
            raise ApiError(422, "points_per_chunk must be a positive integer")
        project_id = data.get("project_id")
        if project_id is not None and not isinstance(project_id, str):
            raise ApiError(422, "project_id must be a string or null")
        stream = EmulatedStream(data_id=self._new_id(), processed_data_id=self._new_id(), stream_name=stream_name,
                                synth_source_id=synth, points_per_chunk=ppc, project_id=project_id,
                                created_at=time.time())
        self._streams[stream.data_id] = stream
        return _Answer(200, {"data_id": stream.data_id, "processed_data_id": stream.processed_data_id})

    def _streams_named(self, data: Mapping[str, Any]) -> list[EmulatedStream]:
        ids = data.get("data_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(422, "data_ids must be a non-empty list of strings")
        missing = [i for i in ids if i not in self._streams]
        if missing:
            raise ApiError(404, f"unknown data ids: {missing}")
        return [self._streams[i] for i in ids]

    def _attach_tags(self, body: Any) -> _Answer:
        data = _object(body)
        streams = self._streams_named(data)
        tag_ids = data.get("tag_ids")
        if not isinstance(tag_ids, list) or not all(isinstance(t, str) for t in tag_ids):
            raise ApiError(422, "tag_ids must be a list of strings")
        missing = [t for t in tag_ids if t not in self._tags]
        if missing:
            raise ApiError(404, f"unknown tag ids: {missing}")
        for stream in streams:
            stream.tag_ids.extend(t for t in tag_ids if t not in stream.tag_ids)
        return _Answer(200, {"ok": True})

    def _link_sample(self, body: Any) -> _Answer:
        data = _object(body)
        streams = self._streams_named(data)
        sample_id = _text(data, "physical_sample_id")
        if sample_id not in self._samples:
            raise ApiError(404, "unknown physical sample")
        for stream in streams:
            stream.physical_sample_id = sample_id
        return _Answer(200, {"ok": True})

    def _tracking(self, project_id: str, body: Any) -> _Answer:
        data = _object(body)
        sample_id = _text(data, "physical_sample_id")
        if sample_id not in self._samples:
            raise ApiError(404, "unknown physical sample")
        set_active = data.get("set_active", False)
        if not isinstance(set_active, bool):
            raise ApiError(422, "set_active must be a boolean")
        config = self._projects.setdefault(project_id, TrackingConfig())
        if sample_id not in config.tracking_physical_sample_ids:
            config.tracking_physical_sample_ids.append(sample_id)
        if set_active:
            config.active_tracking_physical_sample_id = sample_id
        return _Answer(200, asdict(config))

    def _stream_for_chunk(self, data: Mapping[str, Any]) -> tuple[EmulatedStream, int]:
        data_id = _text(data, "data_id")
        stream = self._streams.get(data_id)
        if stream is None:
            raise ApiError(404, f"unknown data id {data_id!r}")
        index = data.get("chunk_index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ApiError(422, "chunk_index must be a non-negative integer")
        return stream, index

    def _chunk_single(self, body: Any) -> _Answer:
        data = _object(body)
        stream, index = self._stream_for_chunk(data)
        name = _text(data, "channel_name")
        chunk = _channel_chunk(name, data)
        self._store(stream, index, {name: chunk})
        return _Answer(200, {"ok": True})

    def _chunk_multi(self, body: Any) -> _Answer:
        data = _object(body)
        stream, index = self._stream_for_chunk(data)
        channels = data.get("channels")
        if not isinstance(channels, dict) or not channels:
            raise ApiError(422, "channels must be a non-empty object")
        chunks = {str(name): _channel_chunk(str(name), _object(channel)) for name, channel in channels.items()}
        self._store(stream, index, chunks)
        return _Answer(200, {"ok": True})

    def _store(self, stream: EmulatedStream, index: int, chunks: Mapping[str, StoredChunk]) -> None:
        if stream.finalized:
            stream.chunks_after_finalize += 1
        for name, chunk in chunks.items():
            versions = self._chunks.setdefault((stream.data_id, name, index), [])
            if chunk in versions:
                self.repeats += 1
                continue
            if versions:
                self.conflicts += 1
            versions.append(chunk)

    def _finalize(self, data_id: str) -> _Answer:
        stream = self._streams.get(data_id)
        if stream is None:
            raise ApiError(404, f"unknown data id {data_id!r}")
        stream.finalize_calls += 1
        if not stream.finalized:
            stream.finalized = True
            stream.finalized_at = time.time()
        return _Answer(200, {"data_id": data_id, "finalized": True})

    # ------------------------------------------------------------------ admin (server threads)

    def _admin(self, method: str, path: str, body: Any) -> _Answer:
        try:
            if (method, path) == ("GET", "/_emulator/state"):
                return _Answer(200, self.state())
            if (method, path) == ("GET", "/_emulator/requests"):
                return _Answer(200, [r.to_json() for r in self.requests()])
            if (method, path) == ("POST", "/_emulator/faults"):
                data = _object(body)
                items = data.get("faults", [data])
                if not isinstance(items, list):
                    raise ApiError(422, "faults must be a list")
                try:
                    faults = [Fault.from_json(_object(item)) for item in items]
                except (TypeError, ValueError) as exc:
                    raise ApiError(422, str(exc)) from None
                for fault in faults:
                    self.add_fault(fault)
                return _Answer(200, [asdict(f) for f in self.faults()])
            if (method, path) == ("DELETE", "/_emulator/faults"):
                self.clear_faults()
                return _Answer(200, [])
            if (method, path) == ("POST", "/_emulator/keys"):
                keys = _object(body).get("keys")
                if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                    raise ApiError(422, "keys must be a list of non-empty strings")
                self.set_keys(keys)
                return _Answer(200, {"keys": len(keys)})
            raise ApiError(404, "Not Found")
        except ApiError as exc:
            return _Answer(exc.status, {"detail": exc.detail})


def _fault_answer(fault: Fault) -> _Answer:
    """What an answering fault (http_5xx, rate_limit, unauthorized, forbidden) says instead of the API."""
    if fault.kind == "http_5xx":
        return _Answer(fault.status, {"detail": HTTPStatus(fault.status).phrase})
    if fault.kind == "rate_limit":
        retry_after = (formatdate(time.time() + fault.retry_after, usegmt=True) if fault.retry_after_date
                       else f"{fault.retry_after:g}")
        return _Answer(429, {"detail": "Too Many Requests"}, {"Retry-After": retry_after})
    if fault.kind == "forbidden":
        return _Answer(403, {"detail": "not enough permissions"})
    return _Answer(401, {"detail": "missing or invalid API key"})


def _need_post(method: str) -> None:
    if method != "POST":
        raise ApiError(405, "Method Not Allowed")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object")
    return body


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ApiError(422, f"{key} must be a string")
    return value


def _same_name(a: str, b: str) -> bool:
    """The server's uniqueness: ASCII case-insensitive (as the SDK matches names)."""
    return a.encode("utf-8").lower() == b.encode("utf-8").lower()


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ApiError(422, f"{what} must be a list of numbers")
    return tuple(float(v) for v in value)


def _channel_chunk(name: str, data: Mapping[str, Any]) -> StoredChunk:
    timestamps = _numbers(data.get("timestamps"), f"{name}: timestamps")
    values = _numbers(data.get("values"), f"{name}: values")
    if len(timestamps) != len(values):
        raise ApiError(422, f"{name}: timestamps and values differ in length")
    if not timestamps:
        raise ApiError(422, f"{name}: empty chunk")
    units = data.get("units")
    if units is not None and not isinstance(units, str):
        raise ApiError(422, f"{name}: units must be a string")
    return StoredChunk(timestamps, values, units)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 emulator: AtomscaleEmulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up, or refused the certificate: what a server sees every day, not a traceback."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    #: idle keep-alive connections end after this long
    timeout = 30
    #: headers and body leave in two writes; with Nagle on, each answer would wait for a delayed ACK
    disable_nagle_algorithm = True

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()  # a client refusing the certificate ends it here
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        arrived = time.monotonic()
        arrived_ms = time.time() * 1000.0
        emulator = self.server.emulator
        raw = self._read_body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        split = urlsplit(self.path)
        path = split.path
        if path.startswith(ADMIN_PREFIX):
            self._answer(emulator._admin(self.command, path, body))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        record, fault = emulator._begin(self.command, path, split.query, headers, body, arrived)
        # The log is completed before the client can see the outcome, so a test that reads it
        # right after its call returned finds this request finished.
        if fault is not None and fault.kind == "reset":
            emulator._finish(record, None)
            self._drop()
            return
        if fault is not None and fault.kind in ("http_5xx", "rate_limit", "unauthorized", "forbidden"):
            answer = _fault_answer(fault)
            emulator._finish(record, answer.status)
            self._answer(answer)
            return
        if fault is not None and fault.kind == "slow":
            emulator._sleep(fault.delay)
        if raw and body is None:
            answer = _Answer(422, {"detail": "the body is not JSON"})
        else:
            answer = emulator._dispatch(self.command, path, headers, body, arrived_ms)
        if fault is not None and fault.kind == "lost_response":
            emulator._finish(record, None)
            self._drop()
            return
        emulator._finish(record, answer.status)
        if fault is not None and fault.kind == "drip":
            self._drip(answer, fault.delay)
        elif fault is not None and fault.kind == "huge_body":
            self._huge(answer.status, fault.size)
        else:
            self._answer(answer)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            return b""
        return self.rfile.read(int(length))

    def _answer(self, answer: _Answer) -> None:
        data = json.dumps(answer.payload).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            # the client gave up (a timeout during a slow fault): what a real server sees too
            self.close_connection = True

    def _drip(self, answer: _Answer, interval: float) -> None:
        """The whole answer, a byte every ``interval`` seconds, until done, the client leaves or the emulator stops."""
        data = json.dumps(answer.payload).encode()
        head = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}", "Content-Type: application/json",
                f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in answer.headers.items())]
        wire = ("\r\n".join(head) + "\r\n\r\n").encode() + data
        self.close_connection = True
        stopping = self.server.emulator._stopping
        try:
            for i in range(len(wire)):
                self.wfile.write(wire[i:i + 1])
                self.wfile.flush()
                if stopping.wait(interval):
                    return
        except OSError:
            return

    def _huge(self, status: int, size: int) -> None:
        """``size`` bytes of valid JSON, written piece by piece (never built in memory)."""
        self.close_connection = True
        piece = b"x" * 65536
        stopping = self.server.emulator._stopping
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(_HUGE_PREFIX)
            left = size - len(_HUGE_PREFIX) - len(_HUGE_SUFFIX)
            while left > 0 and not stopping.is_set():
                n = min(left, len(piece))
                self.wfile.write(piece[:n])
                left -= n
            self.wfile.write(_HUGE_SUFFIX)
            self.wfile.flush()
        except OSError:
            return  # the client stopped reading: what it should do

    def _drop(self) -> None:
        """End the connection with a TCP reset, no answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class RemoteControl:
    """Drives an emulator in another process through its admin endpoints (stdlib only)."""

    def __init__(self, url: str, timeout: float = 5.0, ca_file: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        #: for an emulator serving HTTPS (``--tls``): the CA it was made with
        self._context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as response:
            return json.loads(response.read())

    def add_fault(self, kind: str, **options: Any) -> Any:
        return self._call("POST", "/_emulator/faults", {"kind": kind, **options})

    def clear_faults(self) -> Any:
        return self._call("DELETE", "/_emulator/faults")

    def set_keys(self, keys: Iterable[str]) -> Any:
        return self._call("POST", "/_emulator/keys", {"keys": list(keys)})

    def state(self) -> Any:
        return self._call("GET", "/_emulator/state")

    def requests(self) -> Any:
        return self._call("GET", "/_emulator/requests")

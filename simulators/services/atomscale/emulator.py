"""The Atomscale API emulator as a server object: life, valid keys, faults, the request log, the admin endpoints.

:class:`AtomscaleEmulator` is an :class:`~simulators.services.atomscale.api.EmulatedApi` (the state
and endpoints) served over HTTP by :mod:`simulators.services.atomscale.server`, which calls
:meth:`~AtomscaleEmulator.log_request`, :meth:`~AtomscaleEmulator.dispatch` and
:meth:`~AtomscaleEmulator.log_answer` for every API request and :meth:`~AtomscaleEmulator.admin`
for the admin endpoints.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any, Self

from simulators.services.atomscale.api import EmulatedApi
from simulators.services.atomscale.bodies import json_object
from simulators.services.atomscale.faults import Fault
from simulators.services.atomscale.records import Answer, ApiError, RequestRecord
from simulators.services.atomscale.server import EmulatorServer
from simulators.services.atomscale.tls import TlsFiles

log = logging.getLogger("simulators.atomscale")

KEY_HEADER = "X-API-KEY"
ADMIN_PREFIX = "/_emulator/"
DEFAULT_KEY = "emulator-key"
_KEY = KEY_HEADER.lower()


class AtomscaleEmulator(EmulatedApi):
    """The emulated API behind a real HTTP server, with valid keys, faults and a request log."""

    def __init__(self, keys: Iterable[str] = (DEFAULT_KEY,), *, port: int = 0, host: str = "127.0.0.1",
                 seed: int = 0, reference_offset_ms: float = 0.0, tls: TlsFiles | None = None) -> None:
        super().__init__(seed)
        #: serve HTTPS with this certificate (None: plain HTTP)
        self.tls = tls
        self._keys: set[str] = set(keys)
        self._host = host
        self._port = port
        self._fault_rng = random.Random(seed)
        #: what ``/gateway/time`` adds to this machine's clock (a skewed reference clock)
        self.reference_offset_ms = reference_offset_ms
        self._faults: list[Fault] = []
        self._requests: list[RequestRecord] = []
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        #: set while stopping: a slow or dripping answer ends early
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Listen and serve in a daemon thread."""
        if self._server is not None:
            return self
        self.stopping.clear()
        server = EmulatorServer((self._host, self._port), self)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
            # the handshake is made in the connection's thread (the handler's setup), not in accept()
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
        self.stopping.set()
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

    # ------------------------------------------------------------------ queries for tests

    def requests(self, path_prefix: str = "") -> list[RequestRecord]:
        """The request log (admin requests left out), oldest first."""
        with self._lock:
            return [r for r in self._requests if r.path.startswith(path_prefix)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

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

    def log_request(self, method: str, path: str, query: str, headers: Mapping[str, str], body: Any,
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

    def log_answer(self, record: RequestRecord, status: int | None) -> None:
        """Complete the log entry, before the client can see the outcome (None: the connection is dropped)."""
        with self._lock:
            record.status = status
            record.answered_at = time.monotonic()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a ``slow`` fault), or less if the emulator stops meanwhile."""
        self.stopping.wait(seconds)

    def dispatch(self, method: str, path: str, headers: Mapping[str, str], body: Any, arrived_ms: float) -> Answer:
        """Route one API request; ApiError becomes its status."""
        try:
            if (method, path) == ("GET", "/gateway/time"):
                offset = self.reference_offset_ms
                return Answer(200, {"receivedAtUnixMs": arrived_ms + offset,
                                     "transmittedAtUnixMs": time.time() * 1000.0 + offset})
            key = headers.get(_KEY)
            with self._lock:
                if key is None or key not in self._keys:
                    raise ApiError(401, "missing or invalid API key")
                return self.route(method, path, body)
        except ApiError as exc:
            return Answer(exc.status, {"detail": exc.detail})

    # ------------------------------------------------------------------ admin (server threads)

    def admin(self, method: str, path: str, body: Any) -> Answer:
        """Answer one admin request (``/_emulator/...``: state, requests, faults, keys)."""
        try:
            if (method, path) == ("GET", "/_emulator/state"):
                return Answer(200, self.state())
            if (method, path) == ("GET", "/_emulator/requests"):
                return Answer(200, [r.to_json() for r in self.requests()])
            if (method, path) == ("POST", "/_emulator/faults"):
                data = json_object(body)
                items = data.get("faults", [data])
                if not isinstance(items, list):
                    raise ApiError(422, "faults must be a list")
                try:
                    faults = [Fault.from_json(json_object(item)) for item in items]
                except (TypeError, ValueError) as exc:
                    raise ApiError(422, str(exc)) from None
                for fault in faults:
                    self.add_fault(fault)
                return Answer(200, [asdict(f) for f in self.faults()])
            if (method, path) == ("DELETE", "/_emulator/faults"):
                self.clear_faults()
                return Answer(200, [])
            if (method, path) == ("POST", "/_emulator/keys"):
                keys = json_object(body).get("keys")
                if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                    raise ApiError(422, "keys must be a list of non-empty strings")
                self.set_keys(keys)
                return Answer(200, {"keys": len(keys)})
            raise ApiError(404, "Not Found")
        except ApiError as exc:
            return Answer(exc.status, {"detail": exc.detail})

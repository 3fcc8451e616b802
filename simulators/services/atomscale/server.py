"""The emulator's HTTP/1.1 server (stdlib ``ThreadingHTTPServer``), where the faults that act on the wire happen.

Faults that answer instead of the API (``http_5xx``, ``rate_limit``, ``unauthorized``,
``forbidden``) and those that damage the exchange (``reset``, ``slow``, ``lost_response``,
``drip``, ``huge_body``) are applied here, around the emulator's
:meth:`~simulators.services.atomscale.emulator.AtomscaleEmulator.dispatch`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from simulators.services.atomscale.faults import HUGE_PREFIX, HUGE_SUFFIX, Fault, fault_answer
from simulators.services.atomscale.records import Answer, RequestRecord

log = logging.getLogger("simulators.atomscale")

#: paths of the admin endpoints (no key, not logged, never faulted)
ADMIN_PREFIX = "/_emulator/"


class Emulator(Protocol):
    """What the handler asks of the emulator it serves (:class:`~simulators.services.atomscale.AtomscaleEmulator`)."""

    #: set while the emulator stops: a slow or dripping answer ends early
    stopping: threading.Event

    def log_request(self, method: str, path: str, query: str, headers: Mapping[str, str], body: Any,
                    arrived: float) -> tuple[RequestRecord, Fault | None]: ...

    def log_answer(self, record: RequestRecord, status: int | None) -> None: ...

    def pause(self, seconds: float) -> None: ...

    def dispatch(self, method: str, path: str, headers: Mapping[str, str], body: Any, arrived_ms: float) -> Answer: ...

    def admin(self, method: str, path: str, body: Any) -> Answer: ...


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

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
    server: EmulatorServer
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
            self._answer(emulator.admin(self.command, path, body))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        record, fault = emulator.log_request(self.command, path, split.query, headers, body, arrived)
        # The log is completed before the client can see the outcome, so a test that reads it
        # right after its call returned finds this request finished.
        if fault is not None and fault.kind == "reset":
            emulator.log_answer(record, None)
            self._drop()
            return
        if fault is not None and fault.kind in ("http_5xx", "rate_limit", "unauthorized", "forbidden"):
            answer = fault_answer(fault)
            emulator.log_answer(record, answer.status)
            self._answer(answer)
            return
        if fault is not None and fault.kind == "slow":
            emulator.pause(fault.delay)
        if raw and body is None:
            answer = Answer(422, {"detail": "the body is not JSON"})
        else:
            answer = emulator.dispatch(self.command, path, headers, body, arrived_ms)
        if fault is not None and fault.kind == "lost_response":
            emulator.log_answer(record, None)
            self._drop()
            return
        emulator.log_answer(record, answer.status)
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

    def _answer(self, answer: Answer) -> None:
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

    def _drip(self, answer: Answer, interval: float) -> None:
        """The whole answer, a byte every ``interval`` seconds, until done, the client leaves or the emulator stops."""
        data = json.dumps(answer.payload).encode()
        head = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}", "Content-Type: application/json",
                f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in answer.headers.items())]
        wire = ("\r\n".join(head) + "\r\n\r\n").encode() + data
        self.close_connection = True
        stopping = self.server.emulator.stopping
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
        stopping = self.server.emulator.stopping
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(HUGE_PREFIX)
            left = size - len(HUGE_PREFIX) - len(HUGE_SUFFIX)
            while left > 0 and not stopping.is_set():
                n = min(left, len(piece))
                self.wfile.write(piece[:n])
                left -= n
            self.wfile.write(HUGE_SUFFIX)
            self.wfile.flush()
        except OSError:
            return  # the client stopped reading: what it should do

    def _drop(self) -> None:
        """End the connection with a TCP reset, no answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

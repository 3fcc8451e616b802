"""An httpx client whose every exchange is bounded in time and size, and can be aborted at once.

Why: httpx's timeouts are per socket operation. A server (or a middlebox) that sends one byte
every two seconds never trips a 10 s read timeout, so one request could hold a worker, and with
it the uploader's shutdown, for as long as the server likes; and ``response.read()`` takes a body
of any size into memory. Here:

- **deadline**: every socket operation of one exchange (connect, TLS handshake, send, each read
  of the headers and of the body) gets at most the time left until the exchange's deadline, so
  connect + send + receive together end by then (:class:`DeadlineExceeded`, a read timeout). The
  deadline is per thread, so the upload workers sharing one client each have their own;
- **size**: the body is read in pieces and reading stops at ``max_body`` bytes; the client asks
  for ``Accept-Encoding: identity`` and never decodes a compressed body, so a small compressed
  answer cannot expand in memory either (a compressed answer is kept as its raw bytes);
- **abort**: :meth:`BoundedClient.close` shuts every open socket down (``shutdown(SHUT_RDWR)``,
  which wakes a thread blocked in ``recv``, where ``close`` would not) before closing the client,
  so a request in flight fails at once; connecting afterwards fails at once too.

The guard sits below httpcore as its network backend, installed into every connection pool the
client made (the direct one and any proxy from the environment), so the rest of httpx (TLS,
proxies, HTTP/1.1 parsing, exception mapping) is unchanged.

Not covered: name resolution (``getaddrinfo``) cannot be interrupted; a resolver that hangs is
bounded only by the system's resolver timeouts. The uploader's ``stop()`` does not wait for it.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

#: what a response body may hold at most, by default (the API's answers are a few hundred bytes)
DEFAULT_MAX_BODY = 1024 * 1024
#: a write is sent in pieces of this size, each bounded by what is left of the deadline
_WRITE_PIECE = 16 * 1024
_READ_PIECE = 64 * 1024
#: headers dropped from an answer once its body is read here (the body is kept as received)
_BODY_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


class DeadlineExceeded(httpcore.ReadTimeout):
    """The exchange's overall deadline passed (whatever phase it was in)."""


class Aborted(httpcore.ConnectError):
    """The client was closed: no new connection is made."""


def format_size(size: int) -> str:
    """``1048576`` -> ``1 MiB`` (for messages naming the cap)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


class _Guard:
    """The per-thread deadlines and the open sockets of one client."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_GuardedStream] = weakref.WeakSet()
        self.aborted = False

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[float]:
        """Bound every socket operation this thread makes inside the block to end ``seconds`` from now."""
        previous: float | None = getattr(self._local, "deadline", None)
        at = time.monotonic() + seconds
        self._local.deadline = at if previous is None else min(at, previous)
        try:
            yield self._local.deadline
        finally:
            self._local.deadline = previous

    def bound(self, timeout: float | None, what: str) -> float | None:
        """``timeout`` cut to what is left of this thread's deadline; raises once it has passed."""
        if self.aborted:
            raise Aborted("the client is closed")
        at: float | None = getattr(self._local, "deadline", None)
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"the exchange's deadline passed ({what})")
        return left if timeout is None else min(timeout, left)

    def track(self, stream: _GuardedStream) -> None:
        with self._lock:
            self._streams.add(stream)
            aborted = self.aborted
        if aborted:  # closed while this connection was being made
            stream.shutdown()

    def forget(self, stream: _GuardedStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            streams = list(self._streams)
        for stream in streams:
            stream.shutdown()


class _GuardedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, guard: _Guard) -> None:
        self._inner = inner
        self._guard = guard
        guard.track(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        bounded = self._guard.bound(timeout, "reading the answer")
        try:
            return self._inner.read(max_bytes, bounded)
        except httpcore.ReadTimeout as exc:
            if bounded is not None and (timeout is None or bounded < timeout):
                raise DeadlineExceeded("the exchange's deadline passed (reading the answer)") from exc
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        for start in range(0, len(view), _WRITE_PIECE):
            self._inner.write(bytes(view[start:start + _WRITE_PIECE]),
                              self._guard.bound(timeout, "sending the request"))

    def close(self) -> None:
        self._guard.forget(self)
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._guard.bound(timeout, "the TLS handshake"))
        self._guard.forget(self)
        return _GuardedStream(inner, self._guard)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shutdown(self) -> None:
        """Wake any thread blocked on this socket: its read returns at once (EOF or an error)."""
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _GuardedBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, guard: _Guard) -> None:
        self._inner = inner
        self._guard = guard

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self._guard.bound(timeout, "connecting"), local_address,
                                         socket_options)
        return _GuardedStream(stream, self._guard)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, self._guard.bound(timeout, "connecting"), socket_options)
        return _GuardedStream(stream, self._guard)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    """One exchange's outcome: the response with its body read (up to the cap)."""

    response: httpx.Response
    #: the body went past the cap: ``response.content`` holds only its first ``max_body`` bytes
    truncated: bool


class BoundedClient:
    """An ``httpx.Client`` for one endpoint whose exchanges end by a deadline and read at most ``max_body``."""

    def __init__(self, *, timeout: httpx.Timeout, verify: ssl.SSLContext | bool = True,
                 headers: dict[str, str] | None = None, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._guard = _Guard()
        self._client = httpx.Client(timeout=timeout, verify=verify, follow_redirects=False,
                                    headers={**(headers or {}), "Accept-Encoding": "identity"})
        self._install(self._client)

    def _install(self, client: httpx.Client) -> None:
        """Put the guard under every connection pool of ``client`` (httpx builds them in its constructor)."""
        transports = [client._transport, *client._mounts.values()]  # private: httpx has no public hook
        for transport in transports:
            if transport is None:
                continue
            pool = getattr(transport, "_pool", None)
            backend = getattr(pool, "_network_backend", None)
            if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(backend, httpcore.NetworkBackend):
                raise RuntimeError(f"httpx {httpx.__version__}: cannot bound its requests (its transport "
                                   f"{type(transport).__name__} has no httpcore pool where expected)")
            pool._network_backend = _GuardedBackend(backend, self._guard)

    def exchange(self, method: str, url: str, *, deadline: float, content: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Answer:
        """One request and its answer, all within ``deadline`` seconds; the body read up to the cap.

        Raises httpx's exceptions (a passed deadline is an ``httpx.ReadTimeout`` whose cause is
        :class:`DeadlineExceeded`; see :func:`deadline_passed`)."""
        request = self._client.build_request(method, url, content=content, headers=headers)
        with self._guard.deadline(deadline):
            response = self._client.send(request, stream=True)
            try:
                body, truncated = self._read(response)
            finally:
                response.close()
        kept = [(name, value) for name, value in response.headers.raw if name.lower() not in _BODY_HEADERS]
        answer = httpx.Response(response.status_code, headers=kept, content=body, request=request,
                                extensions={k: v for k, v in response.extensions.items() if k == "reason_phrase"})
        return Answer(answer, truncated)

    def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        pieces: list[bytes] = []
        size = 0
        for piece in response.iter_raw(_READ_PIECE):
            room = self.max_body - size
            if len(piece) > room:
                pieces.append(piece[:room])
                return b"".join(pieces), True
            pieces.append(piece)
            size += len(piece)
        return b"".join(pieces), False

    def close(self) -> None:
        """Abort every exchange in flight (their sockets are shut down) and close the client."""
        self._guard.abort()
        self._client.close()


def deadline_passed(exc: BaseException) -> bool:
    """Whether an httpx timeout was the exchange's overall deadline rather than one slow operation."""
    return any(isinstance(e, DeadlineExceeded) for e in _chain(exc))


def aborted(exc: BaseException) -> bool:
    return any(isinstance(e, Aborted) for e in _chain(exc))


def tls_verification_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind an httpx connect error, if that is what it was."""
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return e
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__

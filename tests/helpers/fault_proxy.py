"""A TCP proxy whose behaviour is switched at runtime: the network faults of the fault matrix.

Put it between clients and a server (the bridge and the uploader in front of Mosquitto, or the
uploader in front of the Atomscale emulator) and flip :attr:`FaultProxy.mode`:

- ``pass``: bytes go both ways as they come.
- ``blackhole``: the network stops answering. Nothing is read or forwarded on any connection, so
  bytes already sent wait in the kernel's buffers like unacknowledged TCP segments; a new
  connection is accepted and held without reaching the server. Clients notice only through their
  own timeouts (MQTT keepalive, HTTP timeouts). Switching back to ``pass`` delivers the held
  bytes intact, as TCP does when a partition heals before its retransmissions give up; a client
  that gave up meanwhile has closed its end, and that close is forwarded after its stale bytes.
- ``reset``: every connection, open or new, is answered with a TCP reset (RST).
- ``delay``: each chunk (one ``recv`` of at most :attr:`FaultProxy.chunk` bytes) is held
  :attr:`FaultProxy.delay` seconds before it is forwarded, one chunk after another in each
  direction: latency, and a throughput cap of ``chunk / delay`` bytes per second per direction.

One selector thread owns every socket, so a mode change is applied by that thread on its next
turn (it is woken at once); no socket is ever closed under another thread's feet. A connection
to the server that cannot be made (the server is down) is answered with a reset, as a refused
connection would be.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

Mode = Literal["pass", "blackhole", "reset", "delay"]
MODES: tuple[Mode, ...] = ("pass", "blackhole", "reset", "delay")


@dataclass
class _Pending:
    """One chunk read from a side, waiting to be written to the other."""

    data: bytes
    due: float
    sent: int = 0


@dataclass
class _Direction:
    """Bytes flowing from ``src`` to ``dst`` of one connection: at most one chunk in hand."""

    pending: _Pending | None = None
    eof: bool = False  # src said FIN
    shut: bool = False  # the FIN was passed on to dst


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket | None = None
    connecting: bool = False
    up: _Direction = field(default_factory=_Direction)  # client -> server
    down: _Direction = field(default_factory=_Direction)  # server -> client


class FaultProxy:
    """``FaultProxy(host, port).start()`` listens on ``proxy.host:proxy.port`` and forwards to host:port."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0,
                 chunk: int = 65536) -> None:
        self.target = (target_host, target_port)
        self.chunk = chunk
        self._mode: Mode = "pass"
        self._delay = 0.0
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, port))
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._connections: list[_Connection] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: connections accepted, connections reset by the ``reset`` mode, bytes forwarded each way
        self.accepted = 0
        self.resets = 0
        self.bytes_up = 0
        self.bytes_down = 0

    # ------------------------------------------------------------------ control

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def delay(self) -> float:
        return self._delay

    def set_mode(self, mode: Mode, delay: float | None = None) -> None:
        """Switch to ``mode`` now (``delay``: seconds per chunk, for ``delay`` mode)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if delay is not None and delay < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._mode = mode
            if delay is not None:
                self._delay = delay
        self._wake()

    def active(self) -> int:
        """Connections open through the proxy right now."""
        with self._lock:
            return len(self._connections)

    def start(self) -> Self:
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._waker_r, selectors.EVENT_READ, "waker")
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection (FIN) and stop listening."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for conn in list(self._connections):
            self._close(conn, reset=False)
        self._selector.close()
        for sock in (self._listener, self._waker_r, self._waker_w):
            sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._waker_w.send(b"x")

    # ------------------------------------------------------------------ the selector thread

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                mode, delay = self._mode, self._delay
            now = time.monotonic()
            for conn in list(self._connections):
                self._tend(conn, mode, now)
            timeout = self._register_interest(mode, now)
            for key, events in self._selector.select(timeout):
                if key.data == "waker":
                    with contextlib.suppress(OSError):
                        while self._waker_r.recv(4096):
                            pass
                elif key.data == "listener":
                    self._accept()
                else:
                    conn, side = key.data
                    self._serve(conn, side, events, mode, delay)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            # the mode as of now, after the accept: a client that connected after a switch sees the new mode
            mode = self._mode
            client.setblocking(False)
            self.accepted += 1
            if mode == "reset":
                self._rst(client)
                self.resets += 1
                continue
            with self._lock:
                self._connections.append(_Connection(client))

    def _tend(self, conn: _Connection, mode: Mode, now: float) -> None:
        """Apply the mode to one connection: reset it, or reach the server once the path is open."""
        if mode == "reset":
            self._close(conn, reset=True)
            self.resets += 1
            return
        if conn.upstream is None and mode != "blackhole":
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            code = upstream.connect_ex(self.target)
            if code not in (0, errno.EINPROGRESS):
                upstream.close()
                self._close(conn, reset=True)  # the server is down: refused, as it would be without us
                return
            conn.upstream, conn.connecting = upstream, code != 0
        if conn.up.shut and conn.down.shut:
            self._close(conn, reset=False)

    def _register_interest(self, mode: Mode, now: float) -> float:
        """(Re)register each socket for what it should do this turn; the time until the next due chunk."""
        timeout = 1.0
        for conn in self._connections:
            wants: dict[socket.socket, int] = {conn.client: 0}
            if conn.upstream is not None:
                wants[conn.upstream] = 0
            if mode != "blackhole" and conn.upstream is not None:
                if conn.connecting:
                    wants[conn.upstream] |= selectors.EVENT_WRITE
                else:
                    for src, dst, d in ((conn.client, conn.upstream, conn.up), (conn.upstream, conn.client, conn.down)):
                        if d.pending is None:
                            if not d.eof:
                                wants[src] |= selectors.EVENT_READ
                        elif d.pending.due <= now:
                            wants[dst] |= selectors.EVENT_WRITE
                        else:
                            timeout = min(timeout, d.pending.due - now)
            for sock, events in wants.items():
                side = "client" if sock is conn.client else "upstream"
                self._set_interest(sock, events, (conn, side))
        return max(timeout, 0.0)

    def _set_interest(self, sock: socket.socket, events: int, data: object) -> None:
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, data)
            return
        if not events:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, data)

    def _serve(self, conn: _Connection, side: str, events: int, mode: Mode, delay: float) -> None:
        if conn not in self._connections or mode == "blackhole":
            return
        assert conn.upstream is not None
        if conn.connecting:
            code = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._close(conn, reset=True)  # the server refused or is gone
                return
            conn.connecting = False
            return
        src, d = (conn.client, conn.up) if side == "client" else (conn.upstream, conn.down)
        try:
            if events & selectors.EVENT_READ and d.pending is None and not d.eof:
                data = src.recv(self.chunk)
                if data:
                    due = time.monotonic() + (delay if mode == "delay" else 0.0)
                    d.pending = _Pending(data, due)
                else:
                    d.eof = True
            # the writing side of this socket carries the other direction
            back = conn.down if side == "client" else conn.up
            if events & selectors.EVENT_WRITE and back.pending is not None:
                pending = back.pending
                sent = src.send(pending.data[pending.sent:])
                pending.sent += sent
                if side == "client":
                    self.bytes_down += sent
                else:
                    self.bytes_up += sent
                if pending.sent == len(pending.data):
                    back.pending = None
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn, reset=True)  # one side reset or broke: the other side learns the same way
            return
        for direction, target in ((conn.up, conn.upstream), (conn.down, conn.client)):
            if direction.eof and direction.pending is None and not direction.shut:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                direction.shut = True

    def _close(self, conn: _Connection, *, reset: bool) -> None:
        with self._lock:
            if conn not in self._connections:
                return
            self._connections.remove(conn)
        for sock in (conn.client, conn.upstream):
            if sock is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if reset:
                self._rst(sock)
            else:
                sock.close()

    @staticmethod
    def _rst(sock: socket.socket) -> None:
        """Close with SO_LINGER 0: the peer gets a RST instead of a FIN."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

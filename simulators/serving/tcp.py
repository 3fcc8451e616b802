"""Serving simulated devices on a TCP port, like a LAN instrument or a serial device server (``socket://``)."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Self

from simulators.serving.link import TICK, ByteDevice, Link, Writer
from simulators.serving.server import JOIN_TIMEOUT, ServerBase, Session, Waker, guard

log = logging.getLogger("simulators.serving")


class _TcpConnection:
    def __init__(self, sock: socket.socket, device: ByteDevice, link: Link, tick: float) -> None:
        self.sock = sock
        self.session = Session(device, link, tick)
        self.waker = Waker()
        self.drop = threading.Event()
        self.ready = False  # the device has been told about the connection
        self.reset = False
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None


class TcpServer(ServerBase):
    """Serves byte devices on a TCP port, like a LAN gauge controller or a serial device server.

    ``device_factory`` is called once per accepted connection: return a new device for
    independent connections, or the same instance to keep one instrument's state across
    reconnects (then serve one client at a time, as the real instrument would).
    :attr:`url` is a pyserial URL (``socket://127.0.0.1:PORT``), so drivers use the same code
    path as for a real ``socket://`` instrument.

    pyserial's ``socket://`` handler drains its input right after connecting, so whatever a
    device says at once would never be seen (garbage at connect, the mid-stream line of a
    power-up stream). The device is therefore told ``connected`` ``connect_settle`` seconds
    after the accept, or at the client's first byte if that comes sooner.

    :meth:`drop_connections` simulates a network failure: each client socket is closed (FIN, or
    RST with ``reset=True``) and the client's next read raises. The listener stays up, so a
    driver can reconnect.
    """

    def __init__(
        self,
        device_factory: Callable[[], ByteDevice],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        split: bool = False,
        delay: float = 0.0,
        tick: float = TICK,
        connect_settle: float = 0.1,
    ) -> None:
        super().__init__(split=split, delay=delay, tick=tick)
        self.device_factory = device_factory
        self.host = host
        self.connect_settle = connect_settle
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._accept_finished = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[_TcpConnection] = []
        self._changed = threading.Condition(self._lock)

    # ------------------------------------------------------------------ public

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("TcpServer not started")
        return self._port

    @property
    def url(self) -> str:
        """``socket://host:port`` for ``serial.serial_for_url``."""
        return f"socket://{self.host}:{self.port}"

    @property
    def devices(self) -> list[ByteDevice]:
        """Devices of the connections alive now, oldest first."""
        with self._lock:
            return [c.session.device for c in self._connections if c.ready]

    @property
    def links(self) -> list[Link]:
        """Links of the connections alive now (flip ``split``/``delay`` at run time)."""
        with self._lock:
            return [c.session.link for c in self._connections if c.ready]

    def wait_for_clients(self, count: int = 1, timeout: float = 2.0) -> bool:
        """Block until at least ``count`` connections are being served."""
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(c.ready for c in self._connections) >= count, timeout
            )

    def start(self) -> Self:
        self._check_not_started()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self._requested_port))
            listener.listen(8)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._start_serving(self._accept_loop, f"tcp-server {self.url}")
        return self

    def drop_connections(self, *, reset: bool = False) -> None:
        """Close every client connection now (network failure); waits until they are closed."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.reset = reset
            conn.drop.set()
            conn.waker.wake()
        for conn in connections:
            conn.finished.wait(JOIN_TIMEOUT)
            if conn.thread is not None:
                conn.thread.join(JOIN_TIMEOUT)

    def stop(self) -> None:
        """Stop accepting, drop every client, release the port; safe to call twice."""
        self._stop.set()
        if self._waker is not None:
            self._waker.wake()
        if self._thread is not None:
            self._accept_finished.wait(JOIN_TIMEOUT)
            self._thread.join(JOIN_TIMEOUT)
        self.drop_connections()
        self._close_waker()

    # ------------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._waker is not None
        listener = self._listener
        waker = self._waker
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(waker.rfd, select.POLLIN)
        try:
            while not self._stop.is_set():
                poller.poll()
                waker.drain()
                if self._stop.is_set():
                    break
                try:
                    sock, peer = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    log.warning("accept failed: %s", exc)
                    continue
                self._serve(sock, peer)
        finally:
            listener.close()
            self._listener = None
            self._accept_finished.set()

    def _serve(self, sock: socket.socket, peer: object) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            device = self.device_factory()
        except Exception:
            log.exception("device factory failed; refusing connection from %s", peer)
            sock.close()
            return
        link = self._new_link(_socket_writer(sock))
        conn = _TcpConnection(sock, device, link, self.tick)
        conn.thread = threading.Thread(
            target=self._connection_loop, args=(conn,), name=f"tcp-conn {peer}", daemon=True
        )
        # Registered before the thread runs, so that a stop() racing this accept still drops it.
        with self._lock:
            self._connections.append(conn)
        conn.thread.start()

    def _tell_connected(self, conn: _TcpConnection) -> None:
        guard(conn.session.device.connected, conn.session.link)
        with self._changed:
            conn.ready = True
            self._changed.notify_all()
        conn.session.service(time.monotonic())

    def _connection_loop(self, conn: _TcpConnection) -> None:
        session = conn.session
        sock = conn.sock
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(conn.waker.rfd, select.POLLIN)
        connect_at = time.monotonic() + self.connect_settle
        try:
            while not (conn.drop.is_set() or session.link.closed):
                now = time.monotonic()
                if not conn.ready and now >= connect_at:
                    self._tell_connected(conn)
                timeout = session.timeout(now) if conn.ready else connect_at - now
                poller.poll(max(0.0, timeout) * 1000)
                conn.waker.drain()
                if conn.drop.is_set():
                    break
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError as exc:
                    log.debug("connection lost: %s", exc)
                    break
                if data == b"":  # the client closed its end
                    break
                if data:
                    if not conn.ready:
                        self._tell_connected(conn)
                    guard(session.device.received, data)
                if conn.ready:
                    session.service(time.monotonic())
        finally:
            session.link.close()
            with self._changed:
                self._connections.remove(conn)
                self._changed.notify_all()
            if conn.ready:
                guard(session.device.disconnected)
            if conn.reset:
                # Linger 0: close sends RST, as a crashed device server or a firewall would.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            conn.waker.close()
            conn.finished.set()


def _socket_writer(sock: socket.socket) -> Writer:
    def write(data: bytes) -> int:
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0

    return write

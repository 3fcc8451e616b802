"""Byte-stream plumbing shared by every serial-style simulator (TPG, MKS, IMPAC, ...).

A simulated instrument is a :class:`ByteDevice`: a pure state machine that is told when a host
connects, gets the host's bytes, is ticked so that it can produce time-driven output (streams),
and answers through a :class:`Link`. The servers here own the file descriptors and threads, so a
protocol module never touches a socket and can be unit-tested byte for byte with a
:class:`MemoryLink` and a fake clock.

Transport faults that every instrument shares live on the :class:`Link` (replies split into small
pieces, replies held back); protocol faults (garbage, silence, NAKs) live in the device.

Threading: each server runs one daemon thread per connection (plus one accept thread for TCP).
Only that thread reads, ticks the device and closes descriptors; other threads (tests, a chamber
model) may call ``Link.send`` and device knobs at any time, so the device must lock its own state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import select
import socket
import struct
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

log = logging.getLogger("simulators.serving")

#: Default tick period: fine enough for 100 ms streams, coarse enough to cost nothing.
TICK = 0.01

#: How long a server thread may take to notice a stop request; ``stop()`` waits this long.
JOIN_TIMEOUT = 0.5

# Writers return how many bytes the transport took (0 when it would block) and raise OSError
# when the peer is gone.
Writer = Callable[[bytes], int]
Clock = Callable[[], float]


class ByteDevice(Protocol):
    """What a server drives. All four calls come from the server thread of one connection."""

    def connected(self, link: Link) -> None:
        """A host is now attached; everything the device says goes through ``link``."""

    def received(self, data: bytes) -> None:
        """Bytes from the host, cut wherever the transport cut them (never assume whole lines)."""

    def tick(self, now: float) -> None:
        """Called every ``TICK`` or so with ``time.monotonic()``; for streams and timed output."""

    def disconnected(self) -> None:
        """The host is gone (closed the port, dropped, unplugged).

        The connection's link is already closed when this is called, so a device shared by
        several connections (one factory result reused) can tell whether the link it talks
        through now belongs to a newer, live connection and keep it.
        """


@dataclass
class _Piece:
    due: float
    data: bytes


class Link:
    """The device's way out: queues replies and lets them leave when the fault knobs allow.

    ``split`` (cut every message into 1-3 byte pieces a few ms apart) reproduces the TCP
    serial servers and USB adapters that deliver a reply across many reads; ``delay`` holds each
    message back, for drivers whose timeouts need proving. Both are plain attributes and may be
    flipped while the server runs. Message order is always kept: a later message never overtakes
    an earlier, delayed one.

    ``send`` is thread-safe and writes whatever is already due at once; the server thread calls
    :meth:`pump` to write pieces that fall due later. A write error marks the link closed (the
    server then ends the session) instead of raising into whoever happened to call ``send``.
    """

    def __init__(
        self,
        write: Writer,
        *,
        split: bool = False,
        delay: float = 0.0,
        clock: Clock = time.monotonic,
        seed: int | None = None,
        max_backlog: int = 65536,
    ) -> None:
        self.split = split
        self.delay = delay
        #: Piece sizes (inclusive range, bytes) and gaps between pieces (seconds) when splitting.
        self.split_sizes: tuple[int, int] = (1, 3)
        self.split_gap: tuple[float, float] = (0.002, 0.006)
        self._write = write
        self._clock = clock
        self._rng = random.Random(seed)
        # A host that never reads must not make the simulator grow without bound; beyond this
        # the oldest output is dropped, as it would be on a serial line nobody listens to.
        self._max_backlog = max_backlog
        self._queue: deque[_Piece] = deque()
        self._queued = 0
        self._tail = float("-inf")
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Bytes accepted by :meth:`send` but not yet handed to the transport."""
        with self._lock:
            return self._queued

    def send(self, data: bytes, *, split: bool = False, delay: float = 0.0) -> None:
        """Queue one message; ``split``/``delay`` add to the link-wide knobs for this message."""
        if not data:
            return
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            due = max(now + self.delay + delay, self._tail)
            pieces = self._cut(data, due) if split or self.split else [_Piece(due, data)]
            self._queue.extend(pieces)
            self._queued += len(data)
            self._tail = pieces[-1].due
            self._trim()
        self.pump(now)

    def _cut(self, data: bytes, due: float) -> list[_Piece]:
        lo, hi = self.split_sizes
        gap_lo, gap_hi = self.split_gap
        pieces = []
        pos = 0
        while pos < len(data):
            size = self._rng.randint(lo, hi)
            pieces.append(_Piece(due, data[pos : pos + size]))
            pos += size
            due += self._rng.uniform(gap_lo, gap_hi)
        return pieces

    def _trim(self) -> None:
        while self._queued > self._max_backlog and len(self._queue) > 1:
            self._queued -= len(self._queue.popleft().data)

    def next_due(self) -> float | None:
        """When the next queued piece may leave, or None when nothing is queued."""
        with self._lock:
            return self._queue[0].due if self._queue else None

    def pump(self, now: float | None = None) -> None:
        """Hand every piece that is due to the transport (in order); keep the rest."""
        with self._lock:
            if now is None:
                now = self._clock()
            while self._queue and not self._closed and self._queue[0].due <= now:
                piece = self._queue[0]
                try:
                    taken = self._write(piece.data)
                except OSError as exc:
                    log.debug("link write failed: %s", exc)
                    self._close_locked()
                    return
                self._queued -= taken
                if taken < len(piece.data):
                    # Transport full (host not reading): retry on the next pump.
                    piece.data = piece.data[taken:]
                    return
                self._queue.popleft()

    def close(self) -> None:
        """Drop everything queued; later sends are ignored."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._closed = True
        self._queue.clear()
        self._queued = 0


class MemoryLink(Link):
    """A link into a buffer, for byte-exact unit tests of protocol state machines.

    With the default knobs, output appears in :attr:`output` synchronously inside ``send``;
    with ``split``/``delay`` and a fake ``clock``, call :meth:`pump` after advancing the clock.
    """

    def __init__(
        self,
        *,
        split: bool = False,
        delay: float = 0.0,
        clock: Clock = time.monotonic,
        seed: int | None = 0,
    ) -> None:
        self.output = bytearray()
        #: Every write the transport saw, to check how a reply was cut.
        self.writes: list[bytes] = []
        super().__init__(self._collect, split=split, delay=delay, clock=clock, seed=seed)

    def _collect(self, data: bytes) -> int:
        self.output += data
        self.writes.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        """Everything written so far, and forget it."""
        with self._lock:
            data = bytes(self.output)
            self.output.clear()
            self.writes.clear()
            return data


class _Waker:
    """A self-pipe so that another thread can interrupt a server thread's ``poll``."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wfd, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.rfd, 512):
                pass

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Session:
    """Tick and pump bookkeeping for one connected device."""

    def __init__(self, device: ByteDevice, link: Link, tick: float) -> None:
        self.device = device
        self.link = link
        self.tick = tick
        self.next_tick = time.monotonic()

    def service(self, now: float) -> None:
        if now >= self.next_tick:
            _guard(self.device.tick, now)
            self.next_tick = now + self.tick
        self.link.pump(now)

    def timeout(self, now: float) -> float:
        """Seconds until something is due (a tick or a queued piece)."""
        due = self.link.next_due()
        # A piece already due is stuck behind a full transport: retry on the next tick rather
        # than spin.
        wake_at = self.next_tick if due is None or due <= now else min(self.next_tick, due)
        return max(0.0, wake_at - now)


def _guard(call: Callable[..., None], *args: object) -> None:
    """A buggy device must not kill the server thread: log and keep serving."""
    try:
        call(*args)
    except Exception:
        log.exception("simulated device raised in %s", getattr(call, "__name__", call))


def _start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class _Server:
    """What both servers share: the link faults, a thread with a waker, the ``with`` statement."""

    def __init__(self, *, split: bool, delay: float, tick: float) -> None:
        self.tick = tick
        self._split = split
        self._delay = delay
        self._waker: _Waker | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_not_started(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")

    def _start_serving(self, target: Callable[[], None], name: str) -> None:
        self._waker = _Waker()
        self._thread = _start_thread(target, name)

    def _close_waker(self) -> None:
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    def _new_link(self, write: Writer) -> Link:
        return Link(write, split=self._split, delay=self._delay)


# ---------------------------------------------------------------------------------------- pty


class PtyServer(_Server):
    """Serves one device on a pseudo-terminal; open :attr:`port` with pyserial like a real port.

    The slave is put in raw mode at once (a fresh pty echoes and turns CR into LF) and then closed
    by the server, so that the master reports a hang-up while no host has the port open. That is
    how the server knows when a host connects: the device is ``connected`` only once a host has
    opened the port and pyserial has flushed its input (seen as a packet-mode flush notice, or
    after ``open_settle`` seconds for other clients). Output written before that flush would be
    thrown away by pyserial, so a device's "port opened mid-stream" line would never be seen.
    Closing the port calls ``disconnected``; reopening it connects again.

    :meth:`unplug` closes the master: the host's next read or write raises (pyserial:
    ``SerialException``), like a USB adapter pulled out. A pty cannot be plugged back in under the
    same name, so there is no ``replug``; start a new server (new :attr:`port`) instead.
    """

    def __init__(
        self,
        device: ByteDevice,
        *,
        split: bool = False,
        delay: float = 0.0,
        tick: float = TICK,
        open_settle: float = 0.1,
    ) -> None:
        super().__init__(split=split, delay=delay, tick=tick)
        self.device = device
        self.open_settle = open_settle
        self._master: int | None = None
        self._port: str | None = None
        self._unplug = threading.Event()
        self._connected = threading.Event()
        self._finished = threading.Event()
        self._link: Link | None = None

    # ------------------------------------------------------------------ public

    @property
    def port(self) -> str:
        """The slave path (e.g. ``/dev/pts/7``) to hand to pyserial."""
        if self._port is None:
            raise RuntimeError("PtyServer not started")
        return self._port

    @property
    def link(self) -> Link | None:
        """The current host's link (to flip ``split``/``delay`` at run time), None when idle."""
        return self._link

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float = 2.0) -> bool:
        """Block until a host has opened the port and the device was told so."""
        return self._connected.wait(timeout)

    def start(self) -> Self:
        self._check_not_started()
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            self._port = os.ttyname(slave)
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        # Packet mode: reads from the master carry a status byte, which reports the slave's
        # input flush that pyserial does when it opens the port.
        fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
        self._master = master
        self._start_serving(self._run, f"pty-server {self._port}")
        return self

    def unplug(self) -> None:
        """Pull the cable: close the master so the host gets an I/O error; waits until done."""
        self._unplug.set()
        self._wake_and_wait()

    def stop(self) -> None:
        """Stop serving and release the pty; safe to call twice or after :meth:`unplug`."""
        self._stop.set()
        self._wake_and_wait()
        self._close_waker()

    # ------------------------------------------------------------------ thread

    def _wake_and_wait(self) -> None:
        if self._thread is None:
            return
        if self._waker is not None:
            self._waker.wake()
        self._finished.wait(JOIN_TIMEOUT)
        self._thread.join(JOIN_TIMEOUT)

    def _write(self, data: bytes) -> int:
        if self._master is None:
            raise OSError(errno.EIO, "pty closed")
        try:
            # The leading byte is not needed on writes: packet mode only frames reads.
            return os.write(self._master, data)
        except BlockingIOError:
            return 0

    def _run(self) -> None:
        assert self._master is not None and self._waker is not None
        master = self._master
        waker = self._waker
        session: _Session | None = None
        opened_at: float | None = None  # host opened the port, device not yet told
        poller = select.poll()
        poller.register(master, select.POLLIN | select.POLLPRI)
        poller.register(waker.rfd, select.POLLIN)
        idle = select.poll()
        idle.register(waker.rfd, select.POLLIN)
        try:
            while not (self._stop.is_set() or self._unplug.is_set()):
                now = time.monotonic()
                if _hung_up(master):
                    # No host has the port open. Poll only the waker: the master would report
                    # POLLHUP in a tight loop.
                    if session is not None:
                        self._end(session)
                        session = None
                    opened_at = None
                    idle.poll(self.tick * 1000)
                    waker.drain()
                    continue
                if session is None and opened_at is None:
                    opened_at = now
                timeout = self.tick if session is None else session.timeout(now)
                events = dict(poller.poll(timeout * 1000))
                waker.drain()
                now = time.monotonic()
                if events.get(master, 0) & (select.POLLIN | select.POLLPRI):
                    packet = _read_packet(master)
                    if packet is not None:
                        status, data = packet
                        if session is None and (data or status & termios.TIOCPKT_FLUSHREAD):
                            session = self._begin(now)
                            opened_at = None
                        if session is not None and data:
                            _guard(self.device.received, data)
                settled = opened_at is not None and now - opened_at >= self.open_settle
                if session is None and settled:
                    session = self._begin(now)
                    opened_at = None
                if session is not None:
                    session.service(now)
        finally:
            if session is not None:
                self._end(session)
            self._master = None
            with contextlib.suppress(OSError):
                os.close(master)
            self._finished.set()

    def _begin(self, now: float) -> _Session:
        link = self._new_link(self._write)
        self._link = link
        session = _Session(self.device, link, self.tick)
        _guard(self.device.connected, link)
        self._connected.set()
        session.service(now)
        return session

    def _end(self, session: _Session) -> None:
        session.link.close()
        self._link = None
        self._connected.clear()
        _guard(self.device.disconnected)


def _hung_up(fd: int) -> bool:
    probe = select.poll()
    probe.register(fd, 0)
    return any(ev & select.POLLHUP for _, ev in probe.poll(0))


def _read_packet(master: int) -> tuple[int, bytes] | None:
    """One packet-mode read: (status byte, data). None when nothing was there after all."""
    try:
        packet = os.read(master, 4096)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        if exc.errno == errno.EIO:  # the host closed the port between poll and read
            return None
        raise
    if not packet:
        return None
    if packet[0] == 0:  # TIOCPKT_DATA
        return 0, packet[1:]
    return packet[0], b""


# ---------------------------------------------------------------------------------------- TCP


class _TcpConnection:
    def __init__(self, sock: socket.socket, device: ByteDevice, link: Link, tick: float) -> None:
        self.sock = sock
        self.session = _Session(device, link, tick)
        self.waker = _Waker()
        self.drop = threading.Event()
        self.ready = False  # the device has been told about the connection
        self.reset = False
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None


class TcpServer(_Server):
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
        _guard(conn.session.device.connected, conn.session.link)
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
                    _guard(session.device.received, data)
                if conn.ready:
                    session.service(time.monotonic())
        finally:
            session.link.close()
            with self._changed:
                self._connections.remove(conn)
                self._changed.notify_all()
            if conn.ready:
                _guard(session.device.disconnected)
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

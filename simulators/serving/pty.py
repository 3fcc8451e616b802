"""Serving one simulated device on a pseudo-terminal, opened by pyserial like a real serial port."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import struct
import termios
import threading
import time
import tty
from typing import Self

from simulators.serving.link import TICK, ByteDevice, Link
from simulators.serving.server import JOIN_TIMEOUT, ServerBase, Session, guard


class PtyServer(ServerBase):
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
        session: Session | None = None
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
                            guard(self.device.received, data)
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

    def _begin(self, now: float) -> Session:
        link = self._new_link(self._write)
        self._link = link
        session = Session(self.device, link, self.tick)
        guard(self.device.connected, link)
        self._connected.set()
        session.service(now)
        return session

    def _end(self, session: Session) -> None:
        session.link.close()
        self._link = None
        self._connected.clear()
        guard(self.device.disconnected)


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

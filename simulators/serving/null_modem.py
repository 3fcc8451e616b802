"""A virtual null-modem cable between two ptys, so a Modbus RTU server and a host each open their own serial path."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from types import TracebackType
from typing import Self

#: seconds the copying thread may take to start, cut the cable or stop
READY_TIMEOUT = 5.0


class NullModem:
    """Two pty pairs whose masters are joined by a copying thread: a virtual null-modem cable.

    ``server_port`` and ``client_port`` are the two slave paths, each openable by pyserial or
    pymodbus independently. The slaves are made raw at once (a fresh pty echoes and rewrites CR)
    and kept open here, so a master never sees EIO while nobody else has its slave open.
    :meth:`unplug` closes the host side: the host's next read or write fails, as when a USB
    adapter is pulled; a pty cannot come back under the same name, so start a new one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._server_master, self.server_slave_fd = os.openpty()
        self._client_master, self.client_slave_fd = os.openpty()
        self._fds = [self._wake_r, self._wake_w, self._server_master, self.server_slave_fd,
                     self._client_master, self.client_slave_fd]
        for fd in (self.server_slave_fd, self.client_slave_fd):
            tty.setraw(fd)
        self.server_port = os.ttyname(self.server_slave_fd)
        self.client_port = os.ttyname(self.client_slave_fd)
        self._thread: threading.Thread | None = None
        self._unplug = threading.Event()
        self._unplugged = threading.Event()
        #: bytes handed from the server side to the host side so far
        self.delivered = 0

    @property
    def plugged(self) -> bool:
        return not self._unplugged.is_set()

    def _copy(self) -> None:
        peer = {self._server_master: self._client_master, self._client_master: self._server_master}
        while True:
            readable, _, _ = select.select([self._wake_r, *peer], [], [])
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                if self._unplug.is_set() and self.plugged:
                    self._cut()
                    peer = {}
                    continue
                return
            for fd in readable:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: no slave open (cannot happen while we hold them)
                    continue
                if data:
                    with contextlib.suppress(OSError):
                        os.write(peer[fd], data)
                    if fd == self._server_master:
                        self.delivered += len(data)

    def _cut(self) -> None:
        for fd in (self._client_master, self.client_slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
            self._fds.remove(fd)
        self._unplugged.set()

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._copy, name="pty-null-modem", daemon=True)
        self._thread.start()
        return self

    def unplug(self) -> None:
        """Pull the cable on the host side; waits until done."""
        if self._thread is None or not self.plugged:
            return
        self._unplug.set()
        os.write(self._wake_w, b"u")
        self._unplugged.wait(READY_TIMEOUT)

    def stop(self) -> None:
        if self._thread is not None:
            self._unplug.clear()
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            self._thread.join(READY_TIMEOUT)
            self._thread = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

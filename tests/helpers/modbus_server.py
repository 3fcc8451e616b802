"""Real pymodbus servers for transport tests: TCP on 127.0.0.1, RTU on a pair of bridged ptys.

Each server runs its own asyncio loop in a daemon thread and is built from ``SimDevice`` (the
datastore API of pymodbus >= 3.12; the older ``ModbusServerContext`` family warns about v4).
``SimData`` addresses are the request addresses (0-based): no off-by-one as with the deprecated
``ModbusSequentialDataBlock(1, ...)``.

Tests own the server's life: ``stop()`` closes the listener and every connection (what a
crashed instrument or a gateway restart looks like to a client), ``start()`` brings it back on
the same port, ``silent = True`` makes it swallow its replies (the client then times out, as
with a real device that ignores a request).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
import tty
from collections.abc import Callable
from typing import cast

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

READY_TIMEOUT = 5.0

# The device the tests read: distinct tables (coils, discrete inputs, holding, input registers).
HOLDING = [0, 2345, 250, 1000, 0xFFFF, 7, 8, 9, 10, 11]  # 1: Eurotherm PV 234.5
INPUT = [101, 202, 303]
COILS = [True, False, True, True, False, False, False, True]
DISCRETE = [False, True, False, False, True, True, False, False]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_device(unit: int = 1) -> SimDevice:
    """A fresh device: coils/discrete 0..7, holding registers 0..9, input registers 0..2."""
    return SimDevice(id=unit, simdata=(
        [SimData(0, values=list(COILS), datatype=DataType.BITS)],
        [SimData(0, values=list(DISCRETE), datatype=DataType.BITS)],
        [SimData(0, values=list(HOLDING), datatype=DataType.REGISTERS)],
        [SimData(0, values=list(INPUT), datatype=DataType.REGISTERS)],
    ))


class ModbusServerThread:
    """A pymodbus TCP server (``serial_port=None``) or RTU server on ``serial_port``."""

    def __init__(self, device_factory: Callable[[], SimDevice] = make_device, *,
                 port: int | None = None, serial_port: str | None = None,
                 baudrate: int = 9600) -> None:
        self.device_factory = device_factory
        self.host = "127.0.0.1"
        self.port = port or 0
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.silent = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        return b"" if sending and self.silent else data

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        server: ModbusTcpServer | ModbusSerialServer
        try:
            if self.serial_port is None:
                server = ModbusTcpServer(self.device_factory(), address=(self.host, self.port),
                                         trace_packet=self._trace_packet)
            else:
                server = ModbusSerialServer(self.device_factory(), framer=FramerType.RTU,
                                            port=self.serial_port, baudrate=self.baudrate,
                                            trace_packet=self._trace_packet)
            await server.serve_forever(background=True)
            if self.serial_port is None:
                # the bound port, when asked for port 0; kept so that start() after stop() reuses it
                listener = cast(asyncio.Server, server.transport)  # what create_server returned
                self.port = int(listener.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("server already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),),
                                        name="modbus-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT):
            self.stop()
            raise RuntimeError("pymodbus server did not start")
        if self._error is not None:
            error, self._error = self._error, None
            self._thread.join(READY_TIMEOUT)
            self._thread = None
            raise RuntimeError(f"pymodbus server did not start: {error!r}") from error

    def stop(self) -> None:
        """Close the listener and every client connection; the port can be reused at once."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(event.set)
        thread.join(READY_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("pymodbus server thread did not stop")

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> ModbusServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PtyBridge:
    """Two pty pairs whose masters are joined by a copying thread: a virtual null-modem cable.

    ``server_port`` and ``client_port`` are the two slave paths, each openable by pyserial or
    pymodbus independently. The slaves are made raw at once (a fresh pty echoes and rewrites CR)
    and kept open here, so a master never sees EIO while nobody else has its slave open.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._fds += [self._wake_r, self._wake_w]
        self._server_master, self.server_slave_fd = os.openpty()
        self._client_master, self.client_slave_fd = os.openpty()
        self._fds += [self._server_master, self.server_slave_fd,
                      self._client_master, self.client_slave_fd]
        for fd in (self.server_slave_fd, self.client_slave_fd):
            tty.setraw(fd)
        self.server_port = os.ttyname(self.server_slave_fd)
        self.client_port = os.ttyname(self.client_slave_fd)

    def _copy(self) -> None:
        peer = {self._server_master: self._client_master, self._client_master: self._server_master}
        while True:
            readable, _, _ = select.select([self._wake_r, *peer], [], [])
            if self._wake_r in readable:
                return
            for fd in readable:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: no slave open (cannot happen while we hold them)
                    continue
                if data:
                    os.write(peer[fd], data)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._copy, name="pty-bridge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(READY_TIMEOUT)
            self._thread = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def __enter__(self) -> PtyBridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

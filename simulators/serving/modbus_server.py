"""Simulated Modbus devices on a real pymodbus server: TCP, or RTU over a pty null modem (:mod:`.null_modem`).

* :class:`ModbusServerThread` - a pymodbus server (``SimDevice`` datastore, pymodbus >= 3.12) in
  a daemon thread with its own asyncio loop; TCP on a port, or RTU on a serial path.
  ``trace_packet`` is where replies are suppressed, because pymodbus 3.16.1 answers an unknown
  unit id with exception 0x04 while a real RS-485 slave stays silent (docs/protocols.md 8.1).
* :class:`DeviceServer` - several :class:`~simulators.serving.register_device.RegisterDevice` on
  one server (an RS-485 line, or units behind one TCP gateway), each answering only its own unit id.

Unit ids that no device has are answered by a catch-all ``SimDevice`` (id 0) whose replies are
then dropped, so pymodbus never logs a KeyError for them; broadcasts (unit 0) also get no reply,
as the standard requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, cast

from pymodbus import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.serving.null_modem import READY_TIMEOUT, NullModem
from simulators.serving.register_device import LOG_LIMIT, RegisterDevice


@dataclass(frozen=True)
class Request:
    """One request as the server decoded it (also those for units nobody answers)."""

    unit: int
    function: int
    address: int
    count: int


ContextFactory = Callable[[], SimDevice | list[SimDevice]]


class ModbusServerThread:
    """A pymodbus TCP server (``serial_port=None``) or RTU server on ``serial_port``.

    The server runs its own asyncio loop in a daemon thread. ``stop()`` closes the listener and
    every connection (a crashed instrument or a gateway restart, as a client sees it);
    ``start()`` brings it back on the same port; :meth:`drop_connections` closes the TCP
    connections but keeps listening (a network glitch). ``silent = True`` swallows every reply
    (the client times out); ``answers(unit)`` decides per unit, for subclasses.
    """

    def __init__(self, context: ContextFactory, *, host: str = "127.0.0.1", port: int = 0,
                 serial_port: str | None = None, baudrate: int = 9600, parity: str = "N") -> None:
        self.context = context
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.parity = parity
        #: swallow every reply
        self.silent = False
        #: every request the server decoded, oldest first
        self.requests: list[Request] = []
        #: reply bytes sent / suppressed so far
        self.bytes_sent = 0
        self.replies_dropped = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ hooks

    def answers(self, unit: int) -> bool:
        """Whether a reply to ``unit`` may leave (the line-wide :attr:`silent` aside)."""
        return True

    def request_seen(self, request: Request) -> None:
        """A request was decoded (before it is served); for subclasses."""

    def _unit_of(self, frame: bytes) -> int | None:
        index = 0 if self.serial_port is not None else 6  # RTU address byte / MBAP unit id
        return frame[index] if len(frame) > index else None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        unit = self._unit_of(data)
        with self._lock:
            if self.silent or unit is None or not self.answers(unit):
                self.replies_dropped += 1
                return b""
            self.bytes_sent += len(data)
        return data

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            count = pdu.count or len(pdu.registers) or len(pdu.bits) or 1
            request = Request(pdu.dev_id, pdu.function_code, pdu.address, count)
            with self._lock:
                self.requests.append(request)
                del self.requests[:-LOG_LIMIT]
            self.request_seen(request)
        return pdu

    # ------------------------------------------------------------------ life

    @property
    def where(self) -> str:
        """``host:port`` for TCP, the serial path for RTU."""
        return self.serial_port if self.serial_port is not None else f"{self.host}:{self.port}"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        server: ModbusTcpServer | ModbusSerialServer
        try:
            if self.serial_port is None:
                server = ModbusTcpServer(self.context(), address=(self.host, self.port),
                                         trace_packet=self._trace_packet, trace_pdu=self._trace_pdu)
            else:
                server = ModbusSerialServer(self.context(), framer=FramerType.RTU, port=self.serial_port,
                                            baudrate=self.baudrate, parity=self.parity,
                                            trace_packet=self._trace_packet, trace_pdu=self._trace_pdu)
            await server.serve_forever(background=True)
            if self.serial_port is None:
                # the bound port, when asked for port 0; kept so that start() after stop() reuses it
                listener = cast(asyncio.Server, server.transport)
                self.port = int(listener.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            self._server = None
            await server.shutdown()  # type: ignore[no-untyped-call]

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("server already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),),
                                        name=f"modbus-server {self.where}", daemon=True)
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT):
            self.stop()
            raise RuntimeError("pymodbus server did not start")
        if self._error is not None:
            error, self._error = self._error, None
            self._thread.join(READY_TIMEOUT)
            self._thread = None
            raise RuntimeError(f"pymodbus server did not start: {error!r}") from error
        return self

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

    def drop_connections(self) -> None:
        """Close every TCP client connection now, keep listening (a network failure)."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def drop() -> None:
            for connection in list(server.active_connections.values()):
                connection.close()

        asyncio.run_coroutine_threadsafe(drop(), loop).result(READY_TIMEOUT)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class DeviceServer(ModbusServerThread):
    """Several :class:`RegisterDevice` on one server, each answering only its own unit id.

    ``transport="rtu"`` without ``serial_port`` makes its own :class:`NullModem`: the host opens
    :attr:`host_port` (also what :attr:`where` says). Unit ids nobody has, and silent devices,
    get no reply at all (docs/protocols.md 8.1).
    """

    def __init__(self, devices: RegisterDevice | Sequence[RegisterDevice], *,
                 transport: Literal["tcp", "rtu"] = "tcp", host: str = "127.0.0.1", port: int = 0,
                 serial_port: str | None = None, baudrate: int = 9600, parity: str = "N") -> None:
        self.devices = [devices] if isinstance(devices, RegisterDevice) else list(devices)
        units = [d.unit for d in self.devices]
        if not units or len(set(units)) != len(units):
            raise ValueError(f"devices need distinct unit ids, got {units}")
        self._by_unit = {d.unit: d for d in self.devices}
        self.null_modem: NullModem | None = None
        self._own_modem = transport == "rtu" and serial_port is None
        if transport == "tcp" and serial_port is not None:
            raise ValueError("serial_port is for transport 'rtu'")
        super().__init__(self._context, host=host, port=port, serial_port=serial_port,
                         baudrate=baudrate, parity=parity)
        if self._own_modem:
            self._new_modem()

    def _new_modem(self) -> None:
        self.null_modem = NullModem()
        self.serial_port = self.null_modem.server_port

    def device(self, unit: int) -> RegisterDevice:
        return self._by_unit[unit]

    @property
    def host_port(self) -> str:
        """What a host opens: the null modem's host side, the serial path, or ``host:port``."""
        if self.null_modem is not None:
            return self.null_modem.client_port
        return self.where

    def answers(self, unit: int) -> bool:
        device = self._by_unit.get(unit)
        return device is not None and not device.silent

    def request_seen(self, request: Request) -> None:
        device = self._by_unit.get(request.unit)
        if device is not None:
            device.note_request(request.function, request.address, request.count)

    def _context(self) -> list[SimDevice]:
        catch_all = SimDevice(id=0, simdata=[SimData(0, datatype=DataType.INVALID)])
        return [*(d.sim_device() for d in self.devices), catch_all]

    def start(self) -> Self:
        """Serve; an RTU server on its own null modem gets a fresh one (a new host path)."""
        if self._own_modem:
            if self.null_modem is None:
                self._new_modem()
            assert self.null_modem is not None
            self.null_modem.start()
        try:
            return super().start()
        except BaseException:
            self._stop_modem()
            raise

    def stop(self) -> None:
        super().stop()
        self._stop_modem()

    def _stop_modem(self) -> None:
        if self.null_modem is not None:
            self.null_modem.stop()
            self.null_modem = None

    def unplug(self) -> None:
        """Disconnect the host: pull the RTU cable, or drop every TCP connection."""
        if self.null_modem is not None:
            self.null_modem.unplug()
        else:
            self.drop_connections()

    def delivered(self) -> bool:
        """Every reply sent so far has reached the host side of the line (RTU); True on TCP."""
        with self._lock:
            sent = self.bytes_sent
        return self.null_modem is None or self.null_modem.delivered >= sent

"""Simulated Modbus devices on a real pymodbus server: TCP, or RTU over a pty null-modem cable.

Three layers, each usable on its own:

* :class:`RegisterDevice` - one device (one unit id) as a pure state machine: four tables of
  values, a :meth:`~RegisterDevice.serve` call that answers one request (values or an exception
  code), hooks for dynamics (:meth:`~RegisterDevice.update`, called before every request) and
  for host writes, and fault knobs as plain attributes. No sockets, no loop: unit tests call
  ``serve`` directly. :class:`MappedDevice` fills one from a register map (the ``modbus``
  driver's config), with named values and a per-value source hook for a chamber model.
* :class:`ModbusServerThread` - a pymodbus server (``SimDevice`` datastore, pymodbus >= 3.12) in
  a daemon thread with its own asyncio loop; TCP on a port, or RTU on a serial path. The
  ``SimDevice`` action callback is where a :class:`RegisterDevice` answers (so dynamics and
  faults happen per request, as on an instrument); ``trace_packet`` is where replies are
  suppressed, because pymodbus 3.16.1 answers an unknown unit id with exception 0x04 while a
  real RS-485 slave stays silent (docs/protocols.md 8.1).
* :class:`NullModem` - two pty pairs whose masters are joined by a copying thread, so that the
  pymodbus server and a driver each open their own serial path; :meth:`NullModem.unplug` pulls
  the cable on the host side.

:class:`DeviceServer` puts them together: several devices on one server (an RS-485 line, or
units behind one TCP gateway), each answering only its own unit id.

Choices where pymodbus or the devices leave room:

* Unit ids that no device has are answered by a catch-all ``SimDevice`` (id 0) whose replies
  are then dropped, so pymodbus never logs a KeyError for them; broadcasts (unit 0) also get
  no reply, as the standard requires.
* Addresses are validated against the device's own tables (exception 0x02 for anything not
  defined or :meth:`~RegisterDevice.refuse`-d, for a whole request even if only one address is
  missing, as Eurotherm does, docs/protocols.md 6.6.5). Writes to read-only addresses also get 0x02
  (what pymodbus' own ``readonly`` does; the devices' exact answer is [U]).
* A slow reply (:attr:`~RegisterDevice.reply_delay`) is late, not lost: it still goes out after
  the host gave up, as a slow instrument's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from bridge.drivers.common.modbus_codec import BIT_TABLES, RegisterSpec, Table

log = logging.getLogger("simulators.modbus")

Clock = Callable[[], float]
Source = Callable[[], float]

TABLES: tuple[Table, ...] = ("coil", "discrete", "holding", "input")
#: Function code -> table (reads 01-04, writes 05/06/15/16, mask write 22, read/write 23).
FUNCTION_TABLES: dict[int, Table] = {
    1: "coil", 5: "coil", 15: "coil",
    2: "discrete",
    3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding",
    4: "input",
}

ILLEGAL_FUNCTION = int(ExcCodes.ILLEGAL_FUNCTION)
ILLEGAL_ADDRESS = int(ExcCodes.ILLEGAL_ADDRESS)

READY_TIMEOUT = 5.0
LOG_LIMIT = 10_000


@dataclass(frozen=True)
class Request:
    """One request as the server decoded it (also those for units nobody answers)."""

    unit: int
    function: int
    address: int
    count: int


@dataclass(frozen=True)
class Write:
    """A write a device accepted."""

    table: Table
    address: int
    values: tuple[int, ...]


class RegisterDevice:
    """One Modbus device: tables of 16-bit registers and bits, answered request by request.

    Define the map (:meth:`define`) before the device is served; values may change at any time
    (:meth:`set`), from any thread. Subclasses keep dynamic registers current in :meth:`update`
    and react to host writes in :meth:`written`.
    """

    def __init__(self, unit: int = 1, *, clock: Clock = time.monotonic) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit {unit} outside 1..247")
        self.unit = unit
        self._clock = clock
        self._lock = threading.RLock()
        self._tables: dict[Table, dict[int, int]] = {t: {} for t in TABLES}
        self._read_only: set[tuple[Table, int]] = set()
        self._refused: set[tuple[Table, int]] = set()
        self._bit_counts: dict[tuple[int, int], int] = {}
        self._built = False

        # ---- fault knobs: plain attributes, flip them at any time ----
        #: Say nothing at all (dead controller, wrong baud rate, EI-Bisynch instead of Modbus).
        self.silent = False
        #: Seconds before each reply leaves (a slow device); late replies still go out.
        self.reply_delay = 0.0
        #: Answer every request with this exception code (0x04 device failure, 0x06 busy).
        self.exception_code: int | None = None

        #: Writes the device accepted, oldest first.
        self.writes: list[Write] = []

    # ------------------------------------------------------------------ the map

    def define(self, table: Table, address: int, values: Sequence[int], *, read_only: bool = False) -> None:
        """Create addresses ``address...`` holding ``values`` (0..65535, or 0/1 for bits)."""
        if self._built:
            raise RuntimeError("define the register map before the device is served")
        with self._lock:
            for offset, value in enumerate(values):
                key = address + offset
                if not 0 <= key <= 0xFFFF:
                    raise ValueError(f"address {key} outside 0..65535")
                self._tables[table][key] = self._checked(table, value)
                if read_only:
                    self._read_only.add((table, key))

    def set(self, table: Table, address: int, values: Sequence[int]) -> None:
        """Change defined addresses (what the device's own logic would do)."""
        with self._lock:
            for offset, value in enumerate(values):
                if address + offset not in self._tables[table]:
                    raise KeyError(f"{table} {address + offset} is not defined")
                self._tables[table][address + offset] = self._checked(table, value)

    def get(self, table: Table, address: int, count: int = 1) -> list[int]:
        with self._lock:
            return [self._tables[table][a] for a in range(address, address + count)]

    def defined(self, table: Table) -> list[int]:
        """Addresses of ``table``, ascending."""
        with self._lock:
            return sorted(self._tables[table])

    def refuse(self, table: Table, address: int, count: int = 1, refused: bool = True) -> None:
        """Make addresses answer exception 0x02 (a parameter this model lacks); False undoes it."""
        with self._lock:
            keys = {(table, a) for a in range(address, address + count)}
            self._refused = self._refused | keys if refused else self._refused - keys

    @staticmethod
    def _checked(table: Table, value: int) -> int:
        value = int(value)
        if table in BIT_TABLES:
            return 1 if value else 0
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register value {value} outside 0..65535")
        return value

    # ------------------------------------------------------------------ hooks

    def update(self, now: float) -> None:
        """Bring dynamic registers up to date; called (locked) before every request is served."""

    def written(self, table: Table, address: int, values: list[int]) -> None:
        """React to a host write that was accepted (already stored); called locked."""

    # ------------------------------------------------------------------ serving

    def note_request(self, function: int, address: int, count: int) -> None:
        """The decoded request (from the server's PDU trace): the only source of a bit read's
        exact count, since pymodbus hands the action whole 16-bit words of bits."""
        if function in (1, 2):
            with self._lock:
                self._bit_counts[(function, address)] = count

    def serve(self, function: int, address: int, count: int,
              values: Sequence[int] | None = None) -> list[int] | int:
        """Answer one request: the values read (or written), or an exception code."""
        table = FUNCTION_TABLES.get(function)
        if table is None:
            return ILLEGAL_FUNCTION
        with self._lock:
            if self.exception_code is not None:
                return self.exception_code
            addresses = range(address, address + count)
            stored = self._tables[table]
            if any(a not in stored or (table, a) in self._refused for a in addresses):
                return ILLEGAL_ADDRESS
            if values is not None:
                if any((table, a) in self._read_only for a in addresses):
                    return ILLEGAL_ADDRESS
                checked = [self._checked(table, v) for v in values]
                for a, v in zip(addresses, checked, strict=True):
                    stored[a] = v
                self.writes.append(Write(table, address, tuple(checked)))
                del self.writes[:-LOG_LIMIT]
                self.written(table, address, checked)
                return checked
            self.update(self._clock())
            return [stored[a] for a in addresses]

    async def action(self, function: int, start: int, address: int, count: int, registers: list[int],
                     set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus' ``SimDevice`` action: answer through :meth:`serve`, then mirror the values
        into the registers pymodbus is about to send (it applies writes itself)."""
        delay = self.reply_delay
        if delay > 0:
            await asyncio.sleep(delay)
        table = FUNCTION_TABLES.get(function)
        bits = table in BIT_TABLES
        if bits:
            with self._lock:
                noted = self._bit_counts.pop((function, address), None)
            count = len(set_values) if set_values else noted if noted is not None else 1
        reply = self.serve(function, address, count, None if set_values is None else [int(v) for v in set_values])
        if isinstance(reply, int):
            return ExcCodes(reply)
        if set_values is None:
            if bits:
                for offset, value in enumerate(reply):
                    word, bit = divmod(address + offset, 16)
                    mask = 1 << bit
                    i = word - start
                    registers[i] = registers[i] | mask if value else registers[i] & ~mask
            else:
                registers[address - start : address - start + count] = reply
        return None

    def sim_device(self) -> SimDevice:
        """The pymodbus datastore of this device (built per server start)."""
        with self._lock:
            self._built = True
            blocks = tuple(_sim_data(table, self._tables[table]) for table in TABLES)
        return SimDevice(id=self.unit, simdata=cast(tuple[list[SimData], list[SimData], list[SimData], list[SimData]],
                                                    blocks), action=self.action)


def _runs(addresses: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous runs ``(first, count)`` of sorted addresses."""
    runs: list[tuple[int, int]] = []
    for a in sorted(addresses):
        if runs and runs[-1][0] + runs[-1][1] == a:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((a, 1))
    return runs


def _sim_data(table: Table, stored: dict[int, int]) -> list[SimData]:
    """SimData covering exactly the defined addresses (pymodbus refuses the holes itself)."""
    if table in BIT_TABLES:
        if not stored:  # pymodbus needs a block; the device refuses every address in serve()
            return [SimData(0, values=[False], datatype=DataType.BITS)]
        return [SimData(a, values=[bool(stored[a + i]) for i in range(n)], datatype=DataType.BITS)
                for a, n in _runs(stored)]
    if not stored:
        return [SimData(0, datatype=DataType.INVALID)]
    return [SimData(a, values=[stored[a + i] for i in range(n)], datatype=DataType.REGISTERS)
            for a, n in _runs(stored)]


# ---------------------------------------------------------------------- register-map device


@dataclass
class Point:
    """One named value of a :class:`MappedDevice`."""

    name: str
    spec: RegisterSpec
    value: float
    source: Source | None = None


class MappedDevice(RegisterDevice):
    """A device whose registers hold named values from a register map (``RegisterSpec`` each).

    Values are encoded exactly as the ``modbus`` driver decodes them (type, word and byte order,
    scale, offset). Addresses between points are absent (exception 0x02) unless the hole is at
    most ``fill_gaps`` long. With ``wander`` > 0 numbers drift by that relative amplitude (a slow sine,
    period ``period`` seconds) so a standalone simulator looks alive; :meth:`set_source` lets a
    chamber model drive a value instead.
    """

    def __init__(self, points: Sequence[tuple[str, RegisterSpec, float]], unit: int = 1, *,
                 wander: float = 0.0, period: float = 60.0, fill_gaps: int = 0,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(unit, clock=clock)
        self.wander = wander
        self.period = period
        self._t0 = clock()
        self._points: dict[str, Point] = {}
        for name, spec, value in points:
            if name in self._points:
                raise ValueError(f"point {name!r} is defined twice")
            self._points[name] = Point(name, spec, value)
            self.define(spec.table, spec.address, spec.encode(value))
        # Spare addresses reading 0 in holes of up to ``fill_gaps`` between points, as in a
        # PLC's contiguous register block (so a driver's max_gap can read across them).
        for table in TABLES:
            used = self.defined(table)
            for low, high in itertools.pairwise(used):
                if 1 < high - low <= fill_gaps + 1:
                    self.define(table, low + 1, [0] * (high - low - 1))

    @property
    def names(self) -> list[str]:
        return list(self._points)

    def spec(self, name: str) -> RegisterSpec:
        return self._point(name).spec

    def set_value(self, name: str, value: float) -> None:
        """Hold ``name`` at ``value`` (engineering units, exact); ValueError if it does not fit."""
        with self._lock:
            point = self._point(name)
            registers = point.spec.encode(value)  # refuses what the type cannot hold
            point.value, point.source = value, None
            self.set(point.spec.table, point.spec.address, registers)

    def set_source(self, name: str, source: Source | None) -> None:
        """Let ``source()`` give the value of ``name`` at every request (None: back to held)."""
        with self._lock:
            self._point(name).source = source

    def value(self, name: str) -> float:
        """The engineering value the registers of ``name`` hold now."""
        with self._lock:
            self.update(self._clock())
            point = self._point(name)
            return float(point.spec.measurement(self.get(point.spec.table, point.spec.address,
                                                          point.spec.count)).value or 0.0)

    def update(self, now: float) -> None:
        factor = 1.0 + self.wander * math.sin(2 * math.pi * (now - self._t0) / self.period)
        for point in self._points.values():
            if point.source is not None:
                value = point.source()
            elif point.spec.type != "bool" and self.wander:
                value = point.value * factor
            else:
                continue
            try:
                self.set(point.spec.table, point.spec.address, point.spec.encode(value))
            except ValueError:
                log.warning("%s: %r does not fit %s; register unchanged", point.name, value, point.spec.type)

    def _point(self, name: str) -> Point:
        try:
            return self._points[name]
        except KeyError:
            raise KeyError(f"no point {name!r} (known: {', '.join(self._points)})") from None


# ---------------------------------------------------------------------- pty null modem


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


# ---------------------------------------------------------------------- pymodbus server thread

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


__all__ = [
    "DeviceServer", "MappedDevice", "ModbusServerThread", "NullModem", "Point", "RegisterDevice", "Request",
    "Write",
]


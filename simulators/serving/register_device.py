"""A simulated Modbus device as a pure state machine: :class:`RegisterDevice`.

One device (one unit id): four tables of values, a :meth:`~RegisterDevice.serve` call that answers
one request (values or an exception code), hooks for dynamics (:meth:`~RegisterDevice.update`,
called before every request) and for host writes, and fault knobs as plain attributes. No
sockets, no loop: unit tests call ``serve`` directly; :mod:`simulators.serving.modbus_server`
puts devices on a real pymodbus server, whose ``SimDevice`` action callback is where a device
answers (so dynamics and faults happen per request, as on an instrument).

Choices where pymodbus or the devices leave room:

* Addresses are validated against the device's own tables (exception 0x02 for anything not
  defined or :meth:`~RegisterDevice.refuse`-d, for a whole request even if only one address is
  missing, as Eurotherm does, docs/protocols.md 6.6.5). Writes to read-only addresses also get 0x02
  (what pymodbus' own ``readonly`` does; the devices' exact answer is [U]).
* A slow reply (:attr:`~RegisterDevice.reply_delay`) is late, not lost: it still goes out after
  the host gave up, as a slow instrument's would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from bridge.drivers.common.modbus_codec import BIT_TABLES, Table

Clock = Callable[[], float]
#: a value from outside the device, read at every request (a chamber model)
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

#: ``writes`` (and a server's ``requests``) keep at most this many entries (the CLI may serve for days).
LOG_LIMIT = 10_000


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

    def refused(self, table: Table, address: int) -> bool:
        """Whether ``address`` answers exception 0x02 (see :meth:`refuse`)."""
        with self._lock:
            return (table, address) in self._refused

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

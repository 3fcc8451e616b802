"""Modbus block reads, shared by the ``modbus`` and ``eurotherm`` drivers.

Dialogue: the channels' registers are merged into as few reads as the protocol allows (see
:func:`bridge.drivers.common.modbus_codec.plan_blocks`). A device that refuses a read as such
(exception 01, 02 or 03: no such function, no such address, a quantity it does not take) fails
only the channels of that read: the read is repeated channel by channel, the refused channels get
quality ``invalid`` with the exception named, the others their values. That block is read channel
by channel from then on (until the instrument is reconnected), so a missing register costs a few
requests per poll, not a refused read and a retry every poll.
Anything else (silence, a lost link, device failure or busy) fails the whole instrument: the
error is raised for the poller, which owns retries.

:class:`BlockReader` is that dialogue on its own; :class:`ModbusDriver` is the skeleton of a
driver that reads all its channels with it once per poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bridge.drivers.base import Driver, DriverOptions, named
from bridge.drivers.common import modbus_codec as codec
from bridge.errors import BridgeError, DeviceError
from bridge.model import Measurement, Quality
from bridge.transports.modbus import BitTable, ModbusTransport, RegisterTable, exception_name

#: Exception codes that refuse the request itself (function, address, quantity), not the device
#: as a whole: 01 illegal function, 02 illegal data address, 03 illegal data value.
REFUSALS = frozenset({0x01, 0x02, 0x03})

_BIT_TABLES: dict[codec.Table, BitTable] = {"coil": "coils", "discrete": "discrete"}
_REGISTER_TABLES: dict[codec.Table, RegisterTable] = {"holding": "holding", "input": "input"}


@dataclass(frozen=True)
class Fetched:
    """What one span got in one poll: its values, or the refusal; ``at`` = mid-exchange."""

    values: list[int] | list[bool] | None
    at: float
    refused: DeviceError | None = None

    @property
    def refusal(self) -> str:
        """``refused: illegal data address (0x02)`` for a refused span, else empty."""
        if self.refused is None:
            return ""
        code = self.refused.code
        return f"refused: {exception_name(code) if isinstance(code, int) else code}"

    def measurement(self, decode: Callable[[Sequence[int] | Sequence[bool], float], Measurement],
                    units: str) -> Measurement:
        """``decode(values, at)``, or the refusal as quality ``invalid`` (no value)."""
        if self.values is None:
            return Measurement(None, Quality.INVALID, units, self.refusal, self.at)
        return decode(self.values, self.at)


class BlockReader:
    """Reads spans of registers or bits in planned blocks; a refused block is split per span.

    ``unit`` overrides the transport's configured unit (several devices on one RTU line share
    one transport); None uses the transport's own. Messages go to the driver's ``log``.
    """

    def __init__(self, transport: ModbusTransport, instrument: str, *, log: logging.Logger, max_gap: int = 0,
                 max_registers: int = codec.MAX_REGISTERS_PER_READ, unit: int | None = None) -> None:
        self.transport = transport
        self.instrument = instrument
        self.log = log
        self.max_gap = max_gap
        self.max_registers = max_registers
        self.unit = unit
        #: spans of blocks the device refused: read one by one from now on
        self._single: set[codec.Span] = set()
        #: the plan is the same every poll until a refusal splits a block: made once per change
        self._plans: dict[tuple[tuple[codec.Span, ...], frozenset[int]], list[codec.Block]] = {}

    def _plan(self, spans: Sequence[codec.Span]) -> list[codec.Block]:
        single = frozenset(i for i, span in enumerate(spans) if span in self._single)
        key = (tuple(spans), single)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = list(codec.plan_blocks(
                spans, max_gap=self.max_gap, max_registers=self.max_registers, single=set(single)))
        return plan

    def read(self, spans: Sequence[codec.Span]) -> list[Fetched]:
        """One result per span, in order; raises what is not a refusal of a request."""
        results: dict[int, Fetched] = {}
        for block in self._plan(spans):
            fetched = self._fetch(block.table, block.address, block.count)
            if fetched.values is not None:
                for i in block.members:
                    results[i] = Fetched(block.part(fetched.values, spans[i]), fetched.at)
                continue
            members = sorted({spans[i] for i in block.members})
            if len(members) == 1:
                by_span = {members[0]: fetched}
            else:
                self.log.info("%s; reading its %d values one by one from now on", fetched.refused, len(members))
                self._single.update(members)
                by_span = {span: self._fetch(span.table, span.address, span.count) for span in members}
            for i in block.members:
                results[i] = by_span[spans[i]]
        return [results[i] for i in range(len(spans))]

    def _fetch(self, table: codec.Table, address: int, count: int) -> Fetched:
        """One read; a refusal of the request comes back without values, anything else raises."""
        started = time.time()
        values: list[int] | list[bool]
        try:
            if table in _BIT_TABLES:
                values = self.transport.read_bits(_BIT_TABLES[table], address, count, unit=self.unit)
            else:
                values = self.transport.read_registers(_REGISTER_TABLES[table], address, count, unit=self.unit)
        except BridgeError as exc:
            # A transport shared by the devices of one line names its own owner: name ours.
            error = named(self.instrument, exc)
            if isinstance(error, DeviceError) and error.code in REFUSALS:
                return Fetched(None, (started + time.time()) / 2, error)
            if error is exc:
                raise
            raise error from exc
        return Fetched(values, (started + time.time()) / 2)


OptionsT = TypeVar("OptionsT", bound=DriverOptions)


class ModbusDriver(Driver[ModbusTransport, OptionsT]):
    """Base of the Modbus drivers: :meth:`poll` fetches every channel at once through
    :attr:`reader` and keeps the measurements by channel name; each channel then takes its own
    (:meth:`stored`). ``unit`` overrides the transport's device address (several devices on one
    RTU line share one transport); None uses the transport's own."""

    transports = ("modbus_tcp", "modbus_rtu")
    addresses_units = True

    def __init__(self, transport: ModbusTransport, options: OptionsT, instrument: str, *,
                 unit: int | None = None) -> None:
        super().__init__(transport, options, instrument)
        self.reader = self.block_reader(unit)
        self.measurements: dict[str, Measurement] = {}

    def block_reader(self, unit: int | None) -> BlockReader:
        """How this driver's reads are merged; override to span gaps or cap the read size.
        Messages go to the logger of the driver's registered name."""
        return BlockReader(self.transport, self.instrument, unit=unit,
                           log=logging.getLogger(f"bridge.drivers.{self.name}"))

    def begin_poll(self) -> None:
        self.measurements = self.poll()

    def poll(self) -> dict[str, Measurement]:
        raise NotImplementedError

    def stored(self, channel: str) -> Measurement:
        return self.measurements[channel]

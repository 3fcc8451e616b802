"""Cutting a run's readings into chunks: pure logic, no SQL and no I/O (docs/design.md section 5).

A **flow** is one instrument: the channels it produces in one poll. A **point** is one poll
of a flow; the bridge marks every reading with its poll (``p`` in docs/payload.md), because a
driver stamps each exchange and the channels of one poll can differ by milliseconds. Chunk k
of a flow holds its points k*ppc .. (k+1)*ppc-1 in seq order, so a chunk is the flow's
readings between two seqs and can be rebuilt from the spool byte for byte (a retried chunk is
identical to the first attempt).

A reading starts a new point when its poll mark (``timestamp`` below: the mark, or the
reading's own time from a bridge that sends none) differs from the current point's, or when
its channel already appeared in the current point. A chunk is cut when the point after its
last one starts, or at the end of the run, so a chunk never closes while a poll's channels are
still arriving.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, NamedTuple

from bridge.uploader.sinks.base import ChunkBody

#: separates instrument and channel in a stream's channel names ("main_gauge/p1"); instrument
#: names cannot contain it (config NAME_PATTERN), so the split is unambiguous
CHANNEL_SEPARATOR: Final = "/"


def channel_name(flow: str, channel: str) -> str:
    return f"{flow}{CHANNEL_SEPARATOR}{channel}"


class CutChunk(NamedTuple):
    """A chunk the cutter closed: the flow's readings with seq in [first_seq, last_seq]."""

    flow: str
    chunk_index: int
    first_seq: int
    last_seq: int
    points: int


@dataclass(slots=True)
class FlowCutter:
    """Where one flow of one run stands: the chunk being filled and the point being read.

    Kept as a small JSON document beside the ledger and saved in the same transaction as the
    chunks it cut, so a crash resumes exactly where the last commit left it.
    """

    flow: str
    chunk_index: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    points_in_chunk: int = 0
    point_time: float | None = None
    point_channels: list[str] = field(default_factory=list)
    total_points: int = 0
    #: per channel, for the completeness report: [ok readings, readings of another quality, chunks it is in,
    #: units of its first ok reading, whether the units changed later]
    stats: dict[str, list[Any]] = field(default_factory=dict)
    #: channels with a reading in the chunk being filled
    chunk_channels: list[str] = field(default_factory=list)
    #: per channel, its readings of each quality other than ok (``{"sensor_off": 61}``)
    qualities: dict[str, dict[str, int]] = field(default_factory=dict)
    #: per channel whose first reading was not a float: that reading's value type
    types: dict[str, str] = field(default_factory=dict)
    #: channels whose value type changed during the run (a config changed across a restart)
    types_changed: list[str] = field(default_factory=list)
    #: per channel, ok readings of a type the Atomscale body cannot hold (enum, string): left out there
    not_numeric: dict[str, int] = field(default_factory=dict)
    #: per channel, the units of its first reading of any quality: the units of a channel that never
    #: had an ok reading (a gauge off the whole run) are still known
    first_units: dict[str, str] = field(default_factory=dict)

    def add(self, seq: int, channel: str, timestamp: float, points_per_chunk: int, quality: str = "ok",
            units: str = "", vtype: str | None = None) -> CutChunk | None:
        """Take the flow's next reading (in seq order); return the chunk it closes, if any.

        ``vtype`` is the reading's value type, None for a float (docs/payload.md ``y``)."""
        cut = None
        if self.point_time is None or timestamp != self.point_time or channel in self.point_channels:
            if self.points_in_chunk >= points_per_chunk:
                cut = self._cut()
            if self.first_seq is None:
                self.first_seq = seq
            self.points_in_chunk += 1
            self.total_points += 1
            self.point_time = timestamp
            self.point_channels = [channel]
        else:
            self.point_channels.append(channel)
        self.last_seq = seq
        stats = self.stats.get(channel)
        if stats is None:
            stats = self.stats[channel] = [0, 0, 0, None, False]
            self.first_units[channel] = units
            if vtype is not None:
                self.types[channel] = vtype
        elif self.types.get(channel) != vtype and channel not in self.types_changed:
            self.types_changed.append(channel)
        if channel not in self.chunk_channels:
            self.chunk_channels.append(channel)
        if quality == "ok":
            stats[0] += 1
            if stats[3] is None:
                stats[3] = units
            elif stats[3] != units:
                stats[4] = True
            if vtype in NOT_NUMERIC:
                self.not_numeric[channel] = self.not_numeric.get(channel, 0) + 1
        else:
            stats[1] += 1
            counts = self.qualities.setdefault(channel, {})
            counts[quality] = counts.get(quality, 0) + 1
        return cut

    def finish(self) -> CutChunk | None:
        """The run ended: close the last, possibly shorter, chunk."""
        return self._cut() if self.points_in_chunk else None

    def _cut(self) -> CutChunk:
        assert self.first_seq is not None and self.last_seq is not None
        chunk = CutChunk(self.flow, self.chunk_index, self.first_seq, self.last_seq, self.points_in_chunk)
        for channel in self.chunk_channels:
            self.stats[channel][2] += 1
        self.chunk_channels = []
        self.chunk_index += 1
        self.first_seq = None
        self.points_in_chunk = 0
        return chunk

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowCutter:
        return cls(**data)


class ChunkReading(NamedTuple):
    """What a chunk needs of one reading, in seq order.

    ``value`` as the spool holds it: a number (an int, a bool as 0/1, in a REAL column), the text
    of an enum or string, None for a reading whose quality is not ok; ``vtype`` its value type,
    None for a float."""

    channel: str
    timestamp: float
    value: float | str | None
    quality: str
    units: str
    detail: str | None = None
    vtype: str | None = None


#: value types the Atomscale body has no number for; their readings are left out there and counted
NOT_NUMERIC: Final = frozenset({"enum", "string"})
#: how a value held as a number in the spool is given back its type (bool and int columns are REAL there)
_FROM_SPOOL: Final[dict[str, Any]] = {"int": int, "bits": int, "bool": bool, "enum": str, "string": str}


class _Column:
    """One channel of a chunk while it is built; the optional lists appear only when needed."""

    __slots__ = ("details", "kind", "plain", "qualities", "stamps", "types", "units", "values")

    def __init__(self, units: str, kind: str | None) -> None:
        #: only ok floats without a detail so far: no optional list exists yet
        self.plain = True
        self.stamps: list[float] = []
        self.values: list[Any] = []
        self.units = units
        self.kind = kind
        self.qualities: list[str] | None = None
        self.details: list[str] | None = None
        self.types: list[str] | None = None

    def body(self) -> dict[str, Any]:
        """Keys in a fixed order: the msgpack of a rebuilt chunk is byte-identical."""
        column: dict[str, Any] = {"timestamps": self.stamps, "values": self.values, "units": self.units}
        if self.kind is not None:
            column["type"] = self.kind
        if self.types is not None:
            column["types"] = self.types
        if self.qualities is not None:
            column["quality"] = self.qualities
        if self.details is not None:
            column["detail"] = self.details
        return column


def chunk_body(data_id: str, chunk_index: int, flow: str,
               readings: Iterable[ChunkReading | tuple[str, float, float | str | None, str, str, str | None,
                                                       str | None]]) -> ChunkBody:
    """One chunk of the local store (docs/store.md, version 2): every reading, typed, with its quality.

    Per channel, ``timestamps``, ``values`` (nil where the quality is not ok) and ``units`` as in
    the push_multi body; ``type`` when its values are not floats; ``quality`` (one per point)
    only when a point is not ok, ``detail`` (one per point, empty where none) only when a point
    has one, ``types`` (one per point) only when the type changed within the chunk. Channels
    appear in the order of their first reading. :func:`numeric_body` makes the push_multi body
    of it.
    """
    columns: dict[str, _Column] = {}
    for channel, timestamp, value, quality, units, detail, vtype in readings:  # the spool's rows too
        column = columns.get(channel)
        if column is None:
            column = columns[channel] = _Column(units, vtype)
        if (vtype is None and quality == "ok" and value is not None and not detail and column.kind is None
                and column.plain):  # the common case, kept cheap: an ok float in a column of ok floats
            column.stamps.append(timestamp)
            column.values.append(value)
            continue
        column.plain = False
        n = len(column.stamps)
        column.stamps.append(timestamp)
        if quality == "ok" and value is None:  # the contract forbids it; never store it as a value
            quality, detail = "invalid", detail or "no value"
        if quality == "ok":
            column.values.append(value if vtype is None else _FROM_SPOOL[vtype](value))
        else:
            column.values.append(None)
            if column.qualities is None:
                column.qualities = ["ok"] * n
        if column.qualities is not None:
            column.qualities.append(quality)
        if detail and column.details is None:
            column.details = [""] * n
        if column.details is not None:
            column.details.append(detail or "")
        if vtype != column.kind and column.types is None:
            column.types = [column.kind or "float"] * n
        if column.types is not None:
            column.types.append(vtype or "float")
    return {"data_id": data_id, "chunk_index": chunk_index,
            "channels": {channel_name(flow, channel): column.body() for channel, column in columns.items()}}


def numeric_body(body: ChunkBody) -> tuple[ChunkBody, int]:
    """The push_multi body of a chunk (what the Atomscale API takes) and how many values it left out.

    The API holds numbers only and has no quality: a point whose quality is not ok and a value it
    cannot hold (an enum's or a string's text) are left out; a bool goes as 0.0 or 1.0 and an
    integer as its double (exact: integers are within 2**53). A channel left without a point is
    left out, as the Atomscale SDK does. The same chunk always gives the same body.
    """
    channels: dict[str, dict[str, Any]] = {}
    left_out = 0
    for name, column in body["channels"].items():
        stamps: list[float] = []
        values: list[float] = []
        kinds = column.get("types")
        kind = column.get("type")
        for i, (stamp, value) in enumerate(zip(column["timestamps"], column["values"], strict=True)):
            if value is None or (kinds[i] if kinds is not None else kind) in NOT_NUMERIC:
                left_out += 1
                continue
            stamps.append(stamp)
            values.append(value if type(value) is float else float(value))
        if stamps:
            channels[name] = {"timestamps": stamps, "values": values, "units": column["units"]}
    return {"data_id": body["data_id"], "chunk_index": body["chunk_index"], "channels": channels}, left_out

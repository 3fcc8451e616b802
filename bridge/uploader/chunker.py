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
    #: per channel, for the completeness report: [good readings, bad-quality readings, chunks it is in,
    #: units of its first good reading, whether the units changed later]
    stats: dict[str, list[Any]] = field(default_factory=dict)
    #: channels with a good reading in the chunk being filled
    chunk_channels: list[str] = field(default_factory=list)

    def add(self, seq: int, channel: str, timestamp: float, points_per_chunk: int, quality: str = "ok",
            units: str = "") -> CutChunk | None:
        """Take the flow's next reading (in seq order); return the chunk it closes, if any."""
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
        if quality == "ok":
            stats[0] += 1
            if stats[3] is None:
                stats[3] = units
            elif stats[3] != units:
                stats[4] = True
            if channel not in self.chunk_channels:
                self.chunk_channels.append(channel)
        else:
            stats[1] += 1
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
    """What a chunk needs of one reading, in seq order."""

    channel: str
    timestamp: float
    value: float | None
    quality: str
    units: str


def chunk_body(data_id: str, chunk_index: int, flow: str,
               readings: Iterable[ChunkReading | tuple[str, float, float | None, str, str]]) -> ChunkBody:
    """The push_multi body of one chunk; readings with a bad quality are left out.

    Channels appear in the order of their first reading, the keys in a fixed order, so the
    msgpack of a rebuilt chunk is byte-identical. A channel with no good reading in the chunk is
    left out, as the Atomscale SDK does.
    """
    channels: dict[str, dict[str, Any]] = {}
    for channel, timestamp, value, quality, units in readings:  # plain tuples too: the spool's rows
        if quality != "ok" or value is None:
            continue
        name = channel_name(flow, channel)
        column = channels.get(name)
        if column is None:
            column = channels[name] = {"timestamps": [], "values": [], "units": units}
        column["timestamps"].append(timestamp)
        column["values"].append(value)
    return {"data_id": data_id, "chunk_index": chunk_index, "channels": channels}

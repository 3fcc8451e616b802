"""The fault matrix's checker, for rows that kill the bridge: ground truth from outside the bridge's process.

When the bridge's process dies, :class:`~tests.helpers.uploader.RecordingBridge` cannot be the
ground truth. Two independent witnesses take its place:

- **what the simulators served**: :func:`served_gauges` makes TPG controllers whose every reading
  is unique (a counter, not noise) and logged as it goes out (``SimulatedByteDevice.served``);
  :func:`assert_served_in_order` checks that each value a finalized stream holds was served by
  that instrument on that channel, in the order served, at most once.
- **what the bridge committed**: :class:`CommittedLog` merges a tap on the data topic (an
  :class:`~tests.helpers.ack_subscriber.AckingSubscriber` that does not ack) with snapshots of
  the outbox and spool files read while their processes were dead; every seq seen twice must
  carry the same entry (a seq is never reused) and a run's seqs must be known without a hole
  from its start marker to its stop marker. Its :meth:`CommittedLog.run` is then compared with
  the store exactly, as :func:`~tests.helpers.uploader.assert_store_holds_run` does with the
  recorded log.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]

from bridge.wire.contract import unpack_body
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.helpers.ack_subscriber import AckingSubscriber
from tests.helpers.uploader import chunk_files

#: readings a channel serves before its values repeat (100.00 ... 999.99 mbar in steps of 0.01)
UNIQUE_VALUES = 90_000

Entry = tuple[str, float, dict[str, Any]]  # kind, time, body


# ---------------------------------------------------------------- what the simulators served


def unique_pressure() -> Callable[[], float]:
    """A pressure source that never repeats within :data:`UNIQUE_VALUES` reads (five digits on a linear gauge)."""
    counter = itertools.count()

    def source() -> float:
        return 100.0 + (next(counter) % UNIQUE_VALUES) / 100

    return source


def served_gauges(count: int = 2, *, model: str = "TPG362") -> list[tuple[TPGSimulator, TcpServer]]:
    """TPG controllers on their own LAN ports whose readings are unique and logged as served.

    Linear capacitance gauges (CMR: five significant digits, 0.1 to 1100 mbar) make every value
    exact on the wire; stop the servers when done.
    """
    pairs = []
    for seed in range(1, count + 1):
        probe = TPGSimulator(model)
        sim = TPGSimulator(model, seed=seed, gauges=["CMR"] * probe.channels)
        for channel in range(1, sim.channels + 1):
            sim.set_pressure_source(channel, unique_pressure())
        sim.record_served()
        pairs.append((sim, TcpServer(lambda sim=sim: sim).start()))
    return pairs


def stored_values(store: Path, run_id: str) -> dict[str, list[float]]:
    """Per channel (``flow/channel``), the values a finalized stream holds, in chunk order (a reading whose
    quality was not ok is kept without a value: it is no value served)."""
    values: dict[str, list[float]] = {}
    for paths in chunk_files(store, run_id).values():
        for path in paths:
            for name, column in msgpack.unpackb(path.read_bytes())["channels"].items():
                values.setdefault(name, []).extend(v for v in column["values"] if v is not None)
    return values


def assert_served_in_order(store: Path, run_id: str, sims: dict[str, TPGSimulator]) -> dict[str, int]:
    """Each stored value of each channel was served by that instrument on that channel, in order, at most once.

    ``sims`` maps the instrument (flow) name to its simulator. Returns counts for the figures:
    values stored, and values served inside the run's span that no stream holds (read but never
    committed: the bridge died holding them, or the poll they belonged to failed).
    """
    stored = stored_values(store, run_id)
    assert stored, f"run {run_id} holds no values"
    checked = not_stored = 0
    for name, values in stored.items():
        flow, short = name.split("/", 1)
        channel = int(short.rsplit("_", 1)[1])  # pressure_<n>
        sim = sims[flow]
        assert sim.served is not None, f"{flow}: the simulator does not record what it serves"
        served = [value for ch, status, value in list(sim.served) if ch == channel and status == 0]
        assert len(set(served)) == len(served), f"{name}: served values repeat, the check would be blind"
        position = {value: i for i, value in enumerate(served)}
        last = -1
        for n, value in enumerate(values):
            i = position.get(value)
            assert i is not None, f"{name}: stored value #{n} ({value!r}) was never served"
            assert i > last, (f"{name}: stored value #{n} ({value!r}) was served at {i}, before or at the "
                              f"previous stored value's {last}: out of order or stored twice")
            last = i
        first = position[values[0]]
        not_stored += (last - first + 1) - len(values)
        checked += len(values)
    return {"values_checked": checked, "served_not_stored": not_stored}


def read_not_committed(log: CommittedLog, sims: dict[str, TPGSimulator]) -> int:
    """Readings served between two the bridge committed (in its whole log, runs or not) that it never
    committed: those it held when it died, or whose poll failed half-way."""
    committed: dict[tuple[str, int], list[float]] = {}
    for kind, _, body in (entry for _, entry in sorted(log.entries().items())):
        if kind == "reading" and body["q"] == "ok" and body["i"] in sims:
            committed.setdefault((body["i"], int(body["c"].rsplit("_", 1)[1])), []).append(body["v"])
    skipped = 0
    for (flow, channel), values in committed.items():
        served = sims[flow].served or []
        position = {value: i for i, (ch, status, value) in enumerate(served) if ch == channel and status == 0}
        picked = [position[v] for v in values if v in position]
        served_positions = sorted(i for i, (ch, status, _) in enumerate(served) if ch == channel and status == 0)
        rank = {i: n for n, i in enumerate(served_positions)}
        if picked:
            skipped += (rank[picked[-1]] - rank[picked[0]] + 1) - len(picked)
    return skipped


# ---------------------------------------------------------------- what the bridge committed


@dataclass(frozen=True)
class OutboxSnapshot:
    acked_seq: int
    last_seq: int
    open_run: dict[str, Any] | None
    entries: dict[int, Entry]


def read_outbox(path: Path) -> OutboxSnapshot:
    """The outbox file as a dead bridge left it: what it had committed and not yet trimmed."""
    db = sqlite3.connect(path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        entries = {seq: (kind, time, unpack_body(body))
                   for seq, kind, time, body in db.execute("SELECT seq, kind, time, body FROM entries")}
    finally:
        db.close()
    last = max(int(meta["last_seq"]), max(entries, default=0))
    return OutboxSnapshot(int(meta["acked_seq"]), last, json.loads(meta["open_run"]), entries)


def read_spool(state_dir: Path) -> dict[tuple[str, str], dict[int, Entry]]:
    """The spool's entries per source (site, epoch), bodies rebuilt as the bridge logged them."""
    db = sqlite3.connect(state_dir / "spool.sqlite")
    try:
        rows = db.execute("SELECT site, epoch, seq, kind, time, flow, channel, coalesce(value, vtext), quality, t,"
                          " units, detail, body, poll, vtype FROM entries").fetchall()
    finally:
        db.close()
    sources: dict[tuple[str, str], dict[int, Entry]] = {}
    for site, epoch, seq, kind, time, flow, channel, value, quality, t, units, detail, body, poll, vtype in rows:
        if kind == "reading":
            if vtype in ("int", "bits") and value is not None:  # held as a REAL
                value = int(value)
            elif vtype == "bool" and value is not None:
                value = bool(value)
            rebuilt: dict[str, Any] = {"i": flow, "c": channel, "v": value, "q": quality, "t": t, "u": units}
            if detail:
                rebuilt["d"] = detail
            if poll is not None:
                rebuilt["p"] = poll
            if vtype is not None:
                rebuilt["y"] = vtype
        else:
            rebuilt = unpack_body(body)
        sources.setdefault((site, epoch), {})[seq] = (kind, time, rebuilt)
    return sources


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a database file ("ok" when sound)."""
    db = sqlite3.connect(path)
    try:
        return "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


@dataclass
class CommittedLog:
    """The bridge's committed log (one site, one epoch), seen from outside its process."""

    tap: AckingSubscriber
    lock: threading.Lock = field(default_factory=threading.Lock)
    snapshots: dict[int, Entry] = field(default_factory=dict)
    conflicts: list[int] = field(default_factory=list)

    def add(self, entries: dict[int, Entry]) -> None:
        """Entries read from a file (outbox or spool): a seq known already must match."""
        with self.lock:
            for seq, entry in entries.items():
                known = self.snapshots.get(seq)
                if known is not None and known != entry:
                    self.conflicts.append(seq)
                self.snapshots.setdefault(seq, entry)

    def add_outbox(self, path: Path) -> OutboxSnapshot:
        snapshot = read_outbox(path)
        self.add(snapshot.entries)
        return snapshot

    def add_spool(self, state_dir: Path) -> None:
        for (_, epoch), entries in read_spool(state_dir).items():
            if self.tap.epoch in (None, epoch):
                self.add(entries)

    def entries(self) -> dict[int, Entry]:
        """Everything known, by seq; raises if the tap and a snapshot disagree about a seq."""
        with self.tap.lock:
            wire = {seq: (e.kind, e.time, e.body) for seq, e in self.tap.entries.items()}
            wire_conflicts = list(self.tap.conflicts)
        with self.lock:
            merged = dict(self.snapshots)
            conflicts = list(self.conflicts)
        for seq, entry in wire.items():
            known = merged.get(seq)
            if known is not None and known != entry:
                conflicts.append(seq)
            merged[seq] = entry
        assert not conflicts and not wire_conflicts, \
            f"seqs reused for different entries: {sorted(set(conflicts + wire_conflicts))[:10]}"
        return merged

    def markers(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [(seq, kind, body) for seq, (kind, _, body) in sorted(self.entries().items()) if kind != "reading"]

    def run_ids(self) -> list[str]:
        return [body["run_id"] for _, kind, body in self.markers() if kind == "run_start"]

    def run_span(self, run_id: str) -> tuple[int, int] | None:
        """The seqs of the run's start and stop markers (None until both are known)."""
        start = stop = None
        for seq, kind, body in self.markers():
            if body.get("run_id") == run_id:
                if kind == "run_start":
                    start = seq
                elif kind == "run_stop":
                    stop = seq
        return None if start is None or stop is None else (start, stop)

    def run(self, run_id: str) -> list[dict[str, Any]]:
        """The run's reading bodies in seq order; every seq from its start to its stop must be known."""
        return [body for _, body in self.run_readings(run_id)]

    def run_readings(self, run_id: str) -> list[tuple[int, dict[str, Any]]]:
        """The run's readings as (seq, body) in seq order; every seq from its start to its stop must be known."""
        span = self.run_span(run_id)
        assert span is not None, f"run {run_id}: start or stop marker not seen"
        start, stop = span
        entries = self.entries()
        missing = [seq for seq in range(start, stop + 1) if seq not in entries]
        assert not missing, (f"run {run_id}: {len(missing)} seqs between its markers ({start}..{stop}) were seen "
                             f"neither on the wire nor in a file, e.g. {missing[:5]}")
        return [(seq, entries[seq][2]) for seq in range(start + 1, stop) if entries[seq][0] == "reading"]

    def gaps(self, within: Iterable[tuple[int, int]] | None = None) -> list[int]:
        """Seqs missing between 1 and the highest known (or only inside the spans ``within``)."""
        entries = self.entries()
        top = max(entries, default=0)
        spans: Sequence[tuple[int, int]] = list(within) if within is not None else [(1, top)]
        return [seq for a, b in spans for seq in range(a, b + 1) if seq not in entries]

"""End-to-end helpers for the uploader: a bridge whose log is recorded, and the store checked against it.

The ground truth is what the bridge logged: :class:`RecordingBridge` wraps the outbox's two
append methods under one lock, so the recorded order is the seq order. A run's readings are
those recorded between its start and stop markers; :func:`assert_store_holds_run` checks that
the local store holds exactly those, each once, in order, chunked as docs/design.md section 5 says.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]

from bridge.config import Config
from bridge.edge.outbox import Outbox
from bridge.edge.publisher import PublisherSettings
from bridge.edge.service import BridgeService
from bridge.uploader.chunker import ChunkReading, chunk_body
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.helpers.mosquitto import MosquittoBroker

FAST_PUBLISHER = PublisherSettings(ack_timeout=2.0, status_interval=0.5, drain_timeout=5.0)


@dataclass
class Recorded:
    """What the bridge logged, in seq order: ("reading"|"run_start"|"run_stop", body)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def run(self, run_id: str) -> list[dict[str, Any]]:
        """The reading bodies logged between the run's start and stop markers."""
        with self.lock:
            entries = list(self.entries)
        inside, readings = False, []
        for kind, body in entries:
            if kind == "run_start" and body["run_id"] == run_id:
                inside = True
            elif kind == "run_stop" and body["run_id"] == run_id:
                return readings
            elif inside and kind == "reading":
                readings.append(body)
        raise AssertionError(f"run {run_id} has no stop marker in the bridge's log")

    def run_ids(self) -> list[str]:
        with self.lock:
            return [body["run_id"] for kind, body in self.entries if kind == "run_start"]


class RecordingBridge:
    """A BridgeService in this process whose every logged entry is recorded in seq order."""

    def __init__(self, config: Config, settings: PublisherSettings = FAST_PUBLISHER) -> None:
        self.recorded = Recorded()
        self.service = BridgeService(config, settings)
        outbox = self.service.outbox
        append, append_marker = outbox.append, outbox.append_marker
        recorded = self.recorded

        def recording_append(kind: Any, body: dict[str, Any], time: float | None = None) -> int | None:
            with recorded.lock:
                seq = append(kind, body, time)
                if seq is not None:
                    recorded.entries.append((kind, body))
                return seq

        def recording_marker(kind: Any, body: dict[str, Any], *args: Any, **kwargs: Any) -> int:
            with recorded.lock:
                seq: int = append_marker(kind, body, *args, **kwargs)
                recorded.entries.append((kind, body))
                return seq

        outbox.append = recording_append  # type: ignore[method-assign]
        outbox.append_marker = recording_marker  # type: ignore[method-assign]

    @property
    def outbox(self) -> Outbox:
        return self.service.outbox

    def start(self) -> RecordingBridge:
        self.service.start()
        return self

    def stop(self) -> None:
        self.service.stop()


def tpg_gauges(count: int = 2) -> list[tuple[TPGSimulator, TcpServer]]:
    """TPG controllers on their own LAN ports (one bus each); stop the servers when done."""
    pairs = []
    for seed in range(1, count + 1):
        sim = TPGSimulator("TPG362", seed=seed)
        pairs.append((sim, TcpServer(lambda sim=sim: sim).start()))
    return pairs


def chamber_config(broker: MosquittoBroker, gauges: list[tuple[TPGSimulator, TcpServer]], tmp: Path, *,
                   interval: float = 0.02, points_per_chunk: int = 10, store: Path | None = None,
                   grace: float = 3600.0, protocol: str = "5", sink: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config with both sides: the bridge polling the gauges, the uploader writing ``store``."""
    return {
        "site": "chamber-u",
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "lab", "keepalive": 5,
                 "protocol": protocol},
        "bridge": {"state_dir": str(tmp / "bridge-state"), "instruments": [
            {"name": f"gauge{i}", "driver": "pfeiffer_tpg", "interval": interval,
             "transport": {"kind": "serial", "port": server.url, "timeout": 0.3},
             "options": {"channels": [1, 2], "settle": 0.02}}
            for i, (_, server) in enumerate(gauges, start=1)]},
        "uploader": {"state_dir": str(tmp / "uploader-state"), "points_per_chunk": points_per_chunk,
                     "finalize_grace": grace, "client_id": "test-uploader",
                     "sink": sink or {"kind": "local", "path": str(store or tmp / "store")}},
    }


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- the store, read back independently


def manifest(store: Path, data_id: str) -> dict[str, Any]:
    path = store / data_id / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def finalized(store: Path, data_id: str) -> bool:
    return bool(manifest(store, data_id).get("finalized"))


def chunk_files(store: Path, data_id: str) -> dict[str, list[Path]]:
    folder = store / data_id / "chunks"
    return {flow.name: sorted(flow.glob("*.msgpack")) for flow in sorted(folder.iterdir()) if flow.is_dir()}


def expected_points(readings: list[dict[str, Any]]) -> dict[str, list[list[dict[str, Any]]]]:
    """Per flow (instrument), the points (polls) of a run: readings of one poll (mark ``p``), no channel twice."""
    flows: dict[str, list[list[dict[str, Any]]]] = {}
    for r in readings:
        points = flows.setdefault(r["i"], [])
        mark = r.get("p", r["t"])
        if not points or points[-1][0].get("p", points[-1][0]["t"]) != mark or any(x["c"] == r["c"]
                                                                                   for x in points[-1]):
            points.append([r])
        else:
            points[-1].append(r)
    return flows


def assert_store_holds_run(store: Path, run_id: str, readings: list[dict[str, Any]], ppc: int) -> dict[str, Any]:
    """The run's folder holds exactly ``readings`` (each once, in order, those of a bad quality without a
    value and with their quality), chunked by ``ppc`` (store version 2, docs/store.md)."""
    doc = manifest(store, run_id)
    assert doc.get("finalized") is True, f"run {run_id} is not finalized: {doc}"
    files = chunk_files(store, run_id)
    flows = expected_points(readings)
    assert set(files) == set(flows), f"flows in the store {sorted(files)} != logged {sorted(flows)}"
    for flow, points in flows.items():
        assert len(files[flow]) == math.ceil(len(points) / ppc), f"{flow}: wrong number of chunks"
        for index, path in enumerate(files[flow]):
            assert path.name == f"{index:06d}.msgpack"
            body = msgpack.unpackb(path.read_bytes())
            assert body["data_id"] == run_id and body["chunk_index"] == index
            chunk = [r for point in points[index * ppc:(index + 1) * ppc] for r in point]
            expected = chunk_body(run_id, index, flow, [
                ChunkReading(r["c"], r["t"], r["v"], r["q"], r["u"], r.get("d"), r.get("y")) for r in chunk])
            assert body == expected, f"{flow} chunk {index} differs from what the bridge logged"
    channels = doc["channels"]
    for name in channels:
        flow, channel = name.split("/", 1)
        logged = [r for r in readings if r["i"] == flow and r["c"] == channel]
        assert channels[name]["points"] == len(logged), name
        assert channels[name]["bad_quality"] == sum(r["q"] != "ok" for r in logged), name
    assert doc["report"]["readings"] == len(readings)
    return doc


def iter_chunks(store: Path, data_id: str) -> Iterator[dict[str, Any]]:
    for paths in chunk_files(store, data_id).values():
        for path in paths:
            yield msgpack.unpackb(path.read_bytes())


def assert_spool_drained(state_dir: Path, through_seq: int, site: str | None = None) -> None:
    """Every run is finalized and nothing up to ``through_seq`` is left in the uploader's spool (of ``site``:
    another site's log, a hostile one say, may wait for its holes), except readings after a log's last
    run: those wait for a start marker's pre-roll, or until they are too old for one (docs/runs.md)."""
    import sqlite3

    db = sqlite3.connect(f"file:{state_dir / 'spool.sqlite'}?mode=ro", uri=True)
    try:
        states = [state for (state,) in db.execute("SELECT state FROM runs WHERE site=coalesce(?, site)", (site,))]
        (left,) = db.execute(
            "SELECT count(*) FROM entries e WHERE e.seq <= ? AND e.site=coalesce(?, e.site) AND NOT (e.kind='reading'"
            " AND e.seq > (SELECT coalesce(max(r.stop_seq), 0) FROM runs r WHERE r.site=e.site AND r.epoch=e.epoch))",
            (through_seq, site)).fetchone()
        (chunks,) = db.execute("SELECT count(*) FROM chunks").fetchone()
    finally:
        db.close()
    assert states and set(states) == {"finalized"}, f"runs not finalized: {states}"
    assert left == 0, f"{left} entries up to seq {through_seq} are still in the spool"
    assert chunks == 0, f"{chunks} chunk rows left in the ledger"

"""Uploader: sustained readings/s from the data topic to confirmed chunks in the local store, and latency.

Throughput: a stand-in bridge (raw paho, QoS1) publishes one run of batches of 500 entries
(10 instruments x 3 channels, points_per_chunk 100) as fast as the broker takes them; the real
uploader, ``chamber-bridge upload`` in its own process as on the lab server (subscriber, spool
with synchronous=FULL, ledger, local store with an fsync per chunk), takes them. The clock
stops when the run's manifest says finalized, i.e. every chunk is confirmed on disk.
Baseline in the same run: raw paho batches to the same broker with a bare
subscriber (benchmarks/bridge_throughput.py's raw_paho).

Latency at nominal load: 10 instruments x 3 channels at 10 Hz (300 readings/s), one batch every
100 ms as the bridge's group commit sends them, timestamps taken when the point is made. For
each reading: chunk file written (its mtime) minus the reading's timestamp. That includes the
time the chunk waits to fill (100 points at 10 Hz: up to 10 s), so the pipeline's own share is
also given: chunk written minus the chunk's last point.

    .venv/bin/python -m benchmarks.uploader_throughput [--readings 300000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.bridge_throughput import raw_paho
from bridge.wire import contract
from tests.helpers.mosquitto import MosquittoBroker

INSTRUMENTS = 10
CHANNELS = 3
BATCH = 500
SITE = "bench"


class StandInBridge:
    """Publishes log entries like a bridge (QoS1 batches in seq order); no outbox, nothing resent."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.epoch = uuid.uuid4().hex
        self.seq = 0
        self.acked = 0
        self.acked_at: dict[int, float] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bridge-{self.epoch[:6]}")
        self.client.max_inflight_messages_set(50)
        self.client.on_message = self._on_ack
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"lab/{SITE}/ack", qos=1)
        self.client.loop_start()

    def _on_ack(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        ack = contract.decode_ack(bytes(message.payload))
        if ack.epoch == self.epoch and ack.seq > self.acked:
            self.acked = ack.seq
            self.acked_at[ack.seq] = time.perf_counter()

    def entries(self, kind: str, bodies: list[dict[str, Any]], stamp: float) -> list[contract.LogEntry]:
        out = []
        for body in bodies:
            self.seq += 1
            out.append(contract.LogEntry(self.seq, kind, stamp if kind != "reading" else body["t"], body))  # type: ignore[arg-type]
        return out

    def publish(self, entries: list[contract.LogEntry]) -> None:
        for i in range(0, len(entries), BATCH):
            batch = contract.encode_batch(SITE, self.epoch, entries[i:i + BATCH])
            info = self.client.publish(f"lab/{SITE}/data", batch, qos=1)
            while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                time.sleep(0.001)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def points(stamp: float, n: int) -> list[dict[str, Any]]:
    """One poll of every instrument at ``stamp``: 30 reading bodies."""
    return [{"i": f"inst{i}", "c": f"ch{c}", "v": 1.0 + n + c, "q": "ok", "t": stamp + i * 1e-4, "u": "V"}
            for i in range(INSTRUMENTS) for c in range(CHANNELS)]


class UploaderProcess:
    """``chamber-bridge upload`` in its own process, as it runs on the lab server."""

    def __init__(self, broker: MosquittoBroker, tmp: Path, name: str) -> None:
        self.store = tmp / f"store-{name}"
        config = tmp / f"uploader-{name}.yaml"
        config.write_text(json.dumps({
            "site": "uploader-bench", "mqtt": {"host": broker.host, "port": broker.port},
            "uploader": {"state_dir": str(tmp / f"state-{name}"), "client_id": f"bench-up-{name}",
                         "sink": {"kind": "local", "path": str(self.store)}}}))
        self.log = tmp / f"uploader-{name}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "bridge", "upload", str(config)],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "connected to" not in self.log.read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the uploader did not start: {self.log.read_text()}")
            time.sleep(0.05)
        time.sleep(0.3)  # its subscription

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def wait_finalized(store: Path, run_id: str, timeout: float) -> float:
    path = store / run_id / "manifest.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(path.read_text()).get("finalized"):
                return time.perf_counter()
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise SystemExit(f"run {run_id} was not finalized within {timeout} s")


def throughput(broker: MosquittoBroker, tmp: Path, readings: int) -> tuple[float, float]:
    uploader = UploaderProcess(broker, tmp, "throughput")
    store = uploader.store
    bridge = StandInBridge(broker)
    run_id = uuid.uuid4().hex
    polls = readings // (INSTRUMENTS * CHANNELS)
    entries = bridge.entries("run_start", [{"run_id": run_id, "stream_name": "bench", "physical_sample": None,
                                            "synth_source_id": None, "project_id": None, "tags": []}], time.time())
    base = time.time()
    for n in range(polls):
        entries += bridge.entries("reading", points(base + n * 0.1, n), 0.0)
    entries += bridge.entries("run_stop", [{"run_id": run_id, "exit_status": "success", "last_seq": bridge.seq}],
                              time.time())
    start = time.perf_counter()
    bridge.publish(entries)
    end = wait_finalized(store, run_id, timeout=600)
    acked = bridge.acked_at.get(bridge.seq, end)
    bridge.close()
    uploader.stop()
    count = polls * INSTRUMENTS * CHANNELS
    return count / (end - start), count / (acked - start)


def latency(broker: MosquittoBroker, tmp: Path, seconds: float) -> tuple[list[float], list[float], int]:
    uploader = UploaderProcess(broker, tmp, "latency")
    store = uploader.store
    bridge = StandInBridge(broker)
    run_id = uuid.uuid4().hex
    start: dict[str, Any] = {"run_id": run_id, "stream_name": "latency", "physical_sample": None,
                             "synth_source_id": None, "project_id": None, "tags": []}
    bridge.publish(bridge.entries("run_start", [start], time.time()))
    deadline = time.monotonic() + seconds
    tick = time.monotonic()
    n = 0
    while time.monotonic() < deadline:
        tick += 0.1
        time.sleep(max(0.0, tick - time.monotonic()))
        bridge.publish(bridge.entries("reading", points(time.time(), n), 0.0))
        n += 1
    bridge.publish(bridge.entries("run_stop", [{"run_id": run_id, "exit_status": "success", "last_seq": bridge.seq}],
                                  time.time()))
    wait_finalized(store, run_id, timeout=120)
    per_reading, per_chunk = [], []
    for path in (store / run_id / "chunks").rglob("*.msgpack"):
        written = path.stat().st_mtime_ns / 1e9
        body = msgpack.unpackb(path.read_bytes())
        stamps = [t for column in body["channels"].values() for t in column["timestamps"]]
        per_reading += [written - t for t in stamps]
        per_chunk.append(written - max(stamps))
    bridge.close()
    uploader.stop()
    return per_reading, per_chunk, n * INSTRUMENTS * CHANNELS


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of the nominal-load latency run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        try:
            raw = raw_paho(broker, args.readings)
            ours, acked = throughput(broker, tmp, args.readings)
            per_reading, per_chunk, sent = latency(broker, tmp, args.seconds)
        finally:
            broker.kill()
    print(f"uploader: data topic -> confirmed chunks in the local store ({platform.node()}, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')})")
    print(f"raw paho QoS1 batches, delivered:       {raw:>10.0f} readings/s")
    print(f"uploader, finalized in the local store: {ours:>10.0f} readings/s   (ratio {ours / raw:.2f}; "
          f"{args.readings} readings, {INSTRUMENTS}x{CHANNELS} channels, batches of {BATCH}, 100 points/chunk)")
    print(f"uploader, committed to the spool and acknowledged: {acked:>10.0f} readings/s (ratio {acked / raw:.2f})")
    print(f"nominal load ({sent} readings in {args.seconds:g} s at 300/s):")
    print(f"  reading -> chunk confirmed:      p50 {pct(per_reading, 50):6.2f} s   p99 {pct(per_reading, 99):6.2f} s"
          "   (includes waiting for the chunk to fill: 100 points at 10 Hz)")
    print(f"  chunk's last point -> confirmed: p50 {pct(per_chunk, 50) * 1000:6.0f} ms  "
          f"p99 {pct(per_chunk, 99) * 1000:6.0f} ms  ({len(per_chunk)} chunks)")


if __name__ == "__main__":
    main()

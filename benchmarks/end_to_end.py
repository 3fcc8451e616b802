"""End to end: readings through the bridge's outbox and publisher, the broker and the uploader to confirmed chunks.

Simulated readings (10 instruments x 3 channels, one poll mark per instrument poll) are
appended to a real outbox (SQLite WAL FULL, group commit) inside one run as fast as possible;
the real publisher sends them to a private Mosquitto; ``chamber-bridge upload`` in its own
process commits, acknowledges, cuts and writes them to the local store. The clock stops when
the run's manifest says finalized. Baseline in the same run: raw paho QoS1 batches of 100
readings to the same broker with a bare subscriber (benchmarks/bridge_throughput.py).

    .venv/bin/python -m benchmarks.end_to_end [--readings 300000]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.bridge_throughput import raw_paho
from benchmarks.uploader_throughput import INSTRUMENTS, UploaderProcess, points, wait_finalized
from bridge.config import MqttConfig
from bridge.edge.outbox import Outbox
from bridge.edge.publisher import Publisher
from simulators.services.broker import MosquittoBroker

SITE = "bench"


def end_to_end(broker: MosquittoBroker, tmp: Path, readings: int) -> tuple[float, float]:
    uploader = UploaderProcess(broker, tmp, "e2e")
    outbox = Outbox(tmp / "outbox.sqlite")
    publisher = Publisher(MqttConfig(host=broker.host, port=broker.port), SITE, outbox,
                          status=lambda: {}, commands=lambda c: (False, "no", None))
    publisher.start()
    while not publisher.connected:
        time.sleep(0.01)
    run_id = uuid.uuid4().hex
    polls = readings // (INSTRUMENTS * 3)
    start = time.perf_counter()
    outbox.append_marker("run_start", {"run_id": run_id, "stream_name": "e2e", "physical_sample": None,
                                       "synth_source_id": None, "project_id": None, "tags": []})
    base = time.time()
    for n in range(polls):
        for body in points(base + n * 0.1, n):
            body["p"] = base + n * 0.1
            outbox.append("reading", body, body["t"])
    last = outbox.append_marker("run_stop", {"run_id": run_id, "exit_status": "success", "last_seq": None})
    appended = time.perf_counter()
    end = wait_finalized(uploader.store, run_id, timeout=600)
    while outbox.acked_seq < last:
        time.sleep(0.005)
    publisher.stop()
    outbox.close()
    uploader.stop()
    count = polls * INSTRUMENTS * 3
    return count / (end - start), count / (appended - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=300_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        try:
            raw = raw_paho(broker, args.readings)
            ours, appended = end_to_end(broker, tmp, args.readings)
        finally:
            broker.kill()
    print(f"end to end: outbox -> publisher -> Mosquitto -> uploader -> local store, finalized "
          f"({platform.node()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, "
          f"{args.readings} readings)")
    print(f"raw paho QoS1 batches, delivered:   {raw:>10.0f} readings/s")
    print(f"end to end, finalized in the store: {ours:>10.0f} readings/s   (ratio {ours / raw:.2f})")
    print(f"  (appending to the outbox alone ran at {appended:.0f} readings/s)")


if __name__ == "__main__":
    main()

"""Maximum sustained readings/s from the outbox to acknowledged, against raw paho, same broker.

Raw baseline: one paho client publishes msgpack batches of 100 readings at QoS1 to a private
Mosquitto and one subscriber receives them all (no outbox, no acks, no durability). Bridge:
readings are appended to a real outbox (SQLite, WAL, FULL, group commit) as fast as possible,
the publisher sends them, and a subscriber standing in for the uploader dedupes and
acknowledges; the clock stops when the last reading is acknowledged (and trimmed).

    .venv/bin/python -m benchmarks.bridge_throughput [--readings 200000]   (from the repository root)
"""

from __future__ import annotations

import argparse
import platform
import queue
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import MqttConfig
from bridge.edge.outbox import Outbox
from bridge.edge.publisher import Publisher
from bridge.model import Quality, Reading
from bridge.wire import contract
from tests.helpers.ack_subscriber import AckingSubscriber
from tests.helpers.mosquitto import MosquittoBroker

BATCH = 100


def reading(i: int) -> Reading:
    return Reading("gauge", f"pressure_{i % 3}", 1e-7 * (1 + i % 7), Quality.OK, time.time(), "mbar")


def raw_paho(broker: MosquittoBroker, readings: int) -> float:
    received: queue.Queue[int] = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-sub")
    sub.on_message = lambda c, u, m: received.put(1)
    sub.connect(broker.host, broker.port)
    sub.subscribe("raw/data", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    batches = readings // BATCH
    bodies = [contract.reading_body(reading(i)) for i in range(BATCH)]
    start = time.perf_counter()
    for b in range(batches):
        entries = [contract.LogEntry(b * BATCH + i + 1, "reading", time.time(), body) for i, body in enumerate(bodies)]
        info = pub.publish("raw/data", contract.encode_batch("raw", "epoch", entries), qos=1)
        while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.001)
            info = pub.publish("raw/data", contract.encode_batch("raw", "epoch", entries), qos=1)
    for _ in range(batches):
        received.get(timeout=60)
    elapsed = time.perf_counter() - start
    for client in (pub, sub):
        client.loop_stop()
        client.disconnect()
    return batches * BATCH / elapsed


def bridge(broker: MosquittoBroker, readings: int, state: Path) -> tuple[float, int]:
    sub = AckingSubscriber(broker.host, broker.port, "lab", "bench")
    outbox = Outbox(state / "outbox.sqlite")
    publisher = Publisher(MqttConfig(host=broker.host, port=broker.port), "bench", outbox,
                          status=lambda: {}, commands=lambda c: (False, "no", None))
    publisher.start()
    sub.wait_for(lambda: publisher.connected, what="connect")
    start = time.perf_counter()
    for i in range(readings):
        r = reading(i)
        outbox.append("reading", contract.reading_body(r), r.timestamp)
    last = outbox.flush()
    sub.wait_for(lambda: outbox.acked_seq >= (last or 0), timeout=600, what="all acknowledged")
    elapsed = time.perf_counter() - start
    duplicates = sub.duplicates
    publisher.stop()
    outbox.close()
    sub.close()
    return readings / elapsed, duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp) / "broker")
        broker.start()
        try:
            raw = raw_paho(broker, args.readings)
            ours, duplicates = bridge(broker, args.readings, Path(tmp))
        finally:
            broker.kill()
    print(f"outbox -> acknowledged vs raw paho ({platform.node()}, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}, {args.readings} readings, batches of {BATCH})")
    print(f"raw paho QoS1, delivered:          {raw:>10.0f} readings/s")
    print(f"bridge outbox -> uploader ack:     {ours:>10.0f} readings/s   (ratio {ours / raw:.2f}, "
          f"duplicates delivered {duplicates})")


if __name__ == "__main__":
    main()

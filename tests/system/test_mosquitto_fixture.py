"""The private broker fixture really is a broker the tests can crash and bring back."""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.polling import wait_until


def _client(broker: MosquittoBroker, client_id: str, inbox: queue.Queue[bytes] | None = None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    if inbox is not None:
        client.on_message = lambda _c, _u, msg: inbox.put(msg.payload)
    client.connect(broker.host, broker.port, keepalive=5)
    client.loop_start()
    return client


def _wait_connected(client: mqtt.Client) -> None:
    assert wait_until(client.is_connected, timeout=10), "client did not (re)connect"


def test_qos1_round_trip_survives_clean_restart(mosquitto: MosquittoBroker) -> None:
    inbox: queue.Queue[bytes] = queue.Queue()
    sub = _client(mosquitto, "fixture-sub", inbox)
    _wait_connected(sub)
    sub.subscribe("t/data", qos=1)
    time.sleep(0.2)
    sub.loop_stop()
    sub.disconnect()  # offline persistent session: the broker queues for it

    pub = _client(mosquitto, "fixture-pub")
    _wait_connected(pub)
    info = pub.publish("t/data", b"one", qos=1)
    info.wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()

    mosquitto.restart()  # SIGTERM saves the queued message

    sub = _client(mosquitto, "fixture-sub", inbox)
    assert inbox.get(timeout=10) == b"one"
    sub.loop_stop()
    sub.disconnect()


def test_kill_and_restart_on_same_port(mosquitto: MosquittoBroker) -> None:
    client = _client(mosquitto, "fixture-reconnect")
    _wait_connected(client)
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running
    assert wait_until(lambda: not client.is_connected(), timeout=10)
    mosquitto.start()
    assert mosquitto.port == port
    client.reconnect_delay_set(0.05, 0.5)
    _wait_connected(client)
    client.loop_stop()
    client.disconnect()

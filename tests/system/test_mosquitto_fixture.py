"""The private broker fixture really is a broker the tests can crash and bring back, and, given
users and an ACL, one that keeps strangers out."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.services.broker import mosquitto_acl, mosquitto_hash, mosquitto_version, new_password, write_secret
from tests.helpers.mosquitto import MosquittoBroker, V5Client, allowed, mosquitto_passwd
from tests.helpers.polling import wait_until


def _client(broker: MosquittoBroker, client_id: str, inbox: queue.Queue[bytes] | None = None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    if inbox is not None:
        client.on_message = lambda _c, _u, msg: inbox.put(bytes(msg.payload))
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
    client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]  # paho sleeps floats fine
    _wait_connected(client)
    client.loop_stop()
    client.disconnect()


def test_logins_acl_and_client_ids_as_the_demo_runs_them(tmp_path: Path) -> None:
    """users (hashed here, not by mosquitto_passwd: no password on a command line), the ACL of
    simulators.services.broker.grants() and use_username_as_clientid: the demo's private broker."""
    users = {"uploader": new_password(), "chamber-a": new_password()}
    broker = MosquittoBroker(tmp_path / "mosquitto", users=users,
                             acl_file=write_secret(tmp_path / "acl", mosquitto_acl()), clientid_from_username=True)
    broker.start()
    try:
        passwd = tmp_path / "mosquitto" / "passwd"
        assert passwd.stat().st_mode & 0o777 == 0o600
        assert all(password not in passwd.read_text() for password in users.values())
        assert V5Client(broker.host, broker.port, None).connect_code.getName() == "Not authorized"
        assert V5Client(broker.host, broker.port, "uploader", "wrong").connect_code.is_failure
        uploader = V5Client(broker.host, broker.port, "uploader", users["uploader"], client_id="uploader")
        bridge = V5Client(broker.host, broker.port, "chamber-a", users["chamber-a"], client_id="uploader")
        try:
            assert allowed(uploader.subscribe("lab/+/data"))
            assert bridge.publish("lab/chamber-a/ack").getName() == "Not authorized"
            assert bridge.publish("lab/other/data").getName() == "Not authorized"
            assert allowed(bridge.publish("lab/chamber-a/data", b"mine"))
            assert uploader.messages.get(timeout=10) == ("lab/chamber-a/data", b"mine")
            assert uploader.disconnects.empty()  # the bridge's claim on its client id changed nothing
        finally:
            uploader.close()
            bridge.close()
    finally:
        broker.kill()


def test_the_password_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """Same scheme ($7$, PBKDF2-SHA512, 101 iterations) as the tool, so a file mixing both works."""
    made = tmp_path / "made"
    mosquitto_passwd(made, {"tool": "pw"})
    scheme = made.read_text().split(":", 1)[1].split("$")[1:3]
    ours = mosquitto_hash("pw", mosquitto_version()[0]).split("$")[1:3]
    assert ours == scheme

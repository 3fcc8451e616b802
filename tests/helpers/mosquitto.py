"""Private Mosquitto brokers for tests: the demo's (simulators/services/broker.py) and the shipped one.

:class:`MosquittoBroker` takes ``users`` (or an existing ``password_file``), an ``acl_file`` and
``clientid_from_username`` for a broker with logins. :class:`ShippedBroker` runs
deploy/mosquitto/mosquitto.conf and acl as shipped, only paths, ports and ``user`` rewritten, with
a TLS listener whose certificate deploy/mosquitto/make-certs.sh made for 127.0.0.1.
"""

from __future__ import annotations

import os
import queue
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from simulators.services.broker import MosquittoBroker, free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "mosquitto"
#: the users of a test deployment and their passwords: the service's three and two sites' bridges
USERS = {"uploader": "up-pw", "operator": "op-pw", "monitor": "mon-pw", "chamber-a": "a-pw",
         "sim-chamber": "sim-pw"}
#: the only settings the tests change in the shipped mosquitto.conf
REWRITTEN = {"listener", "persistence_location", "password_file", "acl_file", "user", "log_dest", "certfile",
             "keyfile"}

__all__ = [
    "REWRITTEN",
    "USERS",
    "MosquittoBroker",
    "ShippedBroker",
    "conf_settings",
    "mosquitto_binary",
    "shipped_broker",
]


def conf_settings(text: str) -> list[tuple[str, str]]:
    """(key, value) of every setting line of a mosquitto.conf."""
    settings = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            settings.append((key, value.strip()))
    return settings


def make_certs(out: Path) -> Path:
    """The lab CA and a broker certificate for 127.0.0.1, by the shipped make-certs.sh; the CA file."""
    subprocess.run(["bash", str(SHIPPED / "make-certs.sh"), "--out", str(out), "127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    return out / "tls-ca" / "ca.crt"


def mosquitto_passwd(passwd: Path, users: dict[str, str]) -> None:
    """The password file made with Mosquitto's own tool, as deploy/mosquitto/README.md says."""
    passwd.unlink(missing_ok=True)
    tool = str(Path(mosquitto_binary()).with_name("mosquitto_passwd"))
    if not os.path.exists(tool):
        tool = shutil.which("mosquitto_passwd") or "mosquitto_passwd"
    for name, password in users.items():
        create = [] if passwd.exists() else ["-c"]
        subprocess.run([tool, "-b", *create, str(passwd), name, password], check=True)
    passwd.chmod(0o600)


class ShippedBroker(MosquittoBroker):
    """A private mosquitto running the shipped mosquitto.conf and acl; ``tls_port`` is its 8883."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None) -> None:
        super().__init__(workdir, users=dict(USERS if users is None else users))
        self.tls_port = free_port()
        self.certs = workdir / "certs"
        self.ca_file = self.certs / "tls-ca" / "ca.crt"

    def rewrite(self, text: str, passwd: Path) -> str:
        """The shipped config with only paths, the listeners' ports and `user` changed."""
        out = []
        listeners = iter([self.port, self.tls_port])
        server = self.certs / "mosquitto-tls"
        for line in text.splitlines():
            key = line.split(None, 1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
            if key == "listener":
                line = f"listener {next(listeners)} 127.0.0.1"
            elif key == "persistence_location":
                line = f"persistence_location {self.workdir}/"
            elif key == "password_file":
                line = f"password_file {passwd}"
            elif key == "acl_file":
                line = f"acl_file {SHIPPED / 'acl'}"  # the shipped file itself
            elif key == "log_dest":
                line = f"log_dest file {self.log_path}"
            elif key == "certfile":
                line = f"certfile {server / 'server.crt'}"
            elif key == "keyfile":
                line = f"keyfile {server / 'server.key'}"
            elif key == "user" and os.geteuid() == 0:
                # the test's files belong to root (docs/design.md section 12: the broker drops privileges)
                line = "user root"
            out.append(line)
        return "\n".join(out) + "\n"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        passwd = self.workdir / "passwd"
        mosquitto_passwd(passwd, self.users or {})
        if not self.ca_file.exists():
            make_certs(self.certs)
        shipped = (SHIPPED / "mosquitto.conf").read_text()
        rewritten = self.rewrite(shipped, passwd)
        changed = {a[0] for a, b in zip(conf_settings(shipped), conf_settings(rewritten), strict=True) if a != b}
        assert changed <= REWRITTEN, changed
        self.config_path.write_text(rewritten)


@contextmanager
def shipped_broker(workdir: Path) -> Iterator[ShippedBroker]:
    broker = ShippedBroker(workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.thaw()
        broker.kill()


class V5Client:
    """An MQTT v5 client that reports reason codes (3.1.1 would hide denials, docs/design.md section 12).

    ``user`` None logs in anonymously; ``password`` defaults to the user's in :data:`USERS`;
    ``ca_file`` connects with TLS, checking the broker's certificate against that CA.
    """

    def __init__(self, host: str, port: int, user: str | None, password: str | None = None, *,
                 client_id: str | None = None, ca_file: Path | None = None) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"acl-test-{user}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, USERS.get(user) if password is None else password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = lambda c, u, f, rc, p: self.events.put(("connect", rc))
        self.client.on_publish = lambda c, u, mid, rc, p: self.events.put(("publish", rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.events.put(("subscribe", rcs[0]))
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        self.connect_code = self._next("connect")

    def _next(self, kind: str) -> Any:
        got, value = self.events.get(timeout=10)
        assert got == kind, (got, value)
        return value

    def publish(self, topic: str, payload: bytes = b"x") -> Any:
        self.client.publish(topic, payload, qos=1)
        return self._next("publish")

    def subscribe(self, topic: str) -> Any:
        self.client.subscribe(topic, qos=1)
        return self._next("subscribe")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def allowed(code: Any) -> bool:
    """A PUBACK/SUBACK/CONNACK that is no refusal (0x10 "no matching subscribers" is a success)."""
    return not code.is_failure

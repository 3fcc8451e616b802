"""MQTT brokers the demo and the tests start for themselves, on a free port, and who may use them.

:class:`MosquittoBroker`: a private Mosquitto (the broker labs run) in a temporary directory,
with persistence and a large explicit queue limit (docs/design.md section 12). Its owner controls its
life: stop (SIGTERM, clean persistence), kill (SIGKILL, what a crash does), freeze/thaw
(SIGSTOP/SIGCONT) and restart on the same port, so clients reconnect to it. Given users, an
ACL and ``clientid_from_username``, it runs with the same rules as the shipped broker
(deploy/mosquitto): logins only, each user its own topics, no login can take another's client id.

:class:`EmbeddedBroker`: amqtt, a pure-Python broker in a thread, for a laptop with no Mosquitto
(the demo extra: ``pip install './simulators[demo]'``). It speaks MQTT 3.1.1 only and keeps
nothing on disk: good enough to show the system working, not to run a chamber on. Given a password file and
:func:`grants`, it too refuses anonymous clients and keeps each user to its topics.

:func:`grants` and :func:`mosquitto_acl` are the one statement of who may publish and read what;
``deploy/mosquitto/acl`` is its shipped form (tests/system/test_deploy.py keeps the two equal).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)


READY_TIMEOUT = 10.0


def mosquitto_binary() -> str:
    found = find_mosquitto()
    if not found:
        raise RuntimeError("mosquitto is not installed (Debian: apt install mosquitto; the tests: scripts/test.sh)")
    return found


# ---------------------------------------------------------------- who may do what

#: the service's own logins; every other user is a bridge whose user name is its site
UPLOADER_USER = "uploader"
OPERATOR_USER = "operator"
MONITOR_USER = "monitor"
SERVICE_USERS = (UPLOADER_USER, OPERATOR_USER, MONITOR_USER)
#: in a topic of :func:`grants`: the bridge's own site, which is its user name (Mosquitto's ``%u``)
OWN_SITE = "%u"
#: the topics under ``{prefix}/{site}/`` a bridge writes and reads (docs/payload.md)
BRIDGE_WRITES = ("data", "status", "run", "command/reply")
BRIDGE_READS = ("ack", "command", "status")


@dataclass(frozen=True)
class Grants:
    """Topic filters a user may read (subscribe to and receive) and write (publish to)."""

    read: tuple[str, ...]
    write: tuple[str, ...]


def grants(prefix: str = "lab") -> dict[str, Grants]:
    """Every login of a deployment: the uploader, operators, the health probes and (``%u``) a bridge.

    A bridge writes only its own site's data, status, run state and command replies, and reads
    only its own acks and commands: it can neither forge another site's data nor acknowledge
    anything. Only the uploader acknowledges, only operators command.
    """
    p = prefix
    return {
        UPLOADER_USER: Grants(read=(f"{p}/+/data", f"{p}/+/status"), write=(f"{p}/+/ack", f"{p}/uploader/status")),
        OPERATOR_USER: Grants(read=(f"{p}/+/command/reply", f"{p}/+/status", f"{p}/+/run", "$SYS/#"),
                              write=(f"{p}/+/command",)),
        MONITOR_USER: Grants(read=(f"{p}/+/status",), write=()),
        OWN_SITE: Grants(read=tuple(f"{p}/{OWN_SITE}/{t}" for t in BRIDGE_READS),
                         write=tuple(f"{p}/{OWN_SITE}/{t}" for t in BRIDGE_WRITES)),
    }


def bridge_grants(site: str, prefix: str = "lab") -> Grants:
    """What the bridge of ``site`` (user ``site``) may do."""
    pattern = grants(prefix)[OWN_SITE]
    return Grants(read=tuple(t.replace(OWN_SITE, site) for t in pattern.read),
                  write=tuple(t.replace(OWN_SITE, site) for t in pattern.write))


def denied_to(user: str, prefix: str = "lab") -> tuple[str, ...]:
    """The bridge topics of the "site" named like a service user, which the ``%u`` patterns would
    otherwise grant to it (user ``operator`` writing ``lab/operator/data``, read as a site's data)."""
    own = grants(prefix)[user]
    return tuple(t for t in dict.fromkeys(f"{prefix}/{user}/{t}" for t in (*BRIDGE_WRITES, *BRIDGE_READS))
                 if t not in own.read and t not in own.write)


def acl_lines(g: Grants) -> list[str]:
    both = [t for t in g.read if t in g.write]
    return ([f"readwrite {t}" for t in both] + [f"read {t}" for t in g.read if t not in both]
            + [f"write {t}" for t in g.write if t not in both])


def mosquitto_acl(prefix: str = "lab") -> str:
    """:func:`grants` as a Mosquitto ``acl_file``: one block per service user, bridges by pattern."""
    out: list[str] = []
    for user, g in grants(prefix).items():
        if user == OWN_SITE:
            continue
        out += [f"user {user}", *(f"topic {line}" for line in acl_lines(g)),
                *(f"topic deny {t}" for t in denied_to(user, prefix)), ""]
    out += [f"pattern {line}" for line in acl_lines(grants(prefix)[OWN_SITE])]
    return "\n".join(out) + "\n"


def parse_acl(text: str) -> dict[str, set[tuple[str, str]]]:
    """(access, topic) per user of a Mosquitto ACL (``%u`` for ``pattern`` lines), comments dropped."""
    rules: dict[str, set[tuple[str, str]]] = {}
    user = None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
        elif words[0] == "topic" and user is not None:
            rules.setdefault(user, set()).add((words[1], words[2]))
        elif words[0] == "pattern":
            rules.setdefault(OWN_SITE, set()).add((words[1], words[2]))
        else:
            raise ValueError(f"not an ACL line: {line!r}")
    return rules


# ---------------------------------------------------------------- passwords


def new_password() -> str:
    return secrets.token_urlsafe(24)


def write_secret(path: Path, text: str) -> Path:
    """A new file only its owner can read (0600 from the start: never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def mosquitto_version() -> tuple[int, ...]:
    """Mosquitto's version (``mosquitto -h`` prints it first); (2,) if it does not say."""
    out = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"mosquitto version (\d+(?:\.\d+)*)", out)
    return tuple(int(part) for part in match[1].split(".")) if match else (2,)


def mosquitto_hash(password: str, major: int = 2) -> str:
    """A password file hash as ``mosquitto_passwd`` writes it, made here so that no password ever
    appears on a command line (``mosquitto_passwd -b`` shows it in the process list).
    Mosquitto 2: ``$7$`` PBKDF2-SHA512, 101 iterations; 1.x only knows ``$6$`` (salted SHA512)."""
    salt = os.urandom(12)
    b64 = base64.b64encode
    if major >= 2:
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
        return f"$7$101${b64(salt).decode()}${b64(digest).decode()}"
    return f"$6${b64(salt).decode()}${b64(hashlib.sha512(password.encode() + salt).digest()).decode()}"


def amqtt_hash(password: str) -> str:
    """A hash amqtt's FileAuthPlugin accepts: Argon2 (amqtt 0.12, pwdlib), else sha512-crypt."""
    try:
        from pwdlib.hashers.argon2 import Argon2Hasher

        return str(Argon2Hasher().hash(password))
    except ImportError:  # amqtt 0.11 verifies with passlib's sha512_crypt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def write_password_file(path: Path, users: dict[str, str], hasher: Any = None) -> Path:
    """``user:hash`` lines, mode 0600. ``hasher``: password -> hash (default: this Mosquitto's)."""
    if hasher is None:
        major = mosquitto_version()[0]

        def hasher(password: str) -> str:
            return mosquitto_hash(password, major)
    return write_secret(path, "".join(f"{name}:{hasher(password)}\n" for name, password in users.items()))


class MosquittoBroker:
    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "",
                 users: dict[str, str] | None = None, *, password_file: Path | None = None,
                 acl_file: Path | None = None, clientid_from_username: bool = False) -> None:
        """``users`` (name -> password) or an existing ``password_file`` turns anonymous access off;
        ``acl_file`` keeps each user to its topics (:func:`mosquitto_acl`); ``clientid_from_username``
        sets ``use_username_as_clientid``, so a login cannot take over another user's client id."""
        self.users = users
        self.password_file = password_file
        self.acl_file = acl_file
        self.clientid_from_username = clientid_from_username
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"

    @property
    def authenticated(self) -> bool:
        return self.users is not None or self.password_file is not None

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.authenticated else 'true'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to 'mosquitto', who cannot write here
        if self.users is not None:
            lines.append(f"password_file {write_password_file(self.workdir / 'passwd', self.users)}")
        elif self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.clientid_from_username:
            lines.append("use_username_as_clientid true")
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config)

    def start(self) -> None:
        self.write_config()
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err} {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_tail()}")

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        """Clean shutdown: the broker saves its persistence file."""
        if self.process is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._close()

    def kill(self) -> None:
        """Crash: SIGKILL, nothing saved since the last autosave."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait()
        self._close()

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, delay: float = 0.0) -> None:
        self.stop()
        time.sleep(delay)
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _close(self) -> None:
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


class EmbeddedBroker:
    """amqtt in a thread with its own event loop; ``protocol`` for clients is MQTT 3.1.1.

    With a ``password_file`` (:func:`amqtt_hash` lines) it refuses anonymous clients; with
    ``acl`` (user -> :class:`Grants`) each user may publish and subscribe only to its topics.
    """

    protocol = "3.1.1"

    def __init__(self, port: int | None = None, *, password_file: Path | None = None,
                 acl: dict[str, Grants] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password_file = password_file
        self.acl = acl
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def plugins(self) -> dict[str, Any]:
        if self.password_file is None:
            return {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
        plugins: dict[str, Any] = {
            "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(self.password_file)}}
        if self.acl is not None:
            plugins["amqtt.plugins.topic_checking.TopicAccessControlListPlugin"] = {
                "publish_acl": {user: list(g.write) for user, g in self.acl.items()},
                "acl": {user: list(g.read) for user, g in self.acl.items()},  # amqtt's subscribe ACL
            }
        return plugins

    def _run(self) -> None:
        from amqtt.broker import Broker  # type: ignore[import-untyped]  # an optional extra

        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": self.plugins(),
        }
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # amqtt calls its subscribe ACL "deprecated"
                self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        try:
            import amqtt  # type: ignore[import-untyped]  # noqa: F401  # present?
        except ImportError as exc:
            raise RuntimeError("no Mosquitto on this machine and no embedded broker: "
                               "pip install './simulators[demo]' from the repository (or install mosquitto)") from exc
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None:
            raise RuntimeError(f"the embedded MQTT broker did not start: {self._error}") from self._error

    def stop(self) -> None:
        if self._broker is not None and self._loop.is_running():
            with contextlib.suppress(Exception):  # shutting down anyway
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    kill = stop

"""MQTT brokers the demo and the tests start for themselves, on a free port.

:class:`MosquittoBroker`: a private Mosquitto (the broker labs run) in a temporary directory,
with persistence and a large explicit queue limit (RELIABILITY.md). Its owner controls its
life: stop (SIGTERM, clean persistence), kill (SIGKILL, what a crash does), freeze/thaw
(SIGSTOP/SIGCONT) and restart on the same port, so clients reconnect to it.

:class:`EmbeddedBroker`: amqtt, a pure-Python broker in a thread, for a laptop with no Mosquitto
(``pip install 'chamber-bridge[demo]'``). It speaks MQTT 3.1.1 only and keeps nothing on disk:
good enough to show the system working, not to run a chamber on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
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


class MosquittoBroker:
    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "",
                 users: dict[str, str] | None = None) -> None:
        """``users`` (name -> password) turns anonymous access off and writes a password file."""
        self.users = users
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.users is None else 'false'}",
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
            passwords = self.workdir / "passwd"
            passwords.unlink(missing_ok=True)
            passwd = str(Path(mosquitto_binary()).with_name("mosquitto_passwd"))
            if not os.path.exists(passwd):
                passwd = shutil.which("mosquitto_passwd") or "mosquitto_passwd"
            for name, password in self.users.items():
                create = [] if passwords.exists() else ["-c"]
                subprocess.run([passwd, "-b", *create, str(passwords), name, password], check=True)
            lines.append(f"password_file {passwords}")
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
    """amqtt in a thread with its own event loop; ``protocol`` for clients is MQTT 3.1.1."""

    protocol = "3.1.1"

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def _run(self) -> None:
        from amqtt.broker import Broker  # type: ignore[import-untyped]  # an optional extra

        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        try:
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
                               "pip install 'chamber-bridge[demo]' (or install mosquitto)") from exc
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

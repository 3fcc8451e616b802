"""The services as real processes: ``chamber-bridge poll`` and ``chamber-bridge upload``, each logging to a file.

A test that kills a process (a crash point, SIGKILL, a power cut) needs it in a process of its
own. :class:`ServiceProcess` starts one with the environment it is given (a crash point,
libfaketime), and can be killed, stopped cleanly, restarted, and measured (``rss_kib``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bridge.crashpoints import ENV as CRASH_ENV


def write_config(raw: dict[str, Any], tmp_path: Path, name: str = "chamber.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


class ServiceProcess:
    """``chamber-bridge COMMAND CONFIG`` in its own process, its output appended to ``log``."""

    def __init__(self, command: str, config: Path, log: Path, crash_at: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.command = command
        self.config = config
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.update(env or {})
        if crash_at:
            self.env[CRASH_ENV] = crash_at
        with log.open("a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "bridge", command, str(config)],
                                            stdout=out, stderr=subprocess.STDOUT, env=self.env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def died(self) -> bool:
        return self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL: nothing flushed, no ``finally`` runs (a crash, the OOM killer, a power cut)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def freeze(self) -> None:
        """SIGSTOP: the process hangs (swapping, a stuck disk) with everything it holds."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM and wait: the clean shutdown; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"chamber-bridge {self.command} did not stop on SIGTERM: "
                                 f"{self.log_tail()}") from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def rss_kib(self) -> int | None:
        """Resident memory (VmRSS) in KiB, None once the process is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None


class UploaderProcess(ServiceProcess):
    """``chamber-bridge upload CONFIG``."""

    def __init__(self, config: Path, log: Path, crash_at: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__("upload", config, log, crash_at, env)


class BridgeProcess(ServiceProcess):
    """``chamber-bridge poll CONFIG``."""

    def __init__(self, config: Path, log: Path, crash_at: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__("poll", config, log, crash_at, env)

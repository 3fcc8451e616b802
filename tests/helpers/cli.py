"""The chamber-bridge and simulator commands as real processes, the way a lab engineer runs them.

:func:`run_cli` runs ``chamber-bridge ARGS`` to the end; :func:`in_background` (and its two
shorthands :func:`simulate` and :func:`simulator_command`) starts a command that serves until it
is stopped, waits for the lines it prints to say where it listens, and on the way out stops it
with a signal and checks that it exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "configs" / "examples"


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``chamber-bridge ARGS`` in its own process."""
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=timeout)


def read_json(config: Path) -> list[dict[str, Any]]:
    """``chamber-bridge read CONFIG --json`` in a real process; the readings, one dict each."""
    result = run_cli("read", str(config), "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def example_with(example: str, tmp_path: Path, **transport: Any) -> Path:
    """The example config with every instrument's transport keys replaced (a free port)."""
    config = yaml.safe_load((EXAMPLES / example).read_text())
    for instrument in config["bridge"]["instruments"]:
        instrument["transport"].update(transport)
    config["bridge"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / example
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Background:
    """A command running in its own process, and the lines it printed on starting."""

    process: subprocess.Popen[str]
    lines: list[str]

    @property
    def where(self) -> str:
        """The first line: where a simulator listens (``socket://...`` or a pty path)."""
        return self.lines[0]


@contextmanager
def in_background(*args: str, lines: int = 1, stop: signal.Signals = signal.SIGINT,
                  timeout: float = 20) -> Iterator[Background]:
    """``python ARGS`` in its own process, once it has printed ``lines`` lines; on exit it gets
    ``stop`` and must exit 0 within ``timeout`` seconds (it is killed if it does not exit)."""
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        printed = [process.stdout.readline().strip() for _ in range(lines)]
        assert printed[0], _why(process)
        yield Background(process, printed)
    finally:
        process.send_signal(stop)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        assert code == 0, _why(process)


def simulate(*args: str, **options: Any) -> AbstractContextManager[Background]:
    """``chamber-bridge simulate ARGS`` in the background (see :func:`in_background`)."""
    return in_background("-m", "bridge", "simulate", *args, **options)


def simulator_command(name: str, *args: str, **options: Any) -> AbstractContextManager[Background]:
    """``python -m simulators NAME ARGS`` in the background: the ``simulate`` group on its own, without
    the main CLI and its entry points (what ``chamber-bridge simulate NAME`` runs)."""
    return in_background("-m", "simulators", name, *args, **options)


def _why(process: subprocess.Popen[str]) -> str:
    """What the process said on stderr, once it has ended (reading it earlier could block)."""
    if process.poll() is None or process.stderr is None:
        return f"no output; exit code {process.returncode}"
    return f"exit code {process.returncode}: {process.stderr.read()}"

"""Simulated text instruments on real transports, and configs that reach them.

Shared by the scpi_psu, scpi and serial_ascii driver tests: a simulator served on TCP (a raw
SCPI socket or a serial device server) or a pty, and ``instrument(...)`` building the config a
lab would write and connecting it with :func:`bridge.instrument.connect_instrument`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import simulators
from bridge.config import InstrumentConfig
from bridge.errors import TransportTimeout
from bridge.instrument import Instrument, connect_instrument
from bridge.model import Reading
from simulators.scpi_psu import ScpiPsuSimulator
from simulators.serving import ByteDevice, PtyServer, TcpServer

#: pyvisa-sim description of a Keysight and a Rigol supply (resources on 5025 and 5555)
PSU_YAML = Path(simulators.__file__).parent / "visa_sim" / "psu.yaml"
EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"

#: generous for a loaded 2-core machine; fault tests pass their own shorter timeouts
TIMEOUT = 1.0


def psu_sim(dialect: str) -> ScpiPsuSimulator:
    """A noiseless three-channel supply; channel 1: 5 V / 1 A limit into 10 ohm (CV, 0.5 A);
    channel 2: 12 V / 0.2 A into 10 ohm (CC, 2 V); channel 3: 3.3 V programmed, output off."""
    sim = ScpiPsuSimulator(dialect, seed=1)
    sim.noise = 0.0
    sim.set_voltage(1, 5.0)
    sim.set_current(1, 1.0)
    sim.set_output(1, True)
    sim.set_voltage(2, 12.0)
    sim.set_current(2, 0.2)
    sim.set_output(2, True)
    sim.set_voltage(3, 3.3)
    return sim


@dataclass
class Served:
    """A simulator reachable over a real transport; ``kind`` is "tcp" or "pty"."""

    device: ByteDevice
    server: PtyServer | TcpServer
    kind: str

    @property
    def visa_resource(self) -> str:
        if isinstance(self.server, TcpServer):
            return f"TCPIP::127.0.0.1::{self.server.port}::SOCKET"
        return f"ASRL{self.server.port}::INSTR"

    @property
    def serial_port(self) -> str:
        return self.server.url if isinstance(self.server, TcpServer) else self.server.port

    def visa(self, driver: str, name: str = "psu", timeout: float = TIMEOUT, **options: Any) -> Instrument:
        return connect(name, driver, {"kind": "visa", "resource": self.visa_resource, "timeout": timeout},
                       options)

    def serial(self, driver: str, name: str = "dev", timeout: float = TIMEOUT, **options: Any) -> Instrument:
        return connect(name, driver, {"kind": "serial", "port": self.serial_port, "timeout": timeout}, options)

    def wait_sent(self, timeout: float = 5.0) -> bool:
        """Block until the device's queued (delayed) output has been handed to the transport."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            links = self.server.links if isinstance(self.server, TcpServer) else [self.server.link]
            if all(link is None or link.pending == 0 for link in links):
                return True
            time.sleep(0.01)
        return False

    def unplug(self) -> None:
        if isinstance(self.server, PtyServer):
            self.server.unplug()
        else:
            self.server.drop_connections()


@contextmanager
def serve(device: ByteDevice, kind: str) -> Iterator[Served]:
    """One device (its state shared by every connection) on a pty or on TCP."""
    server: PtyServer | TcpServer = PtyServer(device) if kind == "pty" else TcpServer(lambda: device)
    with server:
        yield Served(device, server, kind)


def connect(name: str, driver: str, transport: dict[str, Any], options: dict[str, Any]) -> Instrument:
    config = InstrumentConfig.model_validate(
        {"name": name, "driver": driver, "transport": transport, "options": options})
    return connect_instrument(config)


def read_when_in_step(inst: Instrument, attempts: int = 20) -> list[Reading]:
    """Poll until a poll succeeds, allowing only timeouts on the way (late replies still coming)."""
    for _ in range(attempts - 1):
        try:
            return inst.read()
        except TransportTimeout:
            continue
    return inst.read()


def sim_instrument(resource: str, driver: str, name: str = "psu", **options: Any) -> Instrument:
    """An instrument on the pyvisa-sim backend described by :data:`PSU_YAML`."""
    return connect(name, driver, {"kind": "visa", "resource": resource, "backend": f"{PSU_YAML}@sim",
                                  "timeout": 0.3}, options)


@dataclass
class CliSimulator:
    process: subprocess.Popen[str]
    where: str


@contextmanager
def run_cli(module: str, *args: str) -> Iterator[CliSimulator]:
    """Run ``python -m module args``, read the one line saying where it listens; SIGINT at the end."""
    process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        yield CliSimulator(process, process.stdout.readline().strip())
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def example_with(example: str, tmp_path: Path, **transport: Any) -> Path:
    """The example config with the first instrument's transport keys replaced (a free port)."""
    config = yaml.safe_load((EXAMPLES / example).read_text())
    config["bridge"]["instruments"][0]["transport"].update(transport)
    config["bridge"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / example
    path.write_text(yaml.safe_dump(config))
    return path


def read_json(config: Path) -> list[dict[str, Any]]:
    """``chamber-bridge read CONFIG --json`` in a real process; the readings, one dict each."""
    result = subprocess.run([sys.executable, "-m", "bridge", "read", str(config), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]

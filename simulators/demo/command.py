"""``chamber-bridge demo``: the whole system on one machine, one growth run, start to finish.

What runs: the simulated MBE chamber (gauges, pyrometer, Eurotherm cells, heater supply,
coupled by the chamber model), an MQTT broker (``--mqtt HOST:PORT``, else a private Mosquitto
if one is installed, else the embedded pure-Python broker), the bridge polling the chamber
and the uploader writing the local store, all with the real code paths: the run is opened and
closed over MQTT like ``start-run``/``stop-run`` do, and the uploader finalizes it from what
arrived through the broker.

The private broker runs as a lab's does (deploy/mosquitto): no anonymous logins, one user each
for the bridge (its site), the uploader and the operator (start/stop), with fresh random
passwords in 0600 files in the demo's temporary directory, and the per-site ACL
(:func:`simulators.services.broker.grants`), so the demo shows the system working under the rules it is
deployed with. Mosquitto also ties each client id to its user (``use_username_as_clientid``).

The recipe (scaled to ``--duration``): baseline, ramp the substrate heater, heat the Ga cell
and open its shutter, hold (the growth), close the shutter, cool down. The chamber's time
constants are shortened so the physics shows within a short demo.

Ctrl-C at any moment: an open run is closed as ``abort`` (and finalized if the uploader gets
the time), every thread and the broker process are stopped.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import click

from bridge.config import Config, parse_config
from bridge.edge.service import BridgeService
from bridge.model import Reading
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.wire.request import request
from simulators.chamber.mbe import SimulatedChamber
from simulators.services.broker import (
    OPERATOR_USER,
    UPLOADER_USER,
    EmbeddedBroker,
    MosquittoBroker,
    amqtt_hash,
    bridge_grants,
    find_mosquitto,
    grants,
    mosquitto_acl,
    new_password,
    write_password_file,
    write_secret,
)

SITE = "demo-chamber"
#: heater supply voltage at the top of the ramp: 4 ohm heater, 16 V -> 64 W, about 520 degC substrate
HEATER_VOLTS = 16.0
GROWTH_CELL = "ga"
GROWTH_CELL_C = 950.0
IDLE_CELL_C = 200.0


class Broker(Protocol):
    host: str
    port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Step:
    """A recipe step at a fraction of the run's duration."""

    at: float
    what: str
    action: Callable[[SimulatedChamber], None]


def recipe(ramp_steps: int = 10) -> list[Step]:
    def heater(volts: float) -> Callable[[SimulatedChamber], None]:
        return lambda chamber: chamber.set_heater_voltage(volts)

    steps = [Step(0.10 + 0.25 * i / ramp_steps, f"heater {HEATER_VOLTS * (i + 1) / ramp_steps:.1f} V",
                  heater(HEATER_VOLTS * (i + 1) / ramp_steps))
             for i in range(ramp_steps)]
    return [
        *steps,
        Step(0.35, f"Ga cell to {GROWTH_CELL_C:.0f} degC", lambda c: c.set_cell_setpoint(GROWTH_CELL, GROWTH_CELL_C)),
        Step(0.45, "Ga shutter open: growth", lambda c: c.set_shutter(GROWTH_CELL, True)),
        Step(0.75, "Ga shutter closed", lambda c: c.set_shutter(GROWTH_CELL, False)),
        Step(0.77, f"Ga cell back to {IDLE_CELL_C:.0f} degC",
             lambda c: c.set_cell_setpoint(GROWTH_CELL, IDLE_CELL_C)),
        Step(0.80, "heater off: cool down", lambda c: c.set_heater_voltage(0.0)),
    ]


class CountingBridge(BridgeService):
    """The bridge, counting readings per instrument and channel for the progress display."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.counts: Counter[tuple[str, str]] = Counter()

    def _store(self, readings: list[Reading]) -> None:
        super()._store(readings)
        self.counts.update((r.instrument, r.channel) for r in readings)


@dataclass
class Chosen:
    """The broker the demo talks to, and each role's login (None: anonymous, a ``--mqtt`` broker)."""

    broker: Broker | None
    host: str
    port: int
    protocol: str
    #: user name -> its password file (0600), for the bridge (the site), the uploader, the operator
    logins: dict[str, Path] | None = None

    def mqtt(self, user: str) -> dict[str, Any]:
        raw: dict[str, Any] = {"host": self.host, "port": self.port, "protocol": self.protocol, "keepalive": 10}
        if self.logins is not None:
            raw.update(username=user, password_file=str(self.logins[user]))
        return raw


def demo_logins(workdir: Path, site: str) -> tuple[dict[str, str], dict[str, Path]]:
    """Fresh passwords for the bridge, the uploader and the operator; each in its own 0600 file."""
    passwords = {user: new_password() for user in (site, UPLOADER_USER, OPERATOR_USER)}
    files = {user: write_secret(workdir / "secrets" / user, password + "\n") for user, password in passwords.items()}
    return passwords, files


def choose_broker(mqtt: str | None, workdir: Path, kind: str = "auto", site: str = SITE) -> Chosen:
    """The broker for ``--mqtt`` (not ours, anonymous) or a private one this demo starts with logins."""
    if mqtt:
        host, _, port = mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter(f"{mqtt!r}: expected HOST:PORT", param_hint="--mqtt")
        return Chosen(None, host, int(port), "5")
    if kind == "mosquitto" and not find_mosquitto():
        raise RuntimeError("--broker mosquitto: no mosquitto on this machine (Debian: apt install mosquitto)")
    passwords, logins = demo_logins(workdir, site)
    broker: Broker
    if kind == "mosquitto" or (kind == "auto" and find_mosquitto()):
        broker = MosquittoBroker(workdir / "mosquitto", users=passwords,
                                 acl_file=write_secret(workdir / "acl", mosquitto_acl()), clientid_from_username=True)
        protocol, what = "5", "a private Mosquitto"
    else:
        acl = {user: g for user, g in grants().items() if user in passwords} | {site: bridge_grants(site)}
        broker = EmbeddedBroker(password_file=write_password_file(workdir / "amqtt-passwd", passwords, amqtt_hash),
                                acl=acl)
        protocol, what = EmbeddedBroker.protocol, "the embedded broker (amqtt)"
    broker.start()
    click.echo(f"broker: {what} on {broker.host}:{broker.port} (logins: {', '.join(passwords)}; per-site ACL)")
    return Chosen(broker, broker.host, broker.port, protocol, logins)


@dataclass(frozen=True)
class DemoConfigs:
    """One config per role, each with its own login: a Mosquitto with use_username_as_clientid
    lets one connection per user in, so the roles must not share one."""

    bridge: Config
    uploader: Config
    operator: Config


def demo_config(chamber: SimulatedChamber, chosen: Chosen, state: Path, store: Path,
                points_per_chunk: int) -> DemoConfigs:
    raw = chamber.config(site=SITE)
    raw["mqtt"] = chosen.mqtt(SITE)
    raw["bridge"]["state_dir"] = str(state / "bridge")
    bridge = parse_config(raw)
    uploader = parse_config({"site": SITE, "mqtt": chosen.mqtt(UPLOADER_USER), "uploader": {
        "state_dir": str(state / "uploader"), "points_per_chunk": points_per_chunk,
        # the broker's session id; Mosquitto uses the user name anyway (use_username_as_clientid)
        "client_id": UPLOADER_USER if chosen.logins else f"chamber-bridge-demo-{chosen.port}",
        "finalize_grace": 30.0, "sink": {"kind": "local", "path": str(store)}}})
    operator = parse_config({"site": SITE, "mqtt": chosen.mqtt(OPERATOR_USER)})
    return DemoConfigs(bridge, uploader, operator)


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so a killed demo cleans up the same way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Demo:
    def __init__(self, duration: float, store: Path, mqtt: str | None, points_per_chunk: int,
                 broker: str = "auto") -> None:
        self.duration = duration
        self.broker_kind = broker
        self.store = store.resolve()
        self.mqtt = mqtt
        self.points_per_chunk = points_per_chunk
        self.workdir = Path(tempfile.mkdtemp(prefix="chamber-bridge-demo-"))
        self.stack: list[Callable[[], None]] = []
        self.run_id: str | None = None
        self.bridge: CountingBridge | None = None
        self.uploader: UploaderService | None = None
        self.configs: DemoConfigs | None = None
        self.started = time.monotonic()

    def run(self) -> int:
        try:
            with interrupt_on_sigterm():
                self._start()
                self._play()
                return self._finish()
        except KeyboardInterrupt:
            click.echo("\ninterrupted: closing the run as abort and stopping everything", err=True)
            self._abort()
            return 130
        finally:
            for undo in reversed(self.stack):
                with suppress(Exception):
                    undo()
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------ steps

    def _start(self) -> None:
        chosen = choose_broker(self.mqtt, self.workdir, self.broker_kind)
        if chosen.broker is not None:
            self.stack.append(chosen.broker.stop)
        chamber = SimulatedChamber(seed=1).start()
        self.stack.append(chamber.stop)
        self.chamber = chamber
        tau = max(2.0, self.duration / 12)
        chamber.model.substrate_tau = tau
        for cell in chamber.model.cells.values():
            cell.tau = tau
        self.configs = configs = demo_config(chamber, chosen, self.workdir, self.store, self.points_per_chunk)
        instruments = configs.bridge.bridge.instruments
        click.echo(f"chamber: {len(instruments)} simulated instruments ({', '.join(i.name for i in instruments)})")
        settings = UploaderSettings(status_interval=1.0, backoff_initial=0.2, backoff_cap=2.0)
        self.uploader = UploaderService(configs.uploader, settings=settings)
        self.uploader.start()
        self.stack.append(self.uploader.stop)
        self.bridge = CountingBridge(configs.bridge)
        self.bridge.start()
        self.stack.append(self.bridge.stop)
        self._wait(lambda: self.bridge is not None and self.bridge.publisher.connected, 15, "the bridge to connect")
        self._wait(lambda: self.uploader is not None and self.uploader.subscriber.connected.is_set(), 15,
                   "the uploader to connect")
        reply = request(configs.operator.mqtt, SITE, "start_run", {
            "stream_name": "demo-growth", "physical_sample": "demo-sample-1", "synth_source_id": None,
            "project_id": None, "tags": ["demo", "GaAs"]})
        if not reply.ok:
            raise click.ClickException(f"the bridge refused to start the run: {reply.message}")
        self.run_id = reply.message.split()[1]
        click.echo(f"run {self.run_id} started (seq {reply.seq}); recipe over {self.duration:g} s")

    def _play(self) -> None:
        steps = recipe()
        start = time.monotonic()
        next_progress = start
        while (elapsed := time.monotonic() - start) < self.duration:
            while steps and elapsed >= steps[0].at * self.duration:
                step = steps.pop(0)
                step.action(self.chamber)
                click.echo(f"[{elapsed:5.1f} s] recipe: {step.what}")
            if time.monotonic() >= next_progress:
                click.echo(self._progress(elapsed))
                next_progress += max(1.0, self.duration / 15)
            time.sleep(0.05)
        assert self.configs is not None
        reply = request(self.configs.operator.mqtt, SITE, "stop_run", {"exit_status": "success"})
        if not reply.ok:
            raise click.ClickException(f"the bridge refused to stop the run: {reply.message}")
        click.echo(f"run stopped (seq {reply.seq}); waiting for the uploader to finalize it")

    def _progress(self, elapsed: float) -> str:
        assert self.bridge is not None and self.uploader is not None
        per_instrument: Counter[str] = Counter()
        for (instrument, _), n in list(self.bridge.counts.items()):
            per_instrument[instrument] += n
        channels = len(self.bridge.counts)
        spool = self.uploader.last_status.get("spool", {}).get("depth", "-")
        run = "open" if self.bridge.runs.current else "closed"
        readings = "  ".join(f"{name} {n}" for name, n in per_instrument.items())
        return (f"[{elapsed:5.1f} s] run {run} | readings ({channels} channels): {readings} | "
                f"outbox {self.bridge.outbox.depth()} | spool {spool} | chunks {self.uploader.chunks_confirmed}")

    def _finish(self) -> int:
        uploader, run_id = self.uploader, self.run_id
        assert uploader is not None and run_id is not None
        self._wait(lambda: run_id in uploader.finalized, 60, "the uploader to finalize the run")
        from bridge.store.reader import RunStore

        manifest = RunStore(self.store).find(run_id)
        report = manifest.report
        click.echo("")
        click.echo(f"run {manifest.data_id} ({manifest.stream_name}): {manifest.state}")
        click.echo(f"  {len(manifest.raw['channels'])} channels, {report['readings']} readings "
                   f"({report['bad_quality']} with a bad quality, kept without a value), {report['chunks']} chunks, "
                   f"{report['retries']} retries, clock synchronised: {report['clock'].get('ntp_synchronized')}")
        width = max(len("channel"), *(len(name) for name in manifest.raw["channels"]))
        click.echo(f"  {'channel':<{width}} {'units':<6} {'points':>7} {'bad':>5} {'chunks':>7}")
        for name, channel in manifest.raw["channels"].items():
            click.echo(f"  {name:<{width}} {channel['units']:<6} {channel['points']:>7} {channel['bad_quality']:>5} "
                       f"{channel['chunks']:>7}")
        click.echo(f"store: {manifest.run_dir}")
        try:
            from bridge.store.plot import plot_run

            out = plot_run(RunStore(self.store).load(run_id), self.store / f"{manifest.data_id}.png")
            click.echo(f"plot: {out}")
        except ImportError:
            click.echo("plot: skipped (matplotlib is missing: pip install './simulators[demo]')")
        click.echo(f"read it back: chamber-bridge runs show {manifest.short_id} --store {self.store}")
        return 0

    def _abort(self) -> None:
        """Close an open run as abort (straight into the outbox) and give the uploader a moment."""
        if self.bridge is None or not self.bridge.runs.current:
            return
        ok, message, _ = self.bridge.runs.stop({"exit_status": "abort", "reason": "the demo was interrupted"})
        click.echo(f"  {message}", err=True)
        uploader, run_id = self.uploader, self.run_id
        if ok and uploader is not None and run_id is not None:
            with suppress(KeyboardInterrupt, TimeoutError):
                self._wait(lambda: run_id in uploader.finalized, 10, "the aborted run to be finalized")

    @staticmethod
    def _wait(condition: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.05)


@click.command()
@click.option("--duration", type=click.FloatRange(min=5), default=60.0, show_default=True,
              help="Seconds the growth recipe takes.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Local store the run is written to.")
@click.option("--mqtt", metavar="HOST:PORT",
              help="Use this broker (anonymous logins) instead of starting a private one with logins and ACLs.")
@click.option("--broker", type=click.Choice(["auto", "mosquitto", "embedded"]), default="auto", show_default=True,
              help="Without --mqtt: a private Mosquitto if installed (auto), or the embedded pure-Python broker.")
@click.option("--points-per-chunk", type=click.IntRange(min=1), default=20, show_default=True)
def demo(duration: float, store: Path, mqtt: str | None, broker: str, points_per_chunk: int) -> None:
    """Run the whole system on this machine: simulated chamber, broker, bridge, uploader, one run."""
    try:
        code = Demo(duration, store, mqtt, points_per_chunk, broker).run()
    except (TimeoutError, RuntimeError, OSError) as exc:
        click.echo(f"chamber-bridge: error: demo: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


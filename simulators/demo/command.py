"""``chamber-bridge demo``: the whole system on one machine, one growth run, start to finish.

What runs: the simulated MBE chamber (gauges, pyrometer, Eurotherm cells, heater supply,
coupled by the chamber model), an MQTT broker (``--mqtt HOST:PORT``, else a private Mosquitto
if one is installed, else the embedded pure-Python broker), the bridge polling the chamber
and the uploader writing the local store, all with the real code paths: the run is opened and
closed by the bridge's automatic trigger (``bridge.runs.auto``) on the substrate temperature the
pyrometer reads, the recipe's steps are annotations sent over MQTT as ``annotate`` sends them,
and the uploader finalizes the run from what arrived through the broker.

The private broker runs as a lab's does (deploy/mosquitto): no anonymous logins, one user each
for the bridge (its site), the uploader and the operator (next-run, annotate), with fresh random
passwords in 0600 files in the demo's temporary directory, and the per-site ACL
(:func:`simulators.services.broker.grants`), so the demo shows the system working under the rules it is
deployed with. Mosquitto also ties each client id to its user (``use_username_as_clientid``).

The recipe (scaled to ``--duration``): baseline, ramp the substrate heater, heat the Ga cell
and open its shutter, hold (the growth), close the shutter, cool down. The chamber's time
constants are scaled with it, so the physics, and with it the moments the trigger fires, keep
their place in the recipe whatever the duration. The run opens once the substrate has been
above 300 degC for a moment, with a pre-roll that reaches back into the baseline, and closes once
it has cooled below 250 degC.

Ctrl-C at any moment: an open run is closed as ``abort`` (as ``stop-run`` closes an automatic
run; finalized if the uploader gets the time), every thread and the broker process are stopped.
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

from bridge.config import PRE_ROLL_MAX, Config, parse_config
from bridge.edge.service import BridgeService
from bridge.errors import BridgeError
from bridge.model import Reading
from bridge.names import printable
from bridge.store.layout import Manifest
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.wire import contract
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


#: the automatic trigger (``bridge.runs.auto``): the substrate, as the pyrometer reads it, is hot; it has cooled
#: (a lower threshold than the start's, so the noise of one reading cannot close and reopen the run)
START_WHEN = "pyrometer.temperature > 300.0"
STOP_WHEN = "pyrometer.temperature < 250.0"


@dataclass
class Step:
    """A recipe step at a fraction of the run's duration; ``note`` (if any) is logged as an annotation."""

    at: float
    what: str
    action: Callable[[SimulatedChamber], None]
    note: str | None = None
    tags: tuple[str, ...] = ()


def recipe(ramp_steps: int = 10) -> list[Step]:
    """The growth, step by step. The heater ramp's increments are one annotation (its start), not ten."""

    def heater(volts: float) -> Callable[[SimulatedChamber], None]:
        return lambda chamber: chamber.set_heater_voltage(volts)

    def noted(at: float, what: str, action: Callable[[SimulatedChamber], None], *tags: str) -> Step:
        return Step(at, what, action, what, tags)

    ramp = [Step(0.10 + 0.25 * i / ramp_steps, f"heater {HEATER_VOLTS * (i + 1) / ramp_steps:.1f} V",
                 heater(HEATER_VOLTS * (i + 1) / ramp_steps))
            for i in range(ramp_steps)]
    ramp[0].note, ramp[0].tags = f"heater ramp to {HEATER_VOLTS:g} V", ("heater",)
    return [
        *ramp,
        noted(0.35, f"Ga cell to {GROWTH_CELL_C:.0f} degC", lambda c: c.set_cell_setpoint(GROWTH_CELL, GROWTH_CELL_C),
              "cell"),
        noted(0.45, "Ga shutter open: growth", lambda c: c.set_shutter(GROWTH_CELL, True), "shutter"),
        noted(0.75, "Ga shutter closed", lambda c: c.set_shutter(GROWTH_CELL, False), "shutter"),
        noted(0.77, f"Ga cell back to {IDLE_CELL_C:.0f} degC",
              lambda c: c.set_cell_setpoint(GROWTH_CELL, IDLE_CELL_C), "cell"),
        noted(0.80, "heater off: cool down", lambda c: c.set_heater_voltage(0.0), "heater"),
    ]


def auto_runs(duration: float) -> dict[str, Any]:
    """``bridge.runs.auto`` for a recipe of ``duration`` seconds.

    The chamber's time constants are ``duration / 12`` (:meth:`Demo._start`), so the substrate
    passes 300 degC at about a third of the recipe and falls below 250 degC at about 0.86 of it,
    whatever the duration. The debounces are 5 % of the recipe; the pre-roll (30 % and one more
    second, for the poll that first saw the condition) reaches back before the heater ramp at
    10 %, so the run holds a little baseline and every step of the recipe (up to the longest
    pre-roll, 600 s: a recipe of more than about 40 minutes leaves its ramp's first minutes out).
    ``max_duration`` closes the run as ``abort`` should the substrate never cool.
    """
    return {"start_when": START_WHEN, "true_for": round(0.05 * duration, 2),
            "stop_when": STOP_WHEN, "false_for": round(0.05 * duration, 2),
            "pre_roll": round(min(0.3 * duration + 1.0, PRE_ROLL_MAX), 2),
            "max_duration": round(duration, 2), "name": "demo-{start:%Y%m%d-%H%M%S}", "tags": ["demo"]}


def why_text(why: object) -> str:
    """A marker's ``why``: ``pyrometer.temperature > 300.0 (pyrometer.temperature=301.2)``."""
    if not isinstance(why, dict):
        return "-"
    values = why.get("values")
    if not isinstance(values, dict):
        values = {}
    shown = ", ".join(f"{printable(name, 80)}={value:.1f}" if isinstance(value, float) else
                      f"{printable(name, 80)}={printable(value, 40)}" for name, value in values.items())
    return printable(why.get("expression"), 400) + (f" ({shown})" if shown else "")


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
                points_per_chunk: int, duration: float) -> DemoConfigs:
    raw = chamber.config(site=SITE)
    raw["mqtt"] = chosen.mqtt(SITE)
    raw["bridge"]["state_dir"] = str(state / "bridge")
    raw["bridge"]["runs"] = {"auto": auto_runs(duration)}
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
        #: the run the trigger opened (this demo's one run), and whether it has closed
        self.run_id: str | None = None
        self.run_closed = False
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
        # time constants in proportion to the recipe: the trigger fires at the same place in it (auto_runs)
        tau = self.duration / 12
        chamber.model.substrate_tau = tau
        for cell in chamber.model.cells.values():
            cell.tau = tau
        self.configs = configs = demo_config(chamber, chosen, self.workdir, self.store, self.points_per_chunk,
                                             self.duration)
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
        auto = configs.bridge.bridge.runs.auto
        assert auto is not None
        click.echo(f"automatic runs: open when {auto.start_when} for {auto.true_for:g} s (with {auto.pre_roll:g} s "
                   f"of readings before), close when {auto.stop_when} for {auto.false_for:g} s")
        reply = self._ask("next_run", {"stream_name": "demo-growth", "physical_sample": "demo-sample-1",
                                       "tags": ["demo", "GaAs"]})
        click.echo(f"next-run: {reply.message}")
        click.echo(f"recipe over {self.duration:g} s; its steps are annotations")

    def _ask(self, action: str, params: dict[str, Any]) -> contract.Reply:
        """Ask the bridge over the command topic with the operator's login, as ``next-run`` and ``annotate`` do."""
        assert self.configs is not None
        reply = request(self.configs.operator.mqtt, SITE, action, params)
        if not reply.ok:
            raise click.ClickException(f"the bridge refused {action}: {reply.message}")
        return reply

    def _play(self) -> None:
        """The recipe, then the cool-down until the trigger has closed the run (``max_duration`` at the latest)."""
        steps = recipe()
        start = time.monotonic()
        next_progress = start
        # the trigger opens the run at about 0.4 of the recipe and max_duration (the recipe's) closes it at the latest
        limit = 1.5 * self.duration + 30
        while (elapsed := time.monotonic() - start) < self.duration or not self.run_closed:
            if elapsed > limit:
                waiting = "open" if self.run_id is None else "close"
                raise TimeoutError(f"timed out after {limit:g} s waiting for the trigger to {waiting} the run")
            while steps and elapsed >= steps[0].at * self.duration:
                step = steps.pop(0)
                step.action(self.chamber)
                line = f"[{elapsed:5.1f} s] recipe: {step.what}"
                if step.note is not None:
                    reply = self._ask("annotate", {"text": step.note, "tags": list(step.tags)})
                    line += (f" (annotated, seq {reply.seq})" if step.note == step.what
                             else f" (annotated {step.note!r}, seq {reply.seq})")
                click.echo(line)
            self._follow_run(elapsed)
            if time.monotonic() >= next_progress:
                click.echo(self._progress(elapsed))
                next_progress += max(1.0, self.duration / 15)
            time.sleep(0.05)
        click.echo("waiting for the uploader to finalize the run")

    def _follow_run(self, elapsed: float) -> None:
        """Say when the trigger opens and closes the run (the first run of this demo; there is no other)."""
        assert self.bridge is not None
        current = self.bridge.runs.current
        if current is not None and self.run_id is None:
            self.run_id = str(current["run_id"])
            click.echo(f"[{elapsed:5.1f} s] run {self.run_id} ({current.get('stream_name')}) opened by the trigger: "
                       f"{why_text(current.get('why'))}; pre-roll from seq {current.get('pre_roll_from')}")
        elif current is None and self.run_id is not None and not self.run_closed:
            self.run_closed = True
            click.echo(f"[{elapsed:5.1f} s] run {self.run_id} closed")

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
        uploader, run_id, configs = self.uploader, self.run_id, self.configs
        assert uploader is not None and run_id is not None and configs is not None
        self._wait(lambda: run_id in uploader.finalized, 60, "the uploader to finalize the run")
        from bridge.store.reader import RunStore, format_event

        manifest = RunStore(self.store).find(run_id)
        report = manifest.report
        auto = configs.bridge.bridge.runs.auto
        assert auto is not None
        click.echo("")
        click.echo(f"run {manifest.data_id} ({manifest.stream_name}): {manifest.state}, {manifest.exit_status}")
        for when, verb, held in (("start", "opened", auto.true_for), ("stop", "closed", auto.false_for)):
            why = manifest.why.get(when)
            if isinstance(why, dict):
                click.echo(f"  {verb} by the trigger ({manifest.trigger}): {why_text(why)}, held {held:g} s")
        if report.get("stop_reason"):
            click.echo(f"  stopped: {printable(report['stop_reason'])}")
        if report.get("pre_roll_from") is not None:
            click.echo(f"  pre-roll: from seq {report['pre_roll_from']}, the start marker at seq "
                       f"{report.get('start_seq')}")
        self._identities(manifest)
        click.echo(f"  events ({len(manifest.events)}):")
        for event in manifest.events:
            click.echo(f"    {format_event(event)}")
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

    @staticmethod
    def _identities(manifest: Manifest) -> None:
        """Which instruments made the run (the start baseline) and what changed before its stop."""
        from bridge.store import baseline as baselines

        start = manifest.baseline.get("start") or {}
        click.echo(f"  instruments ({len(start)}, identity at the run's start):")
        for name, snapshot in start.items():
            identity = snapshot.get("identity") or {}
            said = ", ".join(f"{key} {printable(value, 40)}" for key, value in identity.items()) or "not read"
            click.echo(f"    {printable(name, 40)}: {said}")
        changed = baselines.changes(manifest.baseline)
        click.echo("  changed between start and stop: "
                   + (", ".join(f"{f.name} {f.start!r} -> {f.stop!r}" for f in changed) if changed else "nothing"))

    def _abort(self) -> None:
        """Close the open run as abort (straight into the outbox, as ``stop-run`` closes an automatic run) and
        give the uploader a moment to finalize it."""
        current = None if self.bridge is None else self.bridge.runs.current
        if self.bridge is None or current is None:
            return
        run_id = str(current["run_id"])
        ok, message, _ = self.bridge.runs.stop({"exit_status": "abort", "reason": "the demo was interrupted"})
        click.echo(f"  {message}", err=True)
        uploader = self.uploader
        if ok and uploader is not None:
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
    except (TimeoutError, RuntimeError, OSError, BridgeError) as exc:
        click.echo(f"chamber-bridge: error: demo: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


"""The ``chamber-bridge`` command line (docs/design.md section 7).

Exit codes: 0 success, 2 bad usage or config, 1 runtime failure. Errors are one line on
stderr; ``--debug`` adds tracebacks and debug logging (including raw bytes on the wire).
Extra commands (``simulate`` and ``demo``, from the separate ``chamber-bridge-simulators``
distribution in ``simulators/``) plug in through the entry-point group ``chamber_bridge.commands``,
so the Pi installation does not depend on the simulators.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

import click

from bridge import __version__
from bridge.cli.common import EXIT_RUNTIME, EXIT_USAGE, fail, load, reported_errors
from bridge.cli.quarantine import upload_quarantine
from bridge.cli.runs import runs
from bridge.errors import BridgeError
from bridge.model import Reading
from bridge.names import printable

COMMAND_ENTRY_POINTS = "chamber_bridge.commands"

log = logging.getLogger("bridge.cli.main")


def configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # pymodbus and pyvisa log every failure themselves; the project reports them once.
        for noisy in ("pymodbus", "pyvisa"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


class BridgeGroup(click.Group):
    """Adds the commands other installed packages offer through entry points."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(ep.name for ep in entry_points(group=COMMAND_ENTRY_POINTS))})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        for ep in entry_points(group=COMMAND_ENTRY_POINTS, name=cmd_name):
            loaded = ep.load()
            if isinstance(loaded, click.Command):
                return loaded
        return None


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Debug logging (raw bytes on the wire) and tracebacks.")
@click.version_option(__version__, prog_name="chamber-bridge")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Read growth-chamber instruments and stream their data to the lab's platform."""
    configure_logging(debug)
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--no-files", is_flag=True,
              help="Check the file alone, not the TLS files and secret permissions it names (on a laptop, in CI).")
@click.pass_context
def check(ctx: click.Context, config: str, no_files: bool) -> None:
    """Validate CONFIG: exit 0, or exit 2 naming every problem by its key path.

    Also loads the TLS files (mqtt.tls) as the MQTT client would and refuses secret files that
    other users can read or write; a secret file that does not exist here is not judged.
    """
    cfg = load(ctx, config, files=not no_files)
    click.echo(f"{config}: ok (site {cfg.site}, {len(cfg.bridge.instruments)} instruments)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per driver.")
def drivers(as_json: bool) -> None:
    """List installed drivers (built-in and entry points) with transports, channels and their units."""
    from bridge.drivers.registry import default_registry

    registry = default_registry()
    for name, cls in registry:
        try:
            table = cls.channel_table(cls.Options())
            channels = [{"name": c.name, "units": c.units, "type": c.type.kind.value, "description": c.description,
                         **({"choices": list(c.type.choices)} if c.type.choices else {}),
                         **({"bits": {str(bit): name for bit, name in c.type.bits}} if c.type.bits else {})}
                        for c in table]
        except Exception:  # options without defaults: the channels come from the config
            channels = []
        if as_json:
            click.echo(json.dumps({"driver": name, "origin": registry.origin(name),
                                   "transports": list(cls.transports), "channels": channels,
                                   "summary": cls.summary}))
            continue
        click.echo(f"{name}  [{registry.origin(name)}]")
        if cls.summary:
            click.echo(f"    {cls.summary}")
        click.echo(f"    transports: {', '.join(cls.transports)}")
        if not channels:
            click.echo("    channels: defined in the config")
            continue
        click.echo("    channels (default options), unit (docs/units.md), type:")
        name_width = max(len(c["name"]) for c in channels)
        unit_width = max(len(c["units"]) for c in channels)
        type_width = max(len(c["type"]) for c in channels)
        for c in channels:
            click.echo(f"      {c['name']:<{name_width}}  {c['units']:<{unit_width}}  {c['type']:<{type_width}}  "
                       f"{c['description']}".rstrip())
    for name, reason in sorted(registry.broken.items()):
        click.echo(f"{name}  [broken] {reason}", err=True)


def _shown_value(value: object) -> str:
    """A reading's value for a line of ``read``: a float in 6 digits, true/false, an integer, a text."""
    if value is None:
        return "-"
    if type(value) is float:
        return f"{value:.6g}"
    if type(value) is bool:
        return "true" if value else "false"
    return printable(str(value), 40)


def _format_reading(r: Reading) -> str:
    value = _shown_value(r.value)
    return f"{r.instrument:<16} {r.channel:<16} {value:>14} {r.units:<10} {r.quality}"


def _baseline_lines(instrument: str, baseline: dict[str, object]) -> list[str]:
    """``read --baseline``'s lines under an instrument's readings: identity, configuration, refusals."""
    lines = []
    for key in ("identity", "configuration", "errors"):
        fields = baseline.get(key)
        if isinstance(fields, dict) and (fields or key != "errors"):
            shown = ", ".join(f"{name}={printable(value, 80)}" for name, value in fields.items()) or "-"
            label = "not read" if key == "errors" else key
            lines.append(f"{instrument:<16} {label}: {shown}")
    return lines


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--instrument", "only", metavar="NAME", help="Read this instrument only.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reading.")
@click.option("--baseline", "with_baseline", is_flag=True,
              help="Also read each instrument's identity and configuration (what a run records at its start).")
@click.pass_context
def read(ctx: click.Context, config: str, only: str | None, as_json: bool, with_baseline: bool) -> None:
    """Poll each instrument of CONFIG once and print its readings (commissioning).

    Values are converted as bridge.units says, so what is printed is what the bridge publishes."""
    from bridge.edge.conversion import UnitConversion
    from bridge.edge.instrument import connect_instrument

    cfg = load(ctx, config, files=False)  # reads instruments only: no MQTT, no secrets
    conversion = UnitConversion(cfg.bridge.units.targets())
    debug = ctx.obj["debug"]
    with reported_errors(debug):
        targets = [cfg.bridge.instrument(only)] if only else list(cfg.bridge.instruments)
    if not targets:
        fail(f"{config}: no instruments configured (bridge.instruments is empty)", EXIT_USAGE)
    def emit(r: Reading) -> None:
        while header:
            click.echo(header.pop())
        click.echo(json.dumps(r.to_dict()) if as_json else _format_reading(r))

    header = [] if as_json else [f"{'instrument':<16} {'channel':<16} {'value':>14} {'units':<10} quality"]
    failures = 0
    for inst_cfg in targets:
        baseline: dict[str, object] | None = None
        try:
            instrument = connect_instrument(inst_cfg)
            try:
                readings = conversion.apply_all(instrument.read())
                if with_baseline:
                    baseline = instrument.baseline().body()
            finally:
                instrument.close()
        except BridgeError as exc:
            if debug:
                raise
            failures += 1
            message = str(exc)
            if not message.startswith(f"{inst_cfg.name}:"):
                message = f"{inst_cfg.name}: {message}"
            click.echo(f"chamber-bridge: error: instrument {message}", err=True)
            continue
        for reading in readings:
            emit(reading)
        if baseline is not None:
            if as_json:
                click.echo(json.dumps({"instrument": inst_cfg.name, "baseline": baseline}))
            else:
                for line in _baseline_lines(inst_cfg.name, baseline):
                    click.echo(line)
    if failures:
        sys.exit(EXIT_RUNTIME)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.pass_context
def poll(ctx: click.Context, config: str) -> None:
    """Run the bridge until SIGINT/SIGTERM, then flush and publish offline status."""
    from bridge.edge.service import BridgeService

    cfg = load(ctx, config)
    if not cfg.bridge.instruments:
        fail(f"{config}: no instruments configured (bridge.instruments is empty)", EXIT_USAGE)
    logging.getLogger("bridge").setLevel(logging.DEBUG if ctx.obj["debug"] else logging.INFO)
    with reported_errors(ctx.obj["debug"]):
        service = BridgeService(cfg)
        _serve_until_signal(service.start, service.stop)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.pass_context
def upload(ctx: click.Context, config: str) -> None:
    """Run the uploader until SIGINT/SIGTERM: every site's data into one stream per run."""
    cfg = load(ctx, config)
    logging.getLogger("bridge").setLevel(logging.DEBUG if ctx.obj["debug"] else logging.INFO)
    with reported_errors(ctx.obj["debug"]):
        from bridge.uploader.service import UploaderService

        service = UploaderService(cfg)
        _serve_until_signal(service.start, service.stop)


def _serve_until_signal(start: Callable[[], None], stop: Callable[[], None]) -> None:
    """Run a service until SIGINT or SIGTERM, then stop it cleanly."""
    import signal
    import threading

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.set())
    start()
    try:
        stopping.wait()
    finally:
        stop()


def _run_request(ctx: click.Context, config: str, action: str, params: dict[str, object], timeout: float) -> None:
    """Check ``params`` as the bridge will (exit 2 naming the bad one, nothing sent), then ask the bridge."""
    from bridge.wire import contract
    from bridge.wire.request import request

    try:
        checked = contract.command_params(action, params)
    except contract.CommandError as exc:
        fail(exc.reason, EXIT_USAGE)
    cfg = load(ctx, config)
    with reported_errors(ctx.obj["debug"]):
        reply = request(cfg.mqtt, cfg.site, action, checked, timeout)
    if not reply.ok:  # the reply comes from the broker: printed escaped, like any text from outside
        fail(f"the bridge of {cfg.site} refused: {printable(reply.message)}")
    click.echo(printable(reply.message) + ("" if reply.seq is None else f" (seq {reply.seq})"))


@cli.command("start-run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="Stream name of the run (Atomscale stream_name).")
@click.option("--sample", help="Physical sample grown in this run.")
@click.option("--instrument-id", help="Synthesis source (instrument) id.")
@click.option("--project", help="Project id.")
@click.option("--tag", "tags", multiple=True, help="Tag for the stream; repeatable.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the bridge.")
@click.pass_context
def start_run(ctx: click.Context, config: str, name: str, sample: str | None, instrument_id: str | None,
              project: str | None, tags: tuple[str, ...], timeout: float) -> None:
    """Ask the site's bridge to open a run; exit 0 once it has logged the marker."""
    _run_request(ctx, config, "start_run", {
        "stream_name": name, "physical_sample": sample, "synth_source_id": instrument_id,
        "project_id": project, "tags": list(tags)}, timeout)


@cli.command("stop-run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--status", "exit_status", type=click.Choice(["success", "abort", "fail"]), default="success",
              show_default=True, help="Exit status of the run.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the bridge.")
@click.pass_context
def stop_run(ctx: click.Context, config: str, exit_status: str, timeout: float) -> None:
    """Ask the site's bridge to close the open run; exit 0 once it has logged the marker."""
    _run_request(ctx, config, "stop_run", {"exit_status": exit_status}, timeout)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("text")
@click.option("--tag", "tags", multiple=True, help="Tag of the event; repeatable.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the bridge.")
@click.pass_context
def annotate(ctx: click.Context, config: str, text: str, tags: tuple[str, ...], timeout: float) -> None:
    """Log an event (TEXT) in the bridge's ordered log, in the open run if one is open; exit 0 once it is logged."""
    _run_request(ctx, config, "annotate", {"text": text, "tags": list(tags)}, timeout)


@cli.command("auto")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the bridge.")
@click.pass_context
def auto(ctx: click.Context, state: str, config: str, timeout: float) -> None:
    """Switch the automatic run triggers (bridge.runs.auto) on or off; kept across restarts."""
    _run_request(ctx, config, "auto", {"enabled": state == "on"}, timeout)


@cli.command("next-run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--name", help="Stream name of the next run (wins over an automatic run's name template).")
@click.option("--sample", help="Physical sample grown in the next run.")
@click.option("--instrument-id", help="Synthesis source (instrument) id.")
@click.option("--project", help="Project id.")
@click.option("--tag", "tags", multiple=True, help="Tag for the stream; repeatable.")
@click.option("--clear", is_flag=True, help="Forget what an earlier next-run set.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the bridge.")
@click.pass_context
def next_run(ctx: click.Context, config: str, name: str | None, sample: str | None, instrument_id: str | None,
             project: str | None, tags: tuple[str, ...], clear: bool, timeout: float) -> None:
    """Set the metadata of the next run, manual or automatic; used once, shown in the run topic."""
    given: dict[str, object] = {"stream_name": name, "physical_sample": sample, "synth_source_id": instrument_id,
                                "project_id": project, "tags": list(tags)}
    if clear == any(given[key] for key in given):
        fail("give the next run's metadata (--name, --sample, --instrument-id, --project, --tag) or --clear, "
             "not both or neither", EXIT_USAGE)
    _run_request(ctx, config, "next_run", {} if clear else given, timeout)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--role", type=click.Choice(["uploader", "bridge"]), default="uploader", show_default=True,
              help="Whose retained status to judge: {prefix}/uploader/status or {prefix}/{site}/status.")
@click.option("--max-age", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds after which an online status counts as stale.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds to wait for the broker and the status.")
@click.pass_context
def health(ctx: click.Context, config: str, role: str, max_age: float, timeout: float) -> None:
    """Exit 0 if the service's retained status is online and fresh, else 1 saying why (Docker HEALTHCHECK)."""
    from bridge.cli.health import check_health

    cfg = load(ctx, config)
    with reported_errors(ctx.obj["debug"]):
        result = check_health(cfg, "bridge" if role == "bridge" else "uploader", max_age=max_age, timeout=timeout)
    if not result.healthy:
        fail(result.message)
    click.echo(result.message)


cli.add_command(runs)
cli.add_command(upload_quarantine)


def main() -> None:
    cli(prog_name="chamber-bridge")

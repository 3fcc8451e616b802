"""``simulate``: run simulators standalone, for commissioning a driver or a demo by hand.

The main CLI mounts this group as ``chamber-bridge simulate`` (entry point group
``chamber_bridge.commands``); ``python -m simulators`` runs it on its own. Each subcommand prints
exactly one line, where it listens (a pty path or a ``socket://`` URL), flushes it so a parent
process can read it from a pipe, then serves until SIGINT or SIGTERM and exits 0.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from simulators.pfeiffer_tpg import MODELS, STATUS_NAMES, TPGSimulator, parse_unit
from simulators.serving import PtyServer, TcpServer

UNIT_CHOICES = ["mbar", "Torr", "Pa", "Micron", "hPa", "V"]


@click.group(name="simulate")
def simulate() -> None:
    """Run instrument simulators; each prints where it listens, then serves until stopped."""


@simulate.command("pfeiffer_tpg")
@click.option("--pty", "use_pty", is_flag=True, help="Serve on a new pty (the default).")
@click.option(
    "--tcp", metavar="HOST:PORT", help="Serve on TCP instead (port 0 picks a free port)."
)
@click.option(
    "--model",
    type=click.Choice(sorted(MODELS), case_sensitive=False),
    default="TPG362",
    show_default=True,
)
@click.option("--channels", type=int, help="Channel count; must match the model (1, 2 or 6).")
@click.option(
    "--unit",
    type=click.Choice(UNIT_CHOICES, case_sensitive=False),
    default="mbar",
    show_default=True,
    help="Power-on pressure unit (Micron, hPa and V only on TPG 36x).",
)
@click.option(
    "--status",
    "statuses",
    metavar="CH=STATE",
    multiple=True,
    help=f"Force a channel status; STATE is one of {', '.join(STATUS_NAMES)} or 0-6. Repeatable.",
)
@click.option("--power-up-stream", is_flag=True, help="Stream readings at connect until spoken to.")
@click.option(
    "--stream-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True
)
@click.option("--split", is_flag=True, help="Send every reply in 1-3 byte pieces.")
@click.option("--silent", is_flag=True, help="Answer nothing at all.")
@click.option("--delay", type=click.FloatRange(min=0.0), default=0.0, help="Seconds per reply.")
@click.option("--seed", type=int, help="Repeatable noise.")
def pfeiffer_tpg(
    use_pty: bool,
    tcp: str | None,
    model: str,
    channels: int | None,
    unit: str,
    statuses: tuple[str, ...],
    power_up_stream: bool,
    stream_interval: float,
    split: bool,
    silent: bool,
    delay: float,
    seed: int | None,
) -> None:
    """Pfeiffer TPG 261/262/361/362/366 gauge controller (mnemonic protocol)."""
    if use_pty and tcp:
        raise click.UsageError("--pty and --tcp are exclusive")
    try:
        sim = TPGSimulator(model, channels, parse_unit(unit), seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for channel, status in (_parse_status(text, sim.channels) for text in statuses):
        sim.set_status(channel, status)
    sim.power_up_streaming = power_up_stream
    sim.stream_interval = stream_interval
    sim.split_replies = split
    sim.silent = silent
    sim.reply_delay = delay
    # One instrument: its state (unit, gauges switched off) outlives a client's reconnect.
    server: PtyServer | TcpServer
    if tcp:
        host, port = _parse_host_port(tcp)
        server = TcpServer(lambda: sim, host, port)
    else:
        server = PtyServer(sim)
    _serve(server)


def _parse_status(text: str, channels: int) -> tuple[int, int]:
    channel_text, sep, state = text.partition("=")
    state = state.strip().lower()
    if not sep or not channel_text.strip().isdigit():
        raise click.BadParameter(f"{text!r}: expected CH=STATE, e.g. 1=off", param_hint="--status")
    channel = int(channel_text)
    if not 1 <= channel <= channels:
        raise click.BadParameter(f"{text!r}: channel outside 1..{channels}", param_hint="--status")
    if state in STATUS_NAMES:
        return channel, STATUS_NAMES[state].value
    if state.isdigit() and int(state) <= 6:
        return channel, int(state)
    raise click.BadParameter(
        f"{text!r}: state is one of {', '.join(STATUS_NAMES)} or 0-6", param_hint="--status"
    )


def _parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r}: expected HOST:PORT", param_hint="--tcp")
    return host or "127.0.0.1", int(port)


def _serve(server: PtyServer | TcpServer) -> None:
    """Start, announce, wait for SIGINT/SIGTERM, stop; exit status 0 on a signal."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except OSError as exc:
            raise click.ClickException(f"cannot listen: {exc}") from exc
        try:
            where = server.url if isinstance(server, TcpServer) else server.port
            click.echo(where)
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: one module per simulator, each exposing a click ``command``; mounted under ``simulate``
SIMULATOR_COMMANDS = (
    "simulators.mks_937b_cli",
    "simulators.impac_cli",
    "simulators.eurotherm_cli",
    "simulators.modbus_cli",
    "simulators.scpi_psu_cli",
    "simulators.text_device_cli",
)


def _mount() -> None:
    import importlib

    for module in SIMULATOR_COMMANDS:
        simulate.add_command(importlib.import_module(module).command)


_mount()

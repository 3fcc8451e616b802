"""``simulate``: run simulators standalone, for commissioning a driver or a demo by hand.

The main CLI mounts this group as ``chamber-bridge simulate`` (entry point group
``chamber_bridge.commands``); ``python -m simulators`` runs it on its own. Each subcommand prints
exactly one line, where it listens (a pty path or a ``socket://`` URL), flushes it so a parent
process can read it from a pipe, then serves until SIGINT or SIGTERM and exits 0
(:mod:`simulators.cli_common`).
"""

from __future__ import annotations

import importlib

import click

from simulators.cli_common import Line, line_options, seed_option, serve_devices
from simulators.pfeiffer_tpg import MODELS, STATUS_NAMES, TPGSimulator, parse_unit

UNIT_CHOICES = ["mbar", "Torr", "Pa", "Micron", "hPa", "V"]


@click.group(name="simulate")
def simulate() -> None:
    """Run instrument simulators; each prints where it listens, then serves until stopped."""


@simulate.command("pfeiffer_tpg")
@line_options()
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
@seed_option
def pfeiffer_tpg(
    line: Line,
    model: str,
    channels: int | None,
    unit: str,
    statuses: tuple[str, ...],
    power_up_stream: bool,
    stream_interval: float,
    seed: int | None,
) -> None:
    """Pfeiffer TPG 261/262/361/362/366 gauge controller (mnemonic protocol)."""
    try:
        sim = TPGSimulator(model, channels, parse_unit(unit), seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for channel, status in (_parse_status(text, sim.channels) for text in statuses):
        sim.set_status(channel, status)
    sim.power_up_streaming = power_up_stream
    sim.stream_interval = stream_interval
    serve_devices([sim], line)


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


#: one module per simulator, each exposing a click ``command``; mounted under ``simulate``
SIMULATOR_COMMANDS = (
    "simulators.mks_937b_cli",
    "simulators.impac_cli",
    "simulators.eurotherm_cli",
    "simulators.modbus_cli",
    "simulators.scpi_psu_cli",
    "simulators.text_device_cli",
    "simulators.chamber_cli",
    "simulators.atomscale_cli",
)


def _mount() -> None:
    for module in SIMULATOR_COMMANDS:
        simulate.add_command(importlib.import_module(module).command)


_mount()

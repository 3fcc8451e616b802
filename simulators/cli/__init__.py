"""``simulate``: run simulators standalone, for commissioning a driver or a demo by hand.

The main CLI mounts this group as ``chamber-bridge simulate`` (entry point group
``chamber_bridge.commands``, declared by the ``chamber-bridge-simulators`` distribution);
``python -m simulators`` runs it on its own. Each subcommand prints where it listens (a pty path,
a ``socket://`` URL, a Modbus ``host:port``, a base URL), flushes it so a parent process can read
it from a pipe, then serves until SIGINT or SIGTERM and exits 0 (:mod:`simulators.cli.common`).

The subcommands are one table, :data:`COMMANDS`: an instrument's is named after its driver, and
each is imported only when it runs, so ``simulate atomscale`` does not load pymodbus and
``chamber-bridge --help`` loads no simulator at all.
"""

from __future__ import annotations

import importlib

import click

#: subcommand -> ``module:attribute`` of its click command
COMMANDS: dict[str, str] = {
    "pfeiffer_tpg": "simulators.cli.instruments:pfeiffer_tpg",
    "mks_937b": "simulators.cli.instruments:mks_937b",
    "impac": "simulators.cli.instruments:impac",
    "scpi_psu": "simulators.cli.instruments:scpi_psu",
    "genesys": "simulators.cli.instruments:genesys",
    "serial_ascii": "simulators.cli.instruments:serial_ascii",
    "eurotherm": "simulators.cli.modbus:eurotherm",
    "modbus": "simulators.cli.modbus:modbus",
    "chamber": "simulators.cli.services:chamber",
    "atomscale": "simulators.cli.services:atomscale",
}


def load_command(name: str) -> click.Command:
    """The click command of subcommand ``name`` (KeyError if there is none)."""
    module, _, attribute = COMMANDS[name].partition(":")
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{COMMANDS[name]} is not a click command")
    return command


class SimulatorGroup(click.Group):
    """The subcommands of :data:`COMMANDS`, each imported when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None


@click.group(name="simulate", cls=SimulatorGroup)
def simulate() -> None:
    """Run instrument simulators; each prints where it listens, then serves until stopped."""

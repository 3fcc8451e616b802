"""``chamber-bridge simulate chamber``: every simulated instrument of an MBE chamber at once."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from simulators.chamber import SimulatedChamber
from simulators.cli_common import serve_until_signal


@click.command("chamber")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every simulator listens on.")
@click.option("--seed", type=int, help="Repeatable noise.")
@click.option("--write-config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a ready config reading every instrument to this file.")
@click.option("--site", default="sim-chamber", show_default=True, help="Site name in the written config.")
def command(host: str, seed: int | None, config_path: Path | None, site: str) -> None:
    """A whole MBE chamber: two gauges, a pyrometer, two Eurotherm cells, a heater supply."""
    chamber = SimulatedChamber(host, seed)

    def announce() -> str:
        lines = [f"{name} {where}" for name, where in chamber.endpoints().items()]
        if config_path is not None:
            partial = config_path.with_name(config_path.name + ".tmp")
            partial.write_text(yaml.safe_dump(chamber.config(site), sort_keys=False))
            partial.replace(config_path)  # readers never see half a file
            lines.append(f"config {config_path}")
        return "\n".join(lines)

    serve_until_signal(chamber, announce)

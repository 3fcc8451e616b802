"""``simulate`` for what is not one instrument: ``chamber`` (a whole simulated MBE chamber), ``atomscale`` (the API).

``simulate atomscale`` prints one line, the base URL to give the uploader as
``uploader.sink.endpoint``, then serves until SIGINT or SIGTERM. With ``--tls DIR`` it serves HTTPS
with a certificate signed by a throwaway CA made in DIR (``DIR/ca.pem`` is the
``uploader.sink.ca_file`` that trusts it). Faults and key rotations are switched from another
process through the emulator's admin endpoints (``/_emulator/...``, see
:mod:`simulators.services.atomscale`). A separate process is also what the official SDK needs: its
calls hold the GIL while they wait for the server, so an emulator thread inside the same Python
process would never answer them.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from simulators.chamber.mbe import HEATER_SUPPLIES, SimulatedChamber
from simulators.cli.common import serve_until_signal
from simulators.services.atomscale import DEFAULT_KEY, AtomscaleEmulator, make_tls_files


@click.command("chamber")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every simulator listens on.")
@click.option("--seed", type=int, help="Repeatable noise.")
@click.option("--write-config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a ready config reading every instrument to this file.")
@click.option("--site", default="sim-chamber", show_default=True, help="Site name in the written config.")
@click.option("--heater-supply", type=click.Choice(HEATER_SUPPLIES), default="scpi_psu", show_default=True,
              help="The substrate heater's supply: a SCPI supply on its LAN port, or a TDK-Lambda Genesys "
                   "(GEN language) behind a serial device server.")
def chamber(host: str, seed: int | None, config_path: Path | None, site: str, heater_supply: str) -> None:
    """A whole MBE chamber: two gauges, a pyrometer, two Eurotherm cells, a heater supply."""
    chamber = SimulatedChamber(host, seed, heater_supply="genesys" if heater_supply == "genesys" else "scpi_psu")

    def announce() -> str:
        lines = [f"{name} {where}" for name, where in chamber.endpoints().items()]
        if config_path is not None:
            partial = config_path.with_name(config_path.name + ".tmp")
            partial.write_text(yaml.safe_dump(chamber.config(site), sort_keys=False))
            partial.replace(config_path)  # readers never see half a file
            lines.append(f"config {config_path}")
        return "\n".join(lines)

    serve_until_signal(chamber, announce)


@click.command("atomscale")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port (0 picks a free one).")
@click.option("--key", "keys", metavar="KEY", multiple=True,
              help=f"A valid API key. Repeatable. Default: {DEFAULT_KEY} (unless --key-file is given).")
@click.option("--key-file", "key_files", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="A file holding a valid API key (as the uploader's api_key_file). Repeatable.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds ids and fault probabilities.")
@click.option("--reference-offset-ms", type=float, default=0.0, show_default=True,
              help="What GET /gateway/time adds to this machine's clock.")
@click.option("--tls", "tls_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Serve HTTPS; make a CA (DIR/ca.pem) and the server's certificate in DIR.")
def atomscale(host: str, port: int, keys: tuple[str, ...], key_files: tuple[Path, ...], seed: int,
            reference_offset_ms: float, tls_dir: Path | None) -> None:
    """Atomscale API emulator (timeseries streams), with switchable faults."""
    valid = list(keys) + [path.read_text(encoding="utf-8").strip() for path in key_files]
    if any(not key for key in valid):
        raise click.UsageError("an API key must not be empty")
    try:
        tls = make_tls_files(tls_dir) if tls_dir is not None else None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    emulator = AtomscaleEmulator(valid or [DEFAULT_KEY], host=host, port=port, seed=seed,
                                 reference_offset_ms=reference_offset_ms, tls=tls)
    serve_until_signal(emulator, lambda: emulator.url)

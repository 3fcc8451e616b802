"""``simulate impac``: one or several IMPAC pyrometers on one simulated line, for commissioning.

Several ``--address`` options put several pyrometers on one RS-485 line (one pty or one TCP
port), each answering only its own address, as on a real two-wire bus. Like every ``simulate``
subcommand it prints one line, where it listens, then serves until SIGINT or SIGTERM (exit 0).
"""

from __future__ import annotations

import click

from simulators.cli_common import Line, line_options, seed_option, serve_devices
from simulators.impac import MODELS, SPECIAL_NAMES, ImpacSimulator


@click.command("impac")
@line_options()
@click.option("--address", "addresses", type=click.IntRange(0, 97), multiple=True,
              help="Pyrometer address (default 0); repeat for several pyrometers on one line.")
@click.option("--model", type=click.Choice([m.name for m in MODELS.values()], case_sensitive=False),
              default="IGA 12", show_default=True)
@click.option("--temperature", "temperatures", type=float, multiple=True, metavar="DEGC",
              help="Pin the temperature (°C): once for all pyrometers, or once per --address in order.")
@click.option("--unit", type=click.Choice(["C", "F"], case_sensitive=False), default="C", show_default=True,
              help="Power-on unit (models without AAfh keep it).")
@click.option("--emissivity", type=click.FloatRange(0.05, 1.0), help="Emissivity set on the pyrometer(s).")
@click.option("--special", type=click.Choice(sorted(SPECIAL_NAMES)), help="Report this special value instead.")
@click.option("--warm-up", type=click.FloatRange(min=0.0), default=0.0, help="Seconds of 77770 after start.")
@click.option("--legacy-firmware", is_flag=True, help="Say nothing to invalid commands instead of 'no'.")
@click.option("--mismatch", type=click.Choice(["parity", "baud"]), help="Garble replies as wrong line settings do.")
@seed_option
def command(
    line: Line,
    addresses: tuple[int, ...],
    model: str,
    temperatures: tuple[float, ...],
    unit: str,
    emissivity: float | None,
    special: str | None,
    warm_up: float,
    legacy_firmware: bool,
    mismatch: str | None,
    seed: int | None,
) -> None:
    """LumaSense/Advanced Energy IMPAC pyrometer(s) (UPP protocol)."""
    addresses = addresses or (0,)
    if len(set(addresses)) != len(addresses):
        raise click.UsageError("an --address is given twice; addresses on one line must differ")
    if len(temperatures) not in (0, 1, len(addresses)):
        raise click.UsageError("give --temperature once, or once per --address")
    sims = []
    for i, address in enumerate(addresses):
        sim = ImpacSimulator(address, model, "F" if unit.upper() == "F" else "C",
                             None if seed is None else seed + i)
        if temperatures:
            sim.set_temperature(temperatures[i] if len(temperatures) > 1 else temperatures[0])
        if emissivity is not None:
            try:
                sim.set_emissivity(emissivity)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from exc
        sim.special = SPECIAL_NAMES[special] if special else None
        sim.warm_up = warm_up
        sim.answers_no = sim.answers_no and not legacy_firmware
        sim.line_mismatch = "parity" if mismatch == "parity" else "baud" if mismatch == "baud" else None
        sims.append(sim)
    serve_devices(sims, line)


if __name__ == "__main__":
    command(prog_name="python -m simulators.impac_cli")

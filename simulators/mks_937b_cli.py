"""``simulate mks_937b``: one or several MKS 937B controllers on one simulated RS-485 line.

Mounted by ``simulators/cli.py`` as a subcommand of ``chamber-bridge simulate``; like its siblings
it prints exactly one line, where it listens, then serves until SIGINT or SIGTERM and exits 0.
Several ``--address`` options put several controllers on the same line (one pty or TCP port),
each answering only its own address, as on a real multi-drop bus.
"""

from __future__ import annotations

import click

from simulators.cli_common import Line, line_options, seed_option, serve_devices
from simulators.mks_937b import DEFAULT_GAUGES, GAUGES, UNITS, MKS937BSimulator


@click.command("mks_937b")
@line_options()
@click.option(
    "--address",
    "addresses",
    type=click.IntRange(1, 253),
    multiple=True,
    help="Controller address; repeat for several controllers on one line.  [default: 253]",
)
@click.option(
    "--unit",
    type=click.Choice(list(UNITS), case_sensitive=False),
    default="TORR",
    show_default=True,
    help="Power-on pressure unit.",
)
@click.option(
    "--gauges",
    metavar="T1,...,T6",
    help=f"Gauge type per channel PR1..PR6, from {', '.join(GAUGES)} (NC: none).  [default: CC,PR,CC,PR,CM,NC]",
)
@click.option(
    "--status",
    "statuses",
    metavar="CH=STRING",
    multiple=True,
    help="Make channel CH (1-6) of every controller read STRING (OFF, WAIT, MISCONN, ...). Repeatable.",
)
@click.option("--no-gauge-spelling", type=click.Choice(["NOGAUGE", "NO_GAUGE"]), default="NOGAUGE",
              show_default=True, help="How a channel without gauge reads.")
@click.option("--echo", is_flag=True, help="Echo every request, as a 2-wire RS-485 adapter does.")
@click.option("--truncate", type=click.IntRange(min=0), default=0, help="Characters lost from each reply.")
@seed_option
def command(
    line: Line,
    addresses: tuple[int, ...],
    unit: str,
    gauges: str | None,
    statuses: tuple[str, ...],
    no_gauge_spelling: str,
    echo: bool,
    truncate: int,
    seed: int | None,
) -> None:
    """MKS 937B gauge controller(s) (@aaa...;FF protocol)."""
    addresses = addresses or (253,)
    if len(set(addresses)) != len(addresses):
        raise click.BadParameter("an address is given twice", param_hint="--address")
    types = [g.strip().upper() for g in gauges.split(",")] if gauges else None
    forced = [_parse_status(text) for text in statuses]
    sims = []
    for n, address in enumerate(addresses):
        try:
            sim = MKS937BSimulator(address, unit, None if seed is None else seed + n,
                                   gauges=types or DEFAULT_GAUGES)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        for channel, status in forced:
            sim.set_status(channel, status)
        sim.no_gauge_spelling = no_gauge_spelling
        sim.truncate = truncate
        sims.append(sim)
    sims[0].echo = echo  # the adapter echoes once, whatever the number of units
    serve_devices(sims, line)


def _parse_status(text: str) -> tuple[int, str]:
    channel_text, sep, status = text.partition("=")
    status = status.strip()
    if not sep or not channel_text.strip().isdigit() or not 1 <= int(channel_text) <= 6:
        raise click.BadParameter(f"{text!r}: expected CH=STRING with CH 1-6, e.g. 2=WAIT", param_hint="--status")
    if not status or not status.isprintable() or ";" in status or " " in status:
        raise click.BadParameter(f"{text!r}: STRING is printable, without blanks or ';'", param_hint="--status")
    return int(channel_text), status

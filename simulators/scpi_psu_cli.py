"""``chamber-bridge simulate scpi_psu``: a SCPI power supply on a raw TCP socket or a pty.

Prints one line, where it listens (``socket://HOST:PORT``, which a VISA config names
``TCPIP::HOST::PORT::SOCKET``; or a pty path, ``ASRL/dev/pts/N::INSTR``), then serves until
SIGINT or SIGTERM. One instrument serves every connection in turn, so its settings survive a
client's reconnect.
"""

from __future__ import annotations

import click

from simulators.cli_common import Line, line_options, seed_option, serve_devices
from simulators.scpi_psu import DIALECTS, MODELS, ScpiPsuSimulator


@click.command("scpi_psu")
@line_options(pty_help="Serve on a new pty (an ASRL resource) instead of TCP.",
               tcp_help="Where to listen (port 0 picks a free port; real supplies use 5025 Keysight, 5555 Rigol).",
               tcp_default="127.0.0.1:0")
@click.option("--dialect", type=click.Choice(DIALECTS), default="keysight", show_default=True)
@click.option("--model", type=click.Choice(sorted(MODELS), case_sensitive=False),
              help="Model of that dialect (default E36312A / DP832).")
@click.option("--set", "settings", metavar="CH=VOLTS,AMPS[,on]", multiple=True,
              help="Program a channel at start, e.g. 1=5,0.5,on. Repeatable.")
@click.option("--load", "loads", metavar="CH=OHMS", multiple=True,
              help="Resistive load on a channel (default 10 ohm; 'open' for none). Repeatable.")
@click.option("--first-reply-delay", type=click.FloatRange(min=0.0), default=0.0,
              help="Extra seconds before the first reply after each connect.")
@seed_option
def command(
    line: Line,
    dialect: str,
    model: str | None,
    settings: tuple[str, ...],
    loads: tuple[str, ...],
    first_reply_delay: float,
    seed: int | None,
) -> None:
    """SCPI power supply, Keysight E36300 or Rigol DP800 dialect."""
    try:
        sim = ScpiPsuSimulator(dialect, model, seed=seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for text in settings:
        channel, volts, amps, on = _parse_setting(text, sim.channels)
        sim.set_voltage(channel, volts)
        sim.set_current(channel, amps)
        sim.set_output(channel, on)
    for text in loads:
        channel, ohms = _parse_load(text, sim.channels)
        sim.set_load(channel, ohms)
    sim.first_reply_delay = first_reply_delay
    serve_devices([sim], line)


def _channel(text: str, channels: int, option: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= channels:
        raise click.BadParameter(f"channel {text!r} outside 1..{channels}", param_hint=option)
    return int(text)


def _parse_setting(text: str, channels: int) -> tuple[int, float, float, bool]:
    channel_text, sep, rest = text.partition("=")
    parts = [p.strip().lower() for p in rest.split(",")]
    if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("on", "off")):
        raise click.BadParameter(f"{text!r}: expected CH=VOLTS,AMPS[,on|off]", param_hint="--set")
    try:
        volts, amps = float(parts[0]), float(parts[1])
    except ValueError:
        raise click.BadParameter(f"{text!r}: volts and amps must be numbers", param_hint="--set") from None
    return _channel(channel_text, channels, "--set"), volts, amps, len(parts) == 3 and parts[2] == "on"


def _parse_load(text: str, channels: int) -> tuple[int, float | None]:
    channel_text, sep, ohms_text = text.partition("=")
    ohms_text = ohms_text.strip().lower()
    if not sep:
        raise click.BadParameter(f"{text!r}: expected CH=OHMS", param_hint="--load")
    if ohms_text == "open":
        return _channel(channel_text, channels, "--load"), None
    try:
        ohms = float(ohms_text)
    except ValueError:
        ohms = -1.0
    if ohms <= 0:
        raise click.BadParameter(f"{text!r}: ohms must be a positive number or 'open'", param_hint="--load")
    return _channel(channel_text, channels, "--load"), ohms


if __name__ == "__main__":
    command()

"""``chamber-bridge simulate text_device``: a serial text instrument on a pty or TCP.

Prints one line, where it listens (a pty path, or ``socket://HOST:PORT`` for a serial device
server), then serves until SIGINT or SIGTERM. Without ``--query`` it is a thermometer answering
``T?`` with ``T=23.51C`` and ``ID?`` with its name.
"""

from __future__ import annotations

import click

from simulators.cli_common import Line, line_options, serve_devices
from simulators.text_device import TextDevice

TERMINATORS = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}


@click.command("text_device")
@line_options()
@click.option("--query", "queries", metavar="COMMAND=TEMPLATE", multiple=True,
              help="A command and its reply template, e.g. 'T?=T={T:.2f}C'. Repeatable.")
@click.option("--value", "values", metavar="NAME=NUMBER", multiple=True,
              help="A value the templates use, e.g. T=23.51. Repeatable.")
@click.option("--terminator", type=click.Choice(sorted(TERMINATORS)), default="cr", show_default=True,
              help="Ends every command.")
@click.option("--reply-terminator", type=click.Choice(sorted(TERMINATORS)),
              help="Ends every reply (default: the command terminator).")
@click.option("--unknown-reply", metavar="TEXT", help="Answer unknown commands with TEXT (default: silence).")
@click.option("--echo", is_flag=True, help="Echo every command before the reply (2-wire RS-485).")
def command(
    line: Line,
    queries: tuple[str, ...],
    values: tuple[str, ...],
    terminator: str,
    reply_terminator: str | None,
    unknown_reply: str | None,
    echo: bool,
) -> None:
    """Generic serial text instrument (default: a thermometer, T? -> T=23.51C)."""
    table = dict(_pair(text, "--query") for text in queries) if queries else None
    numbers: dict[str, float] = {}
    for text in values:
        name, number = _pair(text, "--value")
        numbers[name] = _number(text, number)
    try:
        device = TextDevice(table, numbers if table is not None else None,
                            terminator=TERMINATORS[terminator],
                            reply_terminator=TERMINATORS[reply_terminator] if reply_terminator else None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if table is None:
        for name, value in numbers.items():
            device.set_value(name, value)
    device.unknown_reply = unknown_reply
    device.echo = echo
    serve_devices([device], line)


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint=option)
    return key.strip(), value


def _number(text: str, number: str) -> float:
    try:
        return float(number)
    except ValueError:
        raise click.BadParameter(f"{text!r}: not a number", param_hint="--value") from None


if __name__ == "__main__":
    command()

"""What every ``simulate`` subcommand shares: where it serves, line faults, ``KEY=VALUE`` options, serving.

Each subcommand prints exactly one line, where it listens (a pty path, a ``socket://`` URL or a
Modbus ``host:port``), flushes it so a parent process can read it from a pipe, then serves until
SIGINT or SIGTERM and exits 0. This module imports no subcommand, so the command modules import
it at the top and :mod:`simulators.cli` can still list them all.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol, TypeVar

import click

from simulators.serving.byte_device import SimulatedByteDevice
from simulators.serving.link import ByteDevice
from simulators.serving.pty import PtyServer
from simulators.serving.rs485 import SharedLine
from simulators.serving.tcp import TcpServer

F = TypeVar("F", bound=Callable[..., None])


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, in the order given (as if stacked in that order)."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def where_options(
    *,
    pty_help: str = "Serve on a new pty (the default).",
    tcp_help: str = "Serve on TCP instead (port 0 picks a free port).",
    tcp_default: str | None = None,
) -> Callable[[F], F]:
    """``--pty`` (flag, passed as ``use_pty``) and ``--tcp HOST:PORT``."""
    default: dict[str, Any] = {} if tcp_default is None else {"default": tcp_default, "show_default": True}
    return options(
        click.option("--pty", "use_pty", is_flag=True, help=pty_help),
        click.option("--tcp", metavar="HOST:PORT", help=tcp_help, **default),
    )


split_option = click.option("--split", is_flag=True, help="Send every reply in 1-3 byte pieces.")
silent_option = click.option("--silent", is_flag=True, help="Answer nothing at all.")
delay_option = click.option("--delay", type=click.FloatRange(min=0.0), default=0.0, help="Seconds per reply.")
seed_option = click.option("--seed", type=int, help="Repeatable noise.")


@dataclass(frozen=True)
class Line:
    """A byte-stream command's line options: where it serves (``use_pty``/``tcp``) and the line faults."""

    use_pty: bool
    tcp: str | None
    split: bool
    silent: bool
    delay: float


Command = Callable[..., None]


def line_options(
    *,
    pty_help: str = "Serve on a new pty (the default).",
    tcp_help: str = "Serve on TCP instead (port 0 picks a free port).",
    tcp_default: str | None = None,
) -> Callable[[Command], Command]:
    """``--pty``, ``--tcp``, ``--split``, ``--silent``, ``--delay``, given to the command as one ``line: Line``.

    With a ``tcp_default`` the command serves TCP unless ``--pty`` is given (which then wins).
    """

    def decorate(function: Command) -> Command:
        @functools.wraps(function)
        def command(*args: Any, use_pty: bool, tcp: str | None, split: bool, silent: bool, delay: float,
                    **kwargs: Any) -> None:
            if use_pty and tcp_default is not None:
                tcp = None
            function(*args, line=Line(use_pty, tcp, split, silent, delay), **kwargs)

        add_options = options(where_options(pty_help=pty_help, tcp_help=tcp_help, tcp_default=tcp_default),
                              split_option, silent_option, delay_option)
        return add_options(command)

    return decorate


def pair(text: str, option: str, form: str = "KEY=VALUE") -> tuple[str, str]:
    """``KEY=VALUE`` -> (KEY without blanks around it, VALUE as given); a usage error naming ``option`` and ``form``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{text!r}: expected {form}", param_hint=option)
    return key.strip(), value


def channel_number(text: str, channels: int, option: str) -> int:
    """A channel number within 1..``channels``, else a usage error naming ``option``."""
    if not text.strip().isdigit() or not 1 <= int(text) <= channels:
        raise click.BadParameter(f"channel {text!r} outside 1..{channels}", param_hint=option)
    return int(text)


def number(text: str, value: str, option: str) -> float:
    """``value`` (from the option's ``text``) as a float, else a usage error naming ``option``."""
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{text!r}: {value.strip()!r} is not a number", param_hint=option) from None


def distinct(addresses: tuple[int, ...], default: int, option: str) -> tuple[int, ...]:
    """The addresses of the devices sharing one line (``default`` when none is given); each at most once."""
    if len(set(addresses)) != len(addresses):
        raise click.BadParameter("an address is given twice; addresses on one line must differ", param_hint=option)
    return addresses or (default,)


def seed_of(seed: int | None, n: int) -> int | None:
    """The seed of the ``n``-th device on a line: repeatable, yet different noise per device."""
    return None if seed is None else seed + n


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"127.0.0.1:1502"`` -> (host, port); ``":0"`` -> (``default_host``, 0); ValueError on anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    return host or default_host, int(port)


def tcp_address(use_pty: bool, tcp: str | None) -> tuple[str, int] | None:
    """Where ``--tcp`` says to listen, or None for a pty; usage errors for bad combinations."""
    if use_pty and tcp:
        raise click.UsageError("--pty and --tcp are exclusive")
    if not tcp:
        return None
    try:
        return parse_host_port(tcp)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tcp") from exc


class Server(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


def serve_until_signal(server: Server, where: Callable[[], str]) -> None:
    """Start, print ``where()`` (asked once started), serve until SIGINT/SIGTERM, stop; exit status 0."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        try:
            click.echo(where())
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(f"cannot serve: {exc}") from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: ``--refuse-identity`` of the instruments with identity queries (the fault of docs/store.md's baseline)
refuse_identity_option = click.option(
    "--refuse-identity", is_flag=True,
    help="Refuse the identity queries as a model without them would (the bridge must go on reading).")


def later(text: str, option: str, form: str) -> tuple[float, str]:
    """``SECONDS=VALUE`` of a change scheduled after the start (``--change-unit 30=Torr``)."""
    seconds, value = pair(text, option, form)
    delay = number(text, seconds, option)
    if delay < 0:
        raise click.BadParameter(f"{text!r}: seconds must not be negative", param_hint=option)
    return delay, value.strip()


def after(seconds: float, change: Callable[[], None]) -> None:
    """Run ``change`` once, ``seconds`` from now (a front-panel change in the middle of a run)."""
    timer = threading.Timer(seconds, change)
    timer.daemon = True
    timer.start()


def serve_devices(devices: Sequence[SimulatedByteDevice], line: Line) -> None:
    """Apply the line faults to ``devices``, put them on one line (a pty, or TCP), serve until stopped.

    Several devices share the line as on RS-485, each answering its own address. One line serves
    every client in turn, so the devices' state (unit, settings) outlives a client's reconnect.
    """
    address = tcp_address(line.use_pty, line.tcp)
    for device in devices:
        device.split_replies = line.split
        device.silent = line.silent
        device.reply_delay = line.delay
    shared: ByteDevice = devices[0] if len(devices) == 1 else SharedLine(devices)
    if address is None:
        pty = PtyServer(shared)
        serve_until_signal(pty, lambda: pty.port)
    else:
        tcp = TcpServer(lambda: shared, *address)
        serve_until_signal(tcp, lambda: tcp.url)

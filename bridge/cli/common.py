"""What every command shares: exit codes, the one-line error, loading a config."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from bridge.config import Config, check_files, load_config
from bridge.errors import BridgeError, ConfigError

EXIT_RUNTIME = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_RUNTIME) -> NoReturn:
    click.echo(f"chamber-bridge: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn project errors into one line and an exit code; keep tracebacks for --debug."""
    try:
        yield
    except ConfigError as exc:
        if debug:
            raise
        head = f"{exc.source}: " if exc.source else ""
        for problem in exc.problems:
            click.echo(f"{head}{problem}", err=True)
        sys.exit(EXIT_USAGE)
    except BridgeError as exc:
        if debug:
            raise
        fail(str(exc))


def load(ctx: click.Context, path: str, files: bool = True) -> Config:
    """Load CONFIG; with ``files``, also the TLS files it names and the permissions of its secrets."""
    with reported_errors(ctx.obj["debug"]):
        config = load_config(path)
        if files:
            check_files(config, path)
        return config
    raise AssertionError("unreachable")  # pragma: no cover

"""The command line, ``chamber-bridge`` (``python -m bridge``): one module per group of commands."""

from bridge.cli.main import cli, main

__all__ = ["cli", "main"]

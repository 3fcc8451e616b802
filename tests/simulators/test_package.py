"""The simulators as a package of their own: its distribution, its layout and its command table.

The distribution's package list is written out by hand (simulators/pyproject.toml maps the
package onto its own directory, where setuptools cannot discover subpackages), so a test keeps
it equal to the folders; the Pi's wheel must not carry the simulators, so the main pyproject
must not name them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import grimp
import pytest

import simulators
from simulators.cli import COMMANDS, load_command, simulate
from tests.helpers.cli import ROOT
from tests.helpers.import_cycles import import_cycles

PACKAGE = Path(simulators.__file__).parent
#: above this, a module says at its top why it is one module
LONG_MODULE = 500


def pyproject(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def test_the_distribution_lists_every_package_and_owns_the_commands() -> None:
    project = pyproject(PACKAGE / "pyproject.toml")
    folders = sorted("simulators" + ".".join(("", *p.parent.relative_to(PACKAGE).parts))
                     for p in PACKAGE.rglob("__init__.py"))
    assert sorted(project["tool"]["setuptools"]["packages"]) == folders
    assert project["tool"]["setuptools"]["package-dir"] == {"simulators": "."}
    assert project["project"]["name"] == "chamber-bridge-simulators"
    commands = project["project"]["entry-points"]["chamber_bridge.commands"]
    assert commands == {"simulate": "simulators.cli:simulate", "demo": "simulators.demo:demo"}
    assert "demo" in project["project"]["optional-dependencies"]


def test_the_main_distribution_carries_bridge_only() -> None:
    project = pyproject(ROOT / "pyproject.toml")
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["bridge*"]
    assert "chamber_bridge.commands" not in project["project"].get("entry-points", {})
    assert "demo" not in project["project"]["optional-dependencies"]


def test_no_import_cycle_under_simulators() -> None:
    assert import_cycles(grimp.build_graph("simulators")) == []


def test_long_modules_say_why_at_their_top() -> None:
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > LONG_MODULE and "Why one module" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(str(path.relative_to(PACKAGE)))
    assert unexplained == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_of_the_table_loads_under_its_name(name: str) -> None:
    command = load_command(name)
    assert isinstance(command, click.Command) and command.name == name
    assert simulate.get_command(click.Context(simulate), name) is command


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "simulators", "text_device"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "No such command 'text_device'" in result.stderr


def test_listing_the_subcommands_imports_none_of_them() -> None:
    """``chamber-bridge --help`` and ``simulate atomscale`` must not load every simulator (pymodbus, ...)."""
    probe = ("import sys, click; from simulators.cli import simulate; "
             "names = simulate.list_commands(click.Context(simulate)); "
             "print(sorted(m for m in sys.modules if m.startswith('simulators.')), names)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"['simulators.cli'] {sorted(COMMANDS)}"

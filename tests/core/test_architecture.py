"""The package structure holds: no import cycle anywhere under ``bridge/`` (the layers themselves
are import-linter contracts in pyproject.toml, run by scripts/test.sh).

A cycle is found with Tarjan's algorithm over grimp's graph of every import, lazy ones inside
functions included (:mod:`tests.helpers.import_cycles`).
"""

from __future__ import annotations

import grimp

from tests.helpers.import_cycles import import_cycles


def test_no_import_cycle_under_bridge() -> None:
    assert import_cycles(grimp.build_graph("bridge")) == []


def test_the_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "b", "c"):
        graph.add_module(module)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    assert import_cycles(graph) == [["a", "b", "c"]]

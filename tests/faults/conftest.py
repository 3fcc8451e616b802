"""The fault matrix (docs/design.md section 13): shared fixtures.

``figures``: each row's test records what it measured (lost, duplicates, recovery time...) with
``figures.record(row=N, fault="...", **values)``; the records go to
``$CHAMBER_BRIDGE_FIGURES`` (default ``build/fault-matrix.jsonl``), one JSON object per line with
the date, the machine and whether the long (``slow``) version ran, so docs/reliability.md can be
written from what was measured rather than from memory.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Figures:
    path: Path
    test: str
    long: bool

    def record(self, *, row: int, fault: str, **values: Any) -> None:
        entry = {"row": row, "fault": fault, "test": self.test, "long": self.long,
                 "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} ({os.cpu_count()} cores)",
                 **values}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(json.dumps(entry) + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    path = Path(os.environ.get("CHAMBER_BRIDGE_FIGURES", ROOT / "build" / "fault-matrix.jsonl"))
    yield Figures(path, request.node.nodeid, request.node.get_closest_marker("slow") is not None)

"""``bridge.runs``: its defaults, and bad values named by their key path (exit 2 from ``check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import RESUME_WITHIN, parse_config
from bridge.errors import ConfigError
from tests.helpers.cli import run_cli


def config(runs: Any) -> dict[str, Any]:
    return {"site": "chamber-a", "bridge": {"state_dir": "/tmp/x", "runs": runs}}


def test_runs_default_to_resuming_within_900_s_without_automatic_runs() -> None:
    runs = parse_config({"site": "chamber-a"}).bridge.runs
    assert (runs.resume_within, runs.auto) == (RESUME_WITHIN, None) == (900.0, None)
    assert parse_config(config({"resume_within": 0})).bridge.runs.resume_within == 0


@pytest.mark.parametrize(("runs", "problem"), [
    ({"resume_within": -1}, "bridge.runs.resume_within: Input should be greater than or equal to 0"),
    ({"resume_within": "soon"}, "bridge.runs.resume_within: Input should be a valid number"),
    ({"resume_within": 10 * 86_400}, "bridge.runs.resume_within: Input should be less than or equal to 604800"),
    ({"resume": 900}, "bridge.runs.resume: unknown key"),
])
def test_bad_runs_settings_are_named_by_their_key_path(runs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(runs))
    assert any(str(p).startswith(problem) for p in caught.value.problems), caught.value.problems


def test_check_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config({"resume_within": -5})))
    result = run_cli("check", "--no-files", str(path))
    assert result.returncode == 2
    assert "bridge.runs.resume_within" in result.stderr and "Traceback" not in result.stderr

"""``bridge.runs.auto`` in the config: its keys, and its expressions checked against the drivers' channels
with their key paths, by the model and by the real ``chamber-bridge check`` (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import PRE_ROLL_MAX, parse_config, render_name
from bridge.errors import ConfigError
from tests.helpers.cli import run_cli

INSTRUMENTS = [
    {"name": "cell_ga", "driver": "eurotherm", "interval": 1.0,
     "transport": {"kind": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "unit": 1},
     "options": {"family": "3500", "loop": 1}},
    {"name": "pyrometer", "driver": "impac", "interval": 0.5,
     "transport": {"kind": "serial", "port": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E"},
     "options": {"address": 0}},
]


def raw(auto: Any, instruments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"site": "chamber-a", "bridge": {"instruments": instruments or INSTRUMENTS,
                                             "runs": {"resume_within": 900, "auto": auto}}}


def problems(auto: Any, instruments: list[dict[str, Any]] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw(auto, instruments))
    return [str(p) for p in caught.value.problems]


def test_the_issue_s_example_is_a_valid_config() -> None:
    config = parse_config(raw({
        "start_when": "cell_ga.pv > 500.0 && pyrometer.temperature > 300.0", "true_for": 5,
        "stop_when": "cell_ga.pv < 400.0", "false_for": 30, "pre_roll": 60, "max_duration": 86400,
        "name": "{site}-{start:%Y%m%d-%H%M}", "tags": ["auto"]}))
    auto = config.bridge.runs.auto
    assert auto is not None and (auto.true_for, auto.false_for, auto.pre_roll, auto.max_duration) == (5, 30, 60, 86400)
    assert config.bridge.runs.resume_within == 900
    assert parse_config(raw(None)).bridge.runs.auto is None


def test_expressions_are_checked_against_the_channels_with_their_key_paths() -> None:
    assert problems({"start_when": "cell_ga.pvv > 500.0", "stop_when": "pyrometer.temperature < 'cold'"}) == [
        "bridge.runs.auto.start_when: unknown channel 'cell_ga.pvv' (cell_ga has: output_power, pv, status, "
        "working_setpoint) (column 8)",
        "bridge.runs.auto.stop_when: '<' cannot compare a double with a string (column 23)",
    ]


def test_a_wrong_instrument_is_reported_once_not_again_by_each_expression_naming_it() -> None:
    broken = [INSTRUMENTS[0], {**INSTRUMENTS[1], "options": {"address": 0, "nonsense": 1}}]
    found = problems({"start_when": "pyrometer.whatever > 1.0 && cell_ga.pv > 2.0"}, broken)
    assert found == ["bridge.instruments[1].options.nonsense: unknown key"]


@pytest.mark.parametrize(("auto", "expected"), [
    ({"true_for": 5}, "bridge.runs.auto.start_when: Field required"),
    ({"start_when": "cell_ga.pv > 1.0", "pre_roll": PRE_ROLL_MAX + 1},
     f"bridge.runs.auto.pre_roll: Input should be less than or equal to {PRE_ROLL_MAX:g}"),
    ({"start_when": "cell_ga.pv > 1.0", "true_for": -1}, "bridge.runs.auto.true_for: Input should be greater"),
    ({"start_when": "cell_ga.pv > 1.0", "name": "{site}-{n}"}, "bridge.runs.auto.name: unknown field {n}"),
    ({"start_when": "cell_ga.pv > 1.0", "name": "{start:%Y"}, "bridge.runs.auto.name: "),
    ({"start_when": "cell_ga.pv > 1.0", "nonsense": 1}, "bridge.runs.auto.nonsense: unknown key"),
    ({"start_when": "x" * 1001}, "bridge.runs.auto.start_when: String should have at most 1000 characters"),
])
def test_each_key_is_checked(auto: dict[str, Any], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(auto)), problems(auto)


def test_the_name_template_renders_the_site_and_the_start_in_local_time() -> None:
    name = render_name("{site}-{start:%Y%m%d}", "chamber-a", 1_765_000_000.0)
    assert name.startswith("chamber-a-2025") and len(name) == len("chamber-a-20251206")


def test_check_exits_2_naming_the_key_path_of_a_bad_expression(tmp_path: Path) -> None:
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(raw({"start_when": "cell_ga.pv > 500.0 &&& pyrometer.temperature > 1.0",
                                        "stop_when": "cell_gb.pv < 400.0"})))
    result = run_cli("check", "--no-files", str(path))
    assert result.returncode == 2, result.stdout
    lines = result.stderr.splitlines()
    assert lines == [
        f"{path}: bridge.runs.auto.start_when: unexpected character '&' (column 22)",
        f"{path}: bridge.runs.auto.stop_when: unknown instrument 'cell_gb' (instruments: cell_ga, pyrometer) "
        "(column 1)",
    ]
    assert "Traceback" not in result.stderr

"""The chamber-bridge command line as a lab engineer runs it: a real process, real simulators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import TPGLink
from tests.helpers.cli import read_json, run_cli, simulate
from tests.helpers.uploader import wait_for


def write_config(path: Path, instruments: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"site": "test-chamber", "bridge": {"instruments": instruments}}))
    return path


def tpg_instrument(url: str, name: str = "main_gauge") -> dict[str, object]:
    return {"name": name, "driver": "pfeiffer_tpg", "interval": 0.5,
            "transport": {"kind": "serial", "port": url, "timeout": 0.5}, "options": {"channels": [1, 2]}}


def test_read_json_prints_values_units_and_qualities(tpg_tcp: TPGLink, tmp_path: Path) -> None:
    tpg_tcp.sim.set_pressure(1, 1.23e-7)
    tpg_tcp.sim.set_pressure(2, 5.0e-2)
    config = write_config(tmp_path / "c.yaml", [tpg_instrument(tpg_tcp.port)])
    lines = read_json(config)
    assert [(r["instrument"], r["channel"], r["units"], r["quality"]) for r in lines] == [
        ("main_gauge", "pressure_1", "mbar", "ok"), ("main_gauge", "pressure_2", "mbar", "ok")]
    assert lines[0]["value"] == pytest.approx(1.23e-7)
    assert lines[1]["value"] == pytest.approx(5.0e-2)
    assert all(isinstance(r["timestamp"], float) for r in lines)


def test_read_gauge_off_prints_quality_and_no_value(tpg_tcp: TPGLink, tmp_path: Path) -> None:
    tpg_tcp.sim.set_gauge_on(1, False)
    config = write_config(tmp_path / "c.yaml", [tpg_instrument(tpg_tcp.port)])
    first = read_json(config)[0]
    assert (first["channel"], first["quality"], first["value"]) == ("pressure_1", "sensor_off", None)
    human = run_cli("read", str(config))
    assert human.returncode == 0
    header, first_row = human.stdout.splitlines()[:2]
    assert header.split() == ["instrument", "channel", "value", "units", "quality"]
    assert first_row.split() == ["main_gauge", "pressure_1", "-", "mbar", "sensor_off"]


def test_read_with_simulator_stopped_exits_1_with_one_line(tpg_tcp: TPGLink, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", [tpg_instrument(tpg_tcp.port)])
    tpg_tcp.server.stop()
    result = run_cli("read", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("chamber-bridge: error: instrument main_gauge: cannot open socket://127.0.0.1:")
    assert "Traceback" not in result.stderr


def test_read_silent_instrument_names_it_and_still_reads_the_others(tpg_tcp: TPGLink, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", [
        tpg_instrument(tpg_tcp.port, "silent_gauge"),
        {"name": "echo", "driver": "loopback_echo", "transport": {"kind": "serial", "port": "loop://"}},
    ])
    tpg_tcp.sim.silent = True
    result = run_cli("read", str(config), "--json")
    assert result.returncode == 1
    assert [json.loads(line)["instrument"] for line in result.stdout.splitlines()] == ["echo"]
    (line,) = result.stderr.splitlines()
    assert line.startswith("chamber-bridge: error: instrument silent_gauge: no reply")


def test_read_one_instrument_by_name(tpg_tcp: TPGLink, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", [
        tpg_instrument(tpg_tcp.port, "g1"), tpg_instrument("socket://127.0.0.1:1", "g2")])
    result = run_cli("read", str(config), "--instrument", "g1", "--json")
    assert result.returncode == 0, result.stderr
    assert {json.loads(line)["instrument"] for line in result.stdout.splitlines()} == {"g1"}
    missing = run_cli("read", str(config), "--instrument", "nope")
    assert missing.returncode == 2
    assert "no instrument named 'nope' (known: g1, g2)" in missing.stderr


def test_check_reports_three_mistakes_by_key_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "site: chamber-a\n"
        "mqtt: {port: 99999}\n"
        "bridge:\n"
        "  instruments:\n"
        "    - name: g\n"
        "      driver: pfeiffer_tpg\n"
        "      transport: {kind: serial, port: /dev/ttyUSB0, baudrate: 9601}\n"
        "    - name: h\n"
        "      driver: pfeifer_tpg\n"
        "      transport: {kind: serial, port: /dev/ttyUSB1}\n"
    )
    result = run_cli("check", str(config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{config}: mqtt.port: ")
    assert lines[1].startswith(f"{config}: bridge.instruments[0].transport.baudrate: 9601 is not a standard baud rate")
    assert lines[2].startswith(f"{config}: bridge.instruments[1].driver: unknown driver 'pfeifer_tpg'")
    assert "Traceback" not in result.stderr


def test_check_good_config_and_shipped_configs() -> None:
    for config in sorted(Path("configs").glob("*.yaml")):
        result = run_cli("check", "--no-files", str(config))  # their CA and secrets live on the deployment machines
        assert result.returncode == 0, f"{config}: {result.stderr}"


def test_usage_errors_exit_2() -> None:
    assert run_cli("read").returncode == 2
    assert run_cli("no-such-command").returncode == 2
    missing = run_cli("check", "/nonexistent.yaml")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "/nonexistent.yaml: cannot read config: No such file or directory"


def test_drivers_lists_builtin_and_entry_point_drivers() -> None:
    result = run_cli("drivers", "--json")
    assert result.returncode == 0
    drivers = {d["driver"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert drivers["pfeiffer_tpg"]["origin"] == "built-in"
    assert drivers["pfeiffer_tpg"]["transports"] == ["serial"]
    assert [c["name"] for c in drivers["pfeiffer_tpg"]["channels"]] == ["pressure_1", "pressure_2"]
    # The example third-party package (tests/plugins/example_driver) is installed by the test run.
    assert drivers["loopback_echo"]["origin"].startswith("entry point loopback_echo = chamber_bridge_example:")
    assert drivers["loopback_echo"]["channels"][0]["name"] == "echo"
    assert drivers["impac"]["channels"] == [
        {"name": "temperature", "units": "degC|degF", "type": "float", "description": "AAms"}]
    assert result.stderr == ""
    # each channel's value type; a bool's and a float's, as the driver declares them
    psu = {c["name"]: c for c in drivers["scpi_psu"]["channels"]}
    assert (psu["output_1"]["type"], psu["voltage_1"]["type"]) == ("bool", "float")
    assert (psu["output_1"]["units"], psu["voltage_1"]["units"]) == ("1", "V")
    assert {c["type"] for c in drivers["pfeiffer_tpg"]["channels"]} == {"float"}
    listing = run_cli("drivers").stdout.splitlines()
    tpg = listing.index("pfeiffer_tpg  [built-in]")
    assert listing[tpg + 3:tpg + 5] == [
        "    channels (default options), unit (docs/units.md), type:",
        "      pressure_1  mbar|Torr|Pa|mTorr|hPa|V  float  gauge 1, in the unit set on the controller"]
    psu_lines = listing[listing.index("scpi_psu  [built-in]"):]
    assert any(line.split()[:3] == ["output_1", "1", "bool"] for line in psu_lines)


def test_entry_point_driver_reads_through_the_cli(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", [
        {"name": "echo", "driver": "loopback_echo", "transport": {"kind": "serial", "port": "loop://"},
         "options": {"value": 17.25}}])
    (reading,) = read_json(config)
    assert (reading["channel"], reading["value"], reading["units"], reading["quality"]) == ("echo", 17.25, "arb", "ok")


def test_simulate_prints_where_it_listens_and_read_reaches_it(tmp_path: Path) -> None:
    with simulate("pfeiffer_tpg", "--tcp", "127.0.0.1:0", "--status", "2=off", timeout=10) as sim:
        url = next(word for word in sim.where.split() if word.startswith("socket://"))
        config = write_config(tmp_path / "c.yaml", [tpg_instrument(url)])
        readings = read_json(config)
        assert readings[1]["quality"] == "sensor_off" and readings[1]["value"] is None


def test_read_baseline_and_bridge_units_against_simulators_with_a_refused_identity_and_a_unit_change(
        tmp_path: Path) -> None:
    with simulate("pfeiffer_tpg", "--tcp", "127.0.0.1:0", "--refuse-identity", "--change-unit", "2=Torr",
                  timeout=10) as sim:
        url = next(word for word in sim.where.split() if word.startswith("socket://"))
        config = write_config(tmp_path / "c.yaml", [{**tpg_instrument(url), "identity": {"serial": "from-config"}}])
        result = run_cli("read", str(config), "--baseline")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        identity, configuration, refused = lines[-3:]
        assert identity == "main_gauge       identity: serial=from-config, vendor=Pfeiffer Vacuum"
        assert configuration in ("main_gauge       configuration: unit=mbar, gauge_1=PKR, gauge_2=TPR",
                                 "main_gauge       configuration: unit=Torr, gauge_1=PKR, gauge_2=TPR")
        assert refused == ("main_gauge       not read: AYT=AYT refused with NAK (syntax error), "
                           "PNR=PNR refused with NAK (syntax error)")
        wait_for(lambda: any(json.loads(line).get("baseline", {}).get("configuration", {}).get("unit") == "Torr"
                             for line in run_cli("read", str(config), "--json", "--baseline").stdout.splitlines()),
                 timeout=20, what="the simulator's unit change")
        units = dict(yaml.safe_load(config.read_text()), bridge={
            "units": {"pressure": "Pa"}, "instruments": [tpg_instrument(url)]})
        config.write_text(yaml.safe_dump(units))
        converted = read_json(config)
        assert {r["units"] for r in converted} == {"Pa"}, "read prints what the bridge would publish"

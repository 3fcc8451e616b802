"""Store version 2 read back: every reading kept with its quality, typed values (docs/store.md).

The runs are written file by file per the contract (tests/helpers/run_store.py, ``version=2``): a
gauge switched off for part of the run and under range for a moment, a head that was never there,
a supply whose output state is a bool, its mode an enum, its fault word named bits, a counter.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from bridge.store.export import rows, write_csv_to, write_parquet
from bridge.store.plot import STATES, not_drawn, panels, plot_run, title_lines
from bridge.store.reader import RunStore, StoreCorrupt
from tests.helpers.run_store import GAN19, START, Flow, gan19_flows, points, write_run

RUN = GAN19
OLD = "b1b1b1b1" + "0" * 23 + "8"


def flows() -> list[Flow]:
    return gan19_flows()


def with_details(store: Path) -> None:
    """The fault word's set bits are named in its detail, as the bridge does (a hand edit of chunk 0)."""
    path = store / RUN / "chunks" / "heater_psu" / "000000.msgpack"
    body = msgpack.unpackb(path.read_bytes())
    column = body["channels"]["heater_psu/faults"]
    column["detail"] = ["OVP, AC fail" if v else "" for v in column["values"]]
    path.write_bytes(msgpack.packb(body))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    write_run(tmp_path, RUN, flows(), stream_name="GaN-19", version=2)
    with_details(tmp_path)
    return RunStore(tmp_path)


def test_every_reading_comes_back_with_its_quality_detail_and_type(store: RunStore) -> None:
    run = store.load(RUN)
    assert run.problems == []
    expected = points(flows(), version=2)
    for name, s in run.series.items():
        got = list(zip(s.timestamps, s.values, s.units, s.qualities, s.details, strict=True))
        if name == "heater_psu/faults":
            got = [(t, v, u, q, "") for t, v, u, q, _ in got]
        assert got == expected[name], name
    p2 = run.series["main_gauge/p2"]
    assert p2.quality_counts() == {"ok": 15, "sensor_off": 8, "under_range": 2}
    assert p2.not_ok_spans() == [(START + 2.5, START + 6.5, "sensor_off"), (START + 10.0, START + 11.0, "under_range")]
    assert run.series["main_gauge/p3"].not_ok_spans() == [(START, START + 12.0, "no_sensor")]
    psu = {name: run.series[f"heater_psu/{name}"] for name in ("output", "mode", "faults", "cycles")}
    assert [type(v) for v in psu["output"].values] == [bool] * 10
    assert psu["faults"].values[4] == 5 and type(psu["faults"].values[4]) is int
    assert psu["faults"].details[4] == "OVP, AC fail"
    assert (psu["mode"].values[8], psu["mode"].qualities[8], psu["mode"].details[8]) == (None, "invalid", "reply 'UR?'")
    assert {name: s.type.value for name, s in psu.items()} == {"output": "bool", "mode": "enum", "faults": "bits",
                                                               "cycles": "int"}


def test_the_manifest_counts_per_quality_and_names_each_type(store: RunStore) -> None:
    m = store.find("GaN-19")
    assert (m.version, m.keeps_every_reading, m.total_points) == (2, True, 25 * 3 + 10 * 4)
    p2, p3, mode = m.channels["main_gauge/p2"], m.channels["main_gauge/p3"], m.channels["heater_psu/mode"]
    assert (p2.points, p2.bad_quality, p2.qualities) == (25, 10, {"ok": 15, "sensor_off": 8, "under_range": 2})
    assert (p3.points, p3.qualities) == (25, {"no_sensor": 25})
    assert (mode.type, mode.qualities, mode.not_numeric) == ("enum", {"ok": 9, "invalid": 1}, 9)


def test_the_export_has_every_point_with_quality_detail_and_type(store: RunStore) -> None:
    run = store.load(RUN)
    out = io.StringIO()
    assert write_csv_to(run, out) == run.points == 115
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    by = {(r["channel"], float(r["timestamp"])): r for r in table}
    off = by[("main_gauge/p2", START + 2.5)]
    assert (off["value"], off["quality"], off["detail"], off["type"], off["units"]) == (
        "", "sensor_off", "gauge switched off", "float", "mbar")
    assert by[("main_gauge/p2", START + 10.0)]["quality"] == "under_range"
    assert float(by[("main_gauge/p2", START)]["value"]) == 1.0e-3  # exact
    assert [by[("heater_psu/output", START + 0.25 + i)]["value"] for i in (2, 3)] == ["false", "true"]
    assert by[("heater_psu/faults", START + 4.25)]["value"] == "5"
    assert by[("heater_psu/faults", START + 4.25)]["detail"] == "OVP, AC fail"
    assert by[("heater_psu/mode", START + 5.25)]["value"] == "CC"
    assert by[("heater_psu/cycles", START + 9.25)]["value"] == "109"
    assert {r["type"] for r in table if r["channel"] == "heater_psu/mode"} == {"enum"}
    assert sum(r["quality"] == "no_sensor" for r in table) == 25


def test_the_parquet_export_keeps_numbers_and_words_apart(store: RunStore, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    run = store.load(RUN)
    write_parquet(run, tmp_path / "run.parquet")
    got = pq.read_table(tmp_path / "run.parquet").to_pylist()
    by = {(r["channel"], r["timestamp"]): r for r in got}
    assert by[("main_gauge/p2", START + 2.5)] | {"timestamp_iso": None} == {
        "timestamp_iso": None, "timestamp": START + 2.5, "channel": "main_gauge/p2", "value": None, "units": "mbar",
        "quality": "sensor_off", "detail": "gauge switched off", "type": "float", "value_text": None}
    assert (by[("heater_psu/output", START + 3.25)]["value"], by[("heater_psu/output", START + 3.25)]["type"]) == (
        1.0, "bool")
    assert (by[("heater_psu/mode", START + 5.25)]["value"], by[("heater_psu/mode", START + 5.25)]["value_text"]) == (
        None, "CC")
    assert by[("heater_psu/cycles", START + 0.25)]["value"] == 100.0


def test_the_plot_keeps_every_channel_and_shades_what_was_not_ok(store: RunStore, tmp_path: Path) -> None:
    run = store.load(RUN)
    groups = {p.units: p for p in panels(run)}
    assert list(groups) == ["mbar", "", STATES]
    mbar = {t.label: t for t in groups["mbar"].traces}
    assert list(mbar) == ["main_gauge/p1", "main_gauge/p2 (sensor_off 8, under_range 2)",
                          "main_gauge/p3 (no_sensor 25)"]
    assert mbar["main_gauge/p3 (no_sensor 25)"].values == []  # off the whole run: still there, shaded
    assert mbar["main_gauge/p3 (no_sensor 25)"].spans == [(START, START + 12.0, "no_sensor")]
    assert [q for _, _, q in mbar["main_gauge/p2 (sensor_off 8, under_range 2)"].spans] == ["sensor_off",
                                                                                            "under_range"]
    assert [t.label for t in groups[""].traces] == ["heater_psu/cycles", "heater_psu/faults"]
    states = {t.label: t for t in groups[STATES].traces}
    assert list(states) == ["heater_psu/mode (invalid 1)", "heater_psu/output"]
    assert states["heater_psu/output"].states == [False] * 3 + [True] * 4 + [False] * 3
    assert not_drawn(run) == []
    pytest.importorskip("matplotlib")
    out = plot_run(run, tmp_path / "run.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_version_1_channel_without_a_point_is_named_under_the_title(tmp_path: Path) -> None:
    gauge = Flow("g", {"p1": "mbar", "p2": "mbar"})
    gauge.polls = [(START + i, {"p1": 1e-7, "p2": None}) for i in range(5)]
    write_run(tmp_path, OLD, [gauge], stream_name="old")
    run = RunStore(tmp_path).load("old")
    assert "g/p2" not in run.series
    assert not_drawn(run) == ["g/p2 (5 bad quality)"]
    assert title_lines(run)[2] == ("No point to draw: readings of a bad quality are not kept in a version 1 store: "
                                   "g/p2 (5 bad quality)")


def test_rows_of_a_version_1_store_say_ok_and_float(tmp_path: Path) -> None:
    gauge = Flow("g", {"p1": "mbar"})
    gauge.polls = [(START + i, {"p1": 1e-7 * (i + 1) if i != 2 else None}) for i in range(4)]
    write_run(tmp_path, OLD, [gauge], stream_name="old")
    got = [(r.value, r.quality, r.type) for r in rows(RunStore(tmp_path).load("old"))]
    assert got == [(1e-7, "ok", "float"), (2e-7, "ok", "float"), (4e-7, "ok", "float")]


def _corrupt(store: RunStore, change: dict[str, Any]) -> Path:
    path = store.root / RUN / "chunks" / "heater_psu" / "000000.msgpack"
    body = msgpack.unpackb(path.read_bytes())
    for name, column in change.items():
        body["channels"][name] = {**body["channels"][name], **column}
    path.write_bytes(msgpack.packb(body))
    return path


@pytest.mark.parametrize(("change", "says"), [
    ({"heater_psu/output": {"values": [1.0] * 10}}, "channel heater_psu/output: values[0] is not of type bool: 1.0"),
    ({"heater_psu/mode": {"values": ["CV"] * 10}}, "channel heater_psu/mode: values[8] of quality invalid should be "
                                                  "nil, not 'CV'"),
    ({"heater_psu/cycles": {"values": [None] * 10}}, "channel heater_psu/cycles: values[0] is not of type int: None"),
    ({"heater_psu/mode": {"quality": ["ok"] * 9}}, "channel heater_psu/mode: quality should be a list of 10"),
    ({"heater_psu/mode": {"quality": ["fine"] * 10}}, "channel heater_psu/mode: quality[0] is not one of"),
    ({"heater_psu/mode": {"type": "colour"}}, "channel heater_psu/mode: type should be one of float, int"),
    ({"heater_psu/cycles": {"types": ["int"] * 9 + ["bool"]}},
     "channel heater_psu/cycles: values[9] is not of type bool"),
    ({"heater_psu/faults": {"detail": [5] * 10}}, "channel heater_psu/faults: detail[0] is not text: 5"),
])
def test_a_version_2_chunk_breaking_the_contract_is_named(store: RunStore, change: dict[str, Any], says: str) -> None:
    path = _corrupt(store, change)
    with pytest.raises(StoreCorrupt) as err:
        store.load(RUN)
    assert str(err.value).startswith(f"{path}: {says}"), str(err.value)


def test_a_version_2_manifest_with_bad_counts_is_named(store: RunStore) -> None:
    path = store.root / RUN / "manifest.json"
    raw = json.loads(path.read_text())
    raw["channels"]["main_gauge/p2"]["qualities"] = {"off": 3}
    path.write_text(json.dumps(raw))
    with pytest.raises(StoreCorrupt, match=r"channels.main_gauge/p2.qualities should be an object of quality: count"):
        store.find(RUN)

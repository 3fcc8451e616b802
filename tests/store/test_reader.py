"""Reading the local store back: stores written file by file per the contract, and by the real local sink."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import pytest

from bridge.store.export import iso, rows
from bridge.store.layout import Event
from bridge.store.plot import broken, holes, panels, title_lines
from bridge.store.reader import (
    RunLookupError,
    RunStore,
    StoreCorrupt,
    format_duration,
    format_event,
    format_gap,
)
from bridge.uploader.sinks.base import StreamInfo
from bridge.uploader.sinks.local import LocalSink
from tests.helpers.run_store import (
    BAKE1,
    BAKE2,
    DOWN,
    EVENTS,
    GAN17,
    GAN18,
    GAP,
    RESUMED,
    START,
    WHY,
    Flow,
    build_store,
    chunk_bodies,
    gan17_flows,
    points,
    write_resumed,
    write_run,
)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    build_store(tmp_path / "runs")
    return RunStore(tmp_path / "runs")


def read_back(store: RunStore, name: str) -> dict[str, list[tuple[float, float, str]]]:
    run = store.load(name)
    return {c: list(zip(s.timestamps, s.values, s.units, strict=True)) for c, s in run.series.items()}


def test_points_are_the_chunks_concatenated_per_flow_with_units(store: RunStore) -> None:
    run = store.load(GAN17)
    assert read_back(store, GAN17) == points(gan17_flows())  # exact floats, every channel
    assert run.chunks == {"main_gauge": [0, 1, 2], "pyrometer": [0, 1]}
    assert run.chunks_per_channel == {"main_gauge/p1": 3, "main_gauge/p2": 2, "pyrometer/temperature": 2}
    assert [len(s) for s in run.series.values()] == [25, 11, 11]
    assert run.problems == []
    m = run.manifest
    assert (m.stream_name, m.physical_sample, m.tags, m.exit_status, m.finalized, m.complete) == (
        "GaN-17", "S-1", ("GaN", "MBE"), "success", True, False)
    assert m.state == "finalized, incomplete (1 gap)"
    assert m.channels["main_gauge/p2"].bad_quality == 14
    assert m.total_points == 47


def test_chunk_index_orders_points_not_file_order_or_time(tmp_path: Path) -> None:
    """A clock stepped back mid-run: chunk 1 holds earlier timestamps than chunk 0. The reader keeps
    chunk order (it is seq order); the export sorts by time within each channel."""
    flow = Flow("g", {"p": "mbar"})
    later: list[tuple[float, dict[str, float | None]]] = [(START + 100 + i, {"p": float(i)}) for i in range(3)]
    flow.polls = later + [(START + i, {"p": 10.0 + i}) for i in range(3)]
    write_run(tmp_path, "f" * 32, [flow], stream_name="step", ppc=3)
    for path in sorted((tmp_path / ("f" * 32) / "chunks" / "g").iterdir(), reverse=True):
        path.touch()  # newest file first, in case anything sorted by mtime
    run = RunStore(tmp_path).load("step")
    assert run.series["g/p"].values == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    assert [r.value for r in rows(run)] == [10.0, 11.0, 12.0, 0.0, 1.0, 2.0]


@pytest.mark.parametrize(("name", "data_id"), [
    (GAN17, GAN17),  # the full data id
    ("a1b2c", GAN17),  # a unique prefix
    ("a1b2f", GAN18),
    ("c0ff", BAKE1),
    ("GaN-17", GAN17),  # a stream name only one run has
    ("GaN-18", GAN18),
])
def test_a_run_is_named_by_id_prefix_or_unique_stream_name(store: RunStore, name: str, data_id: str) -> None:
    assert store.find(name).data_id == data_id


@pytest.mark.parametrize(("name", "says"), [
    ("a1b2", "name 'a1b2' matches 2 runs: a1b2c3d4 (GaN-17, 2025-11-21 04:40:00), a1b2ffff (GaN-18, "),
    ("bakeout", "stream name 'bakeout' matches 2 runs: c0ffee00 (bakeout, 2025-11-20 04:40:00), d00dfeed"),
    ("nope", "no run 'nope' (4 runs; see chamber-bridge runs list --store "),
    ("../x", "'../x' cannot name a run"),
])
def test_missing_or_ambiguous_names_say_so_naming_the_store(store: RunStore, name: str, says: str) -> None:
    with pytest.raises(RunLookupError) as err:
        store.find(name)
    assert str(err.value).startswith(f"{store.root}: ")
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_store_is_a_lookup_error(tmp_path: Path) -> None:
    with pytest.raises(RunLookupError, match="no run store there"):
        RunStore(tmp_path / "nowhere").manifests()


def test_runs_are_listed_by_start_and_broken_ones_reported_apart(store: RunStore) -> None:
    (store.root / BAKE2 / "manifest.json").write_text("{not json")
    (store.root / "stray").mkdir()
    runs, broken_runs = store.manifests()
    assert [m.data_id for m in runs] == [BAKE1, GAN17, GAN18]
    assert sorted(str(e) for e in broken_runs) == [
        f"{store.root / BAKE2 / 'manifest.json'}: not valid JSON: Expecting property name enclosed in double quotes"
        " at line 1 column 2",
        f"{store.root / 'stray'}: no manifest.json (not a run, or its manifest was lost)"]
    with pytest.raises(StoreCorrupt, match="not valid JSON"):
        store.find("d00d")  # only the broken run has that prefix: say what is wrong with it


def _chunk(store: RunStore, index: int = 1) -> Path:
    return store.root / GAN17 / "chunks" / "main_gauge" / f"{index:06d}.msgpack"


def _repack(store: RunStore, change: dict[str, object]) -> bytes:
    body = msgpack.unpackb(_chunk(store).read_bytes())
    body.update(change)
    return bytes(msgpack.packb(body))


@pytest.mark.parametrize(("corrupt", "says"), [
    (lambda s: b"\xc1\xc1 not msgpack", "not a valid msgpack chunk"),
    (lambda s: _chunk(s).read_bytes()[:-7], "not a valid msgpack chunk"),
    (lambda s: msgpack.packb([1, 2]), "not a chunk (a msgpack map"),
    (lambda s: _repack(s, {"data_id": "other"}), "data_id 'other' is not this run's"),
    (lambda s: _repack(s, {"chunk_index": 7}), "chunk_index 7 does not match the file name"),
    (lambda s: _repack(s, {"channels": {"main_gauge/p1": {"timestamps": [1.0, 2.0], "values": [1.0],
                                                           "units": "mbar"}}}),
     "channel main_gauge/p1: 2 timestamps but 1 values"),
    (lambda s: _repack(s, {"channels": {"main_gauge/p1": {"timestamps": [1.0], "values": [None], "units": "mbar"}}}),
     "channel main_gauge/p1: values[0] is not a number: None"),
    (lambda s: _repack(s, {"channels": {"main_gauge/p1": {"timestamps": [1.0], "values": [1.0]}}}),
     "channel main_gauge/p1: units should be text, not None"),
])
def test_a_corrupt_chunk_is_named(store: RunStore, corrupt: object, says: str) -> None:
    assert callable(corrupt)
    _chunk(store).write_bytes(corrupt(store))
    with pytest.raises(StoreCorrupt) as err:
        store.load("GaN-17")
    assert str(err.value).startswith(f"{_chunk(store)}: {says}")


@pytest.mark.parametrize(("change", "says"), [
    ({"started_at": "yesterday"}, "started_at should be a number of Unix seconds (1970..9999), not 'yesterday'"),
    ({"stopped_at": 1e300}, "stopped_at should be a number of Unix seconds (1970..9999) or null, not 1e+300"),
    ({"v": 3}, "manifest version 3; this chamber-bridge reads versions 1, 2"),
    ({"data_id": GAN18}, f"data_id '{GAN18}' does not match its directory '{GAN17}'"),
    ({"finalized": "yes"}, "finalized should be true or false"),
    ({"channels": {"main_gauge/p1": {"points": -1}}}, "channels.main_gauge/p1.points should be a count"),
    ({"tags": "GaN"}, "tags should be a list of text"),
])
def test_a_manifest_breaking_the_contract_is_named(store: RunStore, change: dict[str, object], says: str) -> None:
    path = store.root / GAN17 / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(StoreCorrupt) as err:
        store.find(GAN17)
    assert str(err.value).startswith(f"{path}: {says}")


def test_missing_chunk_files_and_wrong_counts_are_problems_not_failures(store: RunStore) -> None:
    _chunk(store, 1).unlink()
    run = store.load("GaN-17")
    assert run.problems == [
        "flow main_gauge: chunk files missing: 1",
        "flow main_gauge: the manifest says 3 chunks, 2 files found",
        "channel main_gauge/p1: the manifest says 25 points, the chunk files hold 15",
    ]
    assert len(run.series["main_gauge/p2"]) == 11  # p2 had no point in chunk 1: its count still agrees


def test_an_open_run_is_read_from_its_chunks(store: RunStore) -> None:
    run = store.load("GaN-18")
    assert (run.manifest.finalized, run.manifest.state, run.manifest.channels, run.problems) == (False, "open", {}, [])
    assert run.points == 7


def test_a_unit_change_keeps_each_points_own_unit(tmp_path: Path) -> None:
    flow = Flow("g", {"p": "mbar"})
    flow.polls = [(START + i, {"p": 1e-6}) for i in range(4)]
    write_run(tmp_path, "e" * 32, [flow], stream_name="u", ppc=2)
    body = {"data_id": "e" * 32, "chunk_index": 1,
            "channels": {"g/p": {"timestamps": [START + 2, START + 3], "values": [7.5e-7, 7.4e-7], "units": "Torr"}}}
    (tmp_path / ("e" * 32) / "chunks" / "g" / "000001.msgpack").write_bytes(msgpack.packb(body))
    run = RunStore(tmp_path).load("u")
    assert run.series["g/p"].units == ["mbar", "mbar", "Torr", "Torr"]
    assert [(r.value, r.units) for r in rows(run)][1:3] == [(1e-6, "mbar"), (7.5e-7, "Torr")]
    assert [(p.units, [t.label for t in p.traces]) for p in panels(run)] == [
        ("Torr", ["g/p (in Torr)"]), ("mbar", ["g/p (in mbar)"])]


def test_a_run_written_by_the_real_local_sink_reads_back(tmp_path: Path) -> None:
    flows = gan17_flows()
    manifest = write_run(tmp_path / "scratch", GAN17, flows, stream_name="GaN-17", gaps=[GAP])
    sink = LocalSink(tmp_path / "runs")
    data_id = sink.initialize(StreamInfo(GAN17, "chamber-a", "GaN-17", None, "3", None, (), 10, START))
    assert RunStore(tmp_path / "runs").load("GaN-17").manifest.state == "open"
    for flow in flows:
        for body in chunk_bodies(data_id, flow, 10):
            sink.push_chunk(data_id, flow.name, body)
    sink.finalize(data_id, manifest)
    run = RunStore(tmp_path / "runs").load(GAN17[:8])
    assert read_back(RunStore(tmp_path / "runs"), "GaN-17") == points(flows)
    assert (run.problems, run.manifest.state) == ([], "finalized, incomplete (1 gap)")


# ---------------------------------------------------------------- formatting, the export's rows, the plot's pieces


def test_formats() -> None:
    assert iso(1_763_700_000.751) == "2025-11-21T04:40:00.751000Z"
    assert [format_duration(s) for s in (None, 4.6, 750, 3900, 90_000)] == ["-", "5s", "12m30s", "1h05m", "1d01h"]
    assert format_gap(GAP) == "seq 120-130 (chamber-a, epoch e1e2e3e4): not received within the grace period (300 s)"


def test_rows_are_sorted_by_channel_then_time(store: RunStore) -> None:
    out = list(rows(store.load("GaN-17")))
    assert [r.channel for r in out] == ["main_gauge/p1"] * 25 + ["main_gauge/p2"] * 11 + ["pyrometer/temperature"] * 11
    assert all(a.timestamp < b.timestamp for a, b in itertools.pairwise(out) if a.channel == b.channel)


def test_lines_break_where_points_are_missing() -> None:
    xs, ys = broken([0.0, 1.0, 2.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0, 5.0], 1.0)
    assert xs == [0.0, 1.0, 2.0, 2.0, 5.0, 6.0]
    assert ys[:3] == [1.0, 2.0, 3.0] and math.isnan(ys[3]) and ys[4:] == [4.0, 5.0]
    assert holes([0.0, 1.0, 2.0, 5.0, 6.0], 1.0) == []  # 3 intervals: a break, not "no data"
    assert holes([0.0, 1.0, 5.5, 6.0], 1.0) == [(1.0, 5.5)]


def test_panels_group_by_unit_pressure_first_log_only_when_positive(store: RunStore) -> None:
    run = store.load("GaN-17")
    groups = panels(run)
    assert [(p.units, [t.label for t in p.traces], p.log_scale) for p in groups] == [
        ("mbar", ["main_gauge/p1", "main_gauge/p2 (14 bad readings)"], True),
        ("°C", ["pyrometer/temperature (1 bad reading)"], False)]
    run.series["main_gauge/p1"].values[0] = -1e-9  # an offset-corrected gauge can read below zero
    assert not panels(run)[0].log_scale


def test_title_names_stream_sample_run_start_status_and_gaps(store: RunStore) -> None:
    head, details, notes = title_lines(store.load("GaN-17"))
    assert head == "GaN-17  ·  sample S-1"
    assert details == (f"run {GAN17}  ·  site chamber-a\nstarted 2025-11-21 04:40:00 UTC  ·  duration 15s  ·  "
                       "exit success  ·  finalized, incomplete (1 gap)")
    assert notes == f"Gaps recorded in the manifest: {format_gap(GAP)}"


# ---------------------------------------------------------------- resumed runs, automatic runs, events


def test_a_resumed_automatic_run_reads_back_with_its_events_and_stays_complete(tmp_path: Path) -> None:
    write_resumed(tmp_path)
    m = RunStore(tmp_path).find("resumed")
    assert (m.data_id, m.trigger, m.why, m.gaps, m.missing_gaps) == (RESUMED, "auto", WHY, (DOWN,), ())
    assert m.state == "finalized, complete"
    assert m.events == (Event(START + 1.5, "Ga shutter open", ("shutter",), "cli", 3),
                        Event(START + 8.5, "ramp to 580 °C, $T$ stable", (), "auto", 55))
    assert format_gap(DOWN) == ("2025-11-21 04:40:04 to 04:40:07 UTC (3s), before seq 40 (chamber-a, "
                                "epoch e1e2e3e4): bridge_down")
    assert format_event(m.events[0]) == "2025-11-21 04:40:01.500 UTC  [cli] Ga shutter open (shutter)"
    _, details, notes = title_lines(RunStore(tmp_path).load("resumed"))
    assert details.endswith("finalized, complete") and "bridge_down" in notes


def test_a_manifest_without_events_or_trigger_is_a_manual_run_without_events(store: RunStore) -> None:
    m = store.find("GaN-17")
    assert (m.trigger, m.why, m.events) == ("manual", {}, ())


@pytest.mark.parametrize(("events", "says"), [
    ("many", "events should be a list of objects, not str"),
    ([5], "events[0] should be an object"),
    ([{**EVENTS[0], "time": "noon"}], "events[0].time should be a number of Unix seconds"),
    ([{**EVENTS[0], "text": ""}], "events[0].text should be non-empty text"),
    ([{**EVENTS[0], "tags": "shutter"}], "events[0].tags should be a list of text"),
    ([{**EVENTS[0], "seq": -1}], "events[0].seq should be a seq (integer >= 0) or null"),
])
def test_bad_events_make_the_run_damaged_naming_the_event(tmp_path: Path, events: object, says: str) -> None:
    write_resumed(tmp_path)
    path = tmp_path / RESUMED / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "events": events}))
    with pytest.raises(StoreCorrupt) as err:
        RunStore(tmp_path).find(RESUMED)
    assert str(err.value).startswith(f"{path}: {says}")


# ---------------------------------------------------------------- baselines


def test_a_runs_baselines_read_back_and_their_changes(tmp_path: Path, store: RunStore) -> None:
    from bridge.store import baseline as baselines
    from tests.helpers.run_store import BASELINE

    write_resumed(tmp_path)
    m = RunStore(tmp_path).find("resumed")
    assert m.baseline == BASELINE
    assert [f.name for f in baselines.changes(m.baseline)] == ["main_gauge.configuration.unit",
                                                               "pyrometer.configuration.emissivity"]
    model = next(f for f in baselines.fields(m.baseline) if f.name == "pyrometer.identity.model")
    assert (model.start, model.stop_read, model.changed) == ("IGA 12", False, False), "not read is not a change"
    assert baselines.refused(m.baseline) == [("stop", "pyrometer", "AAna", "01na answered 'no'")]
    assert store.find("GaN-17").baseline == {}


def test_changes_compare_types_and_name_what_was_not_read() -> None:
    from bridge.store import baseline as baselines

    doc = {"start": {"a": {"configuration": {"x": 1, "y": True, "z": 0.5}}, "b": {"error": "unavailable: down"}},
           "stop": {"a": {"configuration": {"x": 1.0, "y": 1, "z": 0.5}}, "c": {"identity": {"serial": "2"}}}}
    assert [f.name for f in baselines.changes(doc)] == ["a.configuration.y"]  # 1 == 1.0; true is not 1
    assert baselines.unread(doc) == [("start", "b", "unavailable: down"), ("start", "c", "not in the snapshot"),
                                     ("stop", "b", "not in the snapshot")]
    assert baselines.changes({}) == [] and baselines.unread({"start": {}}) == []


@pytest.mark.parametrize(("value", "says"), [
    ("yes", "baseline should be an object"),
    ({"start": []}, "baseline.start should be an object of instruments"),
    ({"start": {"g": 5}}, "baseline.start.g should be an object"),
    ({"stop": {"g": {"identity": {"serial": 5}}}}, "baseline.stop.g.identity should be an object of texts"),
    ({"stop": {"g": {"configuration": {"unit": ["mbar"]}}}},
     "baseline.stop.g.configuration should be an object of texts, numbers and truth values"),
    ({"stop": {"g": {"error": 3}}}, "baseline.stop.g.error should be text or null"),
    ({"stop": {"g": {"t": "now"}}}, "baseline.stop.g.t should be a number of Unix seconds"),
])
def test_a_bad_baseline_makes_the_run_damaged_naming_the_key(tmp_path: Path, value: object, says: str) -> None:
    write_resumed(tmp_path)
    path = tmp_path / RESUMED / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "baseline": value}))
    with pytest.raises(StoreCorrupt) as err:
        RunStore(tmp_path).find(RESUMED)
    assert str(err.value).startswith(f"{path}: {says}")

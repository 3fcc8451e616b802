"""``chamber-bridge runs list|show|export|plot`` as a real process over a store written per the contract."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import ROOT, run_cli
from tests.helpers.run_store import (
    BAKE1,
    BAKE2,
    EVENTS,
    GAN17,
    GAN18,
    GAN19,
    RESUMED,
    build_store,
    gan17_flows,
    gan19_flows,
    points,
    write_resumed,
    write_run,
)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    build_store(tmp_path / "runs")
    return tmp_path / "runs"


def runs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("runs", *args, "--store", str(store))


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("chamber-bridge: error: ")
    return line.removeprefix("chamber-bridge: error: ")


def test_list_prints_one_line_per_run_oldest_first(store: Path) -> None:
    result = runs(store, "list")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "stream", "site", "started", "(UTC)", "duration", "points", "exit", "state"]
    assert [line.split("  ")[0] for line in lines[1:]] == [BAKE1[:8], GAN17[:8], GAN18[:8], BAKE2[:8]]
    assert [line.split() for line in lines[1:]] == [
        [BAKE1[:8], "bakeout", "chamber-a", "2025-11-20", "04:40:00", "4s", "5", "abort", "finalized,", "complete"],
        [GAN17[:8], "GaN-17", "chamber-a", "2025-11-21", "04:40:00", "15s", "47", "success", "finalized,",
         "incomplete", "(1", "gap)"],
        [GAN18[:8], "GaN-18", "chamber-a", "2025-11-21", "07:26:40", "open", "7", "-", "open"],
        [BAKE2[:8], "bakeout", "chamber-a", "2025-11-21", "10:13:20", "2s", "3", "success", "finalized,", "complete"],
    ]
    as_json = [json.loads(line) for line in runs(store, "list", "--json").stdout.splitlines()]
    assert [m["data_id"] for m in as_json] == [BAKE1, GAN17, GAN18, BAKE2]


#: how ``runs show`` counts the readings a version 1 store left out
NOT_KEPT = "{} bad quality, not kept (store version 1)"


def test_show_prints_metadata_channels_gaps_and_checks_the_files(store: Path) -> None:
    result = runs(store, "show", "GaN-17")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    fields = dict(line.split(None, 1) if "  " not in line else [s.strip() for s in line.split("  ", 1)]
                  for line in out.split("\n\n")[0].splitlines())
    assert fields["run"] == GAN17
    assert fields["stream"] == "GaN-17"
    assert fields["sample"] == "S-1"
    assert fields["tags"] == "GaN, MBE"
    assert fields["started"] == "2025-11-21 04:40:00 UTC"
    assert fields["stopped"] == "2025-11-21 04:40:15 UTC (15s)"
    assert fields["exit status"] == "success"
    assert fields["finalized"] == "yes, 2025-11-21 04:40:16 UTC (grace_expired)"
    assert fields["complete"] == "no: 1 gap (below)"
    assert fields["report"] == "62 readings, 15 bad quality, 5 chunks, 0 retries"
    assert fields["store"] == str(store / GAN17)
    table = [line.split() for line in out.split("\n\n")[1].splitlines()]
    assert table == [
        ["channel", "flow", "units", "type", "points", "ok", "other", "qualities", "chunks"],
        ["main_gauge/p1", "main_gauge", "mbar", "float", "25", "25", "-", "3"],
        ["main_gauge/p2", "main_gauge", "mbar", "float", "11", "11", *NOT_KEPT.format(14).split(), "2"],
        ["pyrometer/temperature", "pyrometer", "°C", "float", "11", "11", *NOT_KEPT.format(1).split(), "2"],
    ]
    assert out.split("\n\n")[3].splitlines() == [
        "baseline: not recorded (a run closed at a restart, or logged by a bridge without baselines)"]
    assert out.split("\n\n")[4].splitlines() == [
        "gaps: 1",
        "  seq 120-130 (chamber-a, epoch e1e2e3e4): not received within the grace period (300 s)",
        "events: none",
        "files: 5 chunk files, 47 points, all readable; match the manifest",
    ]
    assert fields["trigger"] == "manual" and "why started" not in fields
    open_run = runs(store, "show", "a1b2f")
    assert open_run.returncode == 0, open_run.stderr
    assert "finalized      no (still streaming, or waiting for data)" in open_run.stdout
    assert "main_gauge/p1  main_gauge  mbar   float       7   7  -                     1" in open_run.stdout


def test_show_reports_chunk_files_that_disagree_with_the_manifest(store: Path) -> None:
    (store / GAN17 / "chunks" / "pyrometer" / "000000.msgpack").unlink()
    result = runs(store, "show", GAN17[:6])
    assert result.returncode == 1
    assert result.stdout.splitlines()[-4:] == [
        "files: 4 chunk files, 38 points; they disagree with the manifest:",
        "  flow pyrometer: chunk files missing: 0",
        "  flow pyrometer: the manifest says 2 chunks, 1 files found",
        "  channel pyrometer/temperature: the manifest says 11 points, the chunk files hold 2",
    ]


def expected_csv() -> list[tuple[str, ...]]:
    """A version 1 store holds ok points only: every row says ok, float, no detail."""
    return [(_iso(t), repr(t), channel, repr(v), u, "ok", "", "float")
            for channel, pts in points(gan17_flows()).items() for t, v, u in sorted(pts)]


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_export_csv_is_long_format_sorted_and_round_trips(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "gan17.csv"
    result = runs(store, "export", "GaN-17", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}: 47 points of run {GAN17[:8]} (GaN-17)\n"
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[:3] == [
        "timestamp_iso,timestamp,channel,value,units,quality,detail,type",
        "2025-11-21T04:40:00.250000Z,1763700000.25,main_gauge/p1,1e-06,mbar,ok,,float",
        "2025-11-21T04:40:00.751000Z,1763700000.751,main_gauge/p1,8.668778997501815e-07,mbar,ok,,float",
    ]
    assert text.splitlines()[-1] == (
        "2025-11-21T04:40:14.500000Z,1763700014.5,pyrometer/temperature,608.9230000000001,°C,ok,,float")
    table = list(csv.reader(io.StringIO(text)))
    assert [tuple(row) for row in table[1:]] == expected_csv()
    read_back = {(float(r[1]), r[2], float(r[3]), r[4]) for r in table[1:]}
    assert read_back == {(t, c, v, u) for c, pts in points(gan17_flows()).items() for t, v, u in pts}  # exact floats
    to_stdout = runs(store, "export", GAN17, "--out", "-")
    assert to_stdout.returncode == 0
    assert to_stdout.stdout == text


def test_export_without_out_writes_a_named_file_here(store: Path, tmp_path: Path) -> None:
    here = tmp_path / "here"
    here.mkdir()
    result = subprocess.run([sys.executable, "-m", "bridge", "runs", "export", "c0ff", "--store", str(store)],
                            cwd=here, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert [p.name for p in here.iterdir()] == [f"bakeout-{BAKE1[:8]}.csv"]


def test_export_parquet_reads_back_with_units(store: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "gan17.parquet"
    result = runs(store, "export", "GaN-17", "--format", "parquet", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.column_names == ["timestamp_iso", "timestamp", "channel", "value", "units", "quality", "detail",
                                  "type", "value_text"]
    assert str(table.schema.field("timestamp_iso").type) == "timestamp[us, tz=UTC]"
    got = table.to_pydict()
    rows = expected_csv()
    assert got["timestamp"] == [float(r[1]) for r in rows]
    assert got["channel"] == [r[2] for r in rows]
    assert got["value"] == [float(r[3]) for r in rows]
    assert got["units"] == [r[4] for r in rows]
    assert set(got["quality"]) == {"ok"} and set(got["type"]) == {"float"} and set(got["value_text"]) == {None}
    assert [t.isoformat(timespec="microseconds").replace("+00:00", "Z") for t in got["timestamp_iso"]] == [
        r[0] for r in rows]
    assert json.loads(table.schema.field("value").metadata[b"units"]) == {
        "main_gauge/p1": "mbar", "main_gauge/p2": "mbar", "pyrometer/temperature": "°C"}
    assert json.loads(table.schema.metadata[b"chamber_bridge.manifest"])["data_id"] == GAN17


def test_plot_writes_a_real_png(store: Path, tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    out = tmp_path / "run.png"
    result = runs(store, "plot", "GaN-17", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}: 47 points of run {GAN17[:8]} (GaN-17)\n"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(out)
    height, width = pixels.shape[:2]
    assert width == 1500  # 10 in at 150 dpi
    assert 800 < height < 2000  # two panels (mbar, °C) and the title
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(("args", "code", "says"), [
    (("show", "nope"), 2, "{store}: no run 'nope' (4 runs; see chamber-bridge runs list --store {store})"),
    (("show", "a1b2"), 2, "{store}: name 'a1b2' matches 2 runs: a1b2c3d4 (GaN-17, 2025-11-21 04:40:00), "
                          "a1b2ffff (GaN-18, 2025-11-21 07:26:40); give more of the data id"),
    (("export", "bakeout"), 2, "{store}: stream name 'bakeout' matches 2 runs: "),
    (("plot", "GaN-17", "--out", "x.gif"), 1, "x.gif: cannot plot to .gif files (use .png, .svg, .pdf)"),
])
def test_bad_names_exit_with_one_line(store: Path, args: tuple[str, ...], code: int, says: str) -> None:
    line = one_error_line(runs(store, *args), code)
    assert line.startswith(says.format(store=store))


def test_a_missing_store_exits_2(tmp_path: Path) -> None:
    line = one_error_line(runs(tmp_path / "nowhere", "list"), 2)
    assert line == f"{tmp_path / 'nowhere'}: no run store there (give --store DIR or --config CONFIG)"


def test_a_corrupt_chunk_exits_1_naming_the_file(store: Path, tmp_path: Path) -> None:
    chunk = store / GAN17 / "chunks" / "main_gauge" / "000002.msgpack"
    chunk.write_bytes(chunk.read_bytes()[:20])
    out = tmp_path / "x.csv"
    line = one_error_line(runs(store, "export", "GaN-17", "--out", str(out)), 1)
    assert line.startswith(f"{chunk}: not a valid msgpack chunk")
    assert not out.exists()
    shown = runs(store, "show", "GaN-17")  # the metadata still shows, then the error
    assert one_error_line(shown, 1).startswith(f"{chunk}: not a valid msgpack chunk")
    assert "gaps: 1" in shown.stdout


def test_a_manifest_that_is_not_json_is_named_and_list_shows_the_rest(store: Path) -> None:
    manifest = store / BAKE2 / "manifest.json"
    manifest.write_text('{"v": 1, "data_id": ')
    line = one_error_line(runs(store, "show", BAKE2), 1)
    assert line == f"{manifest}: not valid JSON: Expecting value at line 1 column 21"
    listed = runs(store, "list")  # the listing worked: exit 0, the damaged run one line on stderr
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.splitlines() == [f"chamber-bridge: warning: damaged run: {line}"]
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == [BAKE1[:8], GAN17[:8], GAN18[:8]]


def test_missing_server_extra_exits_1_with_the_pip_line(store: Path, tmp_path: Path) -> None:
    for args, module in ((["export", "GaN-17", "--format", "parquet", "--out", str(tmp_path / "x.parquet")], "pyarrow"),
                         (["plot", "GaN-17", "--out", str(tmp_path / "x.png")], "matplotlib")):
        code = (f"import sys; sys.modules[{module!r}] = None; from bridge.cli.main import main; "
                f"sys.argv = ['chamber-bridge', 'runs', *{args!r}, '--store', {str(store)!r}]; main()")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
        line = one_error_line(result, 1)
        assert line.endswith(f"needs {module}, which is not installed: pip install 'chamber-bridge[server]'")


def test_the_store_can_come_from_the_config(store: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump({"site": "chamber-a", "uploader": {"sink": {"kind": "local", "path": str(store)}}}))
    result = run_cli("runs", "list", "--config", str(local))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
    remote = tmp_path / "remote.yaml"
    remote.write_text(yaml.safe_dump({"site": "chamber-a", "uploader": {"sink": {
        "kind": "atomscale", "endpoint": "https://example.invalid", "api_key_env": "KEY"}}}))
    line = one_error_line(run_cli("runs", "list", "--config", str(remote)), 2)
    assert line == (f"{remote}: uploader.sink is atomscale, not local: its runs are not in a local store "
                    "(use --store DIR)")
    both = run_cli("runs", "list", "--config", str(local), "--store", str(store))
    assert one_error_line(both, 2) == "give --store or --config, not both"


def test_help_loads_neither_matplotlib_nor_pyarrow() -> None:
    code = ("import sys; from bridge.cli.main import main; sys.argv = ['chamber-bridge', 'runs', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('matplotlib', 'pyarrow', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines()[1:-1]] == [
        "export", "list", "plot", "show"]


# ---------------------------------------------------------------- a resumed automatic run with events


def test_show_lists_the_events_the_time_down_and_why_the_run_started(store: Path) -> None:
    write_resumed(store)
    result = runs(store, "show", "resumed")
    assert result.returncode == 0, result.stderr
    head, *_, baseline, tail = result.stdout.split("\n\n")
    fields = dict([s.strip() for s in line.split("  ", 1)] for line in head.splitlines())
    assert baseline.splitlines() == [
        "baseline: identity and configuration at the run's start and stop; 2 fields changed during the run: "
        "main_gauge.configuration.unit, pyrometer.configuration.emissivity",
        "  instrument  field                     start            stop",
        "  main_gauge  identity.vendor           Pfeiffer Vacuum  Pfeiffer Vacuum",
        "  main_gauge  identity.model            TPG362           TPG362",
        "  main_gauge  identity.serial           44990000         44990000",
        "  main_gauge  configuration.unit        mbar             Torr             CHANGED",
        "  main_gauge  configuration.gauge_1     PKR              PKR",
        "  pyrometer   identity.vendor           IMPAC            IMPAC",
        "  pyrometer   identity.model            IGA 12           -",
        "  pyrometer   configuration.unit        degC             degC",
        "  pyrometer   configuration.emissivity  0.7              0.65             CHANGED",
        "  refused at stop: pyrometer AAna: 01na answered 'no'",
    ]
    assert fields["trigger"] == "auto"
    assert fields["why started"] == "main_gauge.p1 > 0.0 (main_gauge.p1=1e-07)"
    assert fields["complete"] == "yes; the bridge was down 3s while the run went on (below)"
    assert tail.splitlines() == [
        "gaps: 1",
        "  2025-11-21 04:40:04 to 04:40:07 UTC (3s), before seq 40 (chamber-a, epoch e1e2e3e4): bridge_down",
        "events: 2",
        "  2025-11-21 04:40:01.500 UTC  [cli] Ga shutter open (shutter)",
        "  2025-11-21 04:40:08.500 UTC  [auto] ramp to 580 °C, $T$ stable",
        "files: 1 chunk file, 7 points, all readable; match the manifest",
    ]
    as_json = json.loads(runs(store, "show", "resumed", "--json").stdout)
    assert as_json["events"] == EVENTS
    assert as_json["baseline"]["stop"]["main_gauge"]["configuration"]["unit"] == "Torr"
    assert (as_json["trigger"], as_json["report"]["complete"], as_json["gaps"][0]["cause"]) == (
        "auto", True, "bridge_down")


def test_export_events_writes_them_in_log_order(store: Path, tmp_path: Path) -> None:
    write_resumed(store)
    out = tmp_path / "events.csv"
    result = runs(store, "export", "resumed", "--events", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}: 2 events of run {RESUMED[:8]} (resumed)\n"
    assert list(csv.reader(io.StringIO(out.read_text(encoding="utf-8")))) == [
        ["timestamp_iso", "timestamp", "seq", "source", "text", "tags"],
        ["2025-11-21T04:40:01.500000Z", "1763700001.5", "3", "cli", "Ga shutter open", "shutter"],
        ["2025-11-21T04:40:08.500000Z", "1763700008.5", "55", "auto", "ramp to 580 °C, $T$ stable", ""],
    ]
    here = subprocess.run([sys.executable, "-m", "bridge", "runs", "export", "resumed", "--events", "--store",
                           str(store)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert here.returncode == 0, here.stderr
    assert (tmp_path / f"resumed-{RESUMED[:8]}-events.csv").exists()
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = tmp_path / "events.parquet"
    assert runs(store, "export", "resumed", "--events", "--format", "parquet", "--out", str(parquet)).returncode == 0
    table = pq.read_table(parquet)
    assert table.column("text").to_pylist() == ["Ga shutter open", "ramp to 580 °C, $T$ stable"]
    assert table.column("tags").to_pylist() == [["shutter"], []]


def test_plot_draws_the_events_as_vertical_lines(store: Path, tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    from bridge.store.plot import EVENT_COLOR

    write_resumed(store)
    colour = [int(EVENT_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5)]

    def event_pixels(path: Path) -> int:
        pixels = image.imread(path)[..., :3]
        return int((abs(pixels - colour).max(axis=-1) < 0.08).sum())

    with_events = tmp_path / "with.png"
    assert runs(store, "plot", "resumed", "--out", str(with_events)).returncode == 0
    manifest = store / RESUMED / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "events": []}))
    without = tmp_path / "without.png"
    assert runs(store, "plot", "resumed", "--out", str(without)).returncode == 0
    assert event_pixels(without) == 0
    assert event_pixels(with_events) > 200  # two dashed lines through the panel, and their labels


def test_show_of_a_version_2_run_counts_every_quality_and_names_each_type(tmp_path: Path) -> None:
    write_run(tmp_path, GAN19, gan19_flows(), stream_name="GaN-19", version=2)
    result = runs(tmp_path, "show", "GaN-19")
    assert result.returncode == 0, result.stderr
    fields = dict(line.split("  ", 1) for line in result.stdout.split("\n\n")[0].splitlines())
    assert fields["qualities"].strip() == "ok 79, invalid 1, no_sensor 25, sensor_off 8, under_range 2"
    rows = {cells[0]: cells[1:] for cells in map(str.split, result.stdout.split("\n\n")[1].splitlines()[1:])}
    assert rows["main_gauge/p2"] == ["main_gauge", "mbar", "float", "25", "15", "sensor_off", "8,", "under_range",
                                     "2", "3"]
    assert rows["main_gauge/p3"] == ["main_gauge", "mbar", "float", "25", "0", "no_sensor", "25", "3"]
    assert rows["heater_psu/output"] == ["heater_psu", "-", "bool", "10", "10", "-", "1"]
    assert rows["heater_psu/mode"] == ["heater_psu", "-", "enum", "10", "9", "invalid", "1", "1"]
    assert result.stdout.rstrip().endswith("files: 4 chunk files, 115 points, all readable; match the manifest")

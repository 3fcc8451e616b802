"""``chamber-bridge runs list|show|export|plot`` over a store holding damaged and hostile runs.

Each case adds one bad run folder to the usual four-run store (tests/helpers/run_store.py): a
manifest that is not JSON, has the wrong types, absurd timestamps, is a symlink out of the
store, a FIFO or a 1 GB file; a chunk that is not msgpack, has lists of different lengths,
timestamps that are not times, an index far past the others. Whatever it is, ``list`` names
the run folder and the reason in one line and lists the others (exit 0); ``show``, ``export``
and ``plot`` of that run exit 1 with one line; no traceback, no output file, nothing printed raw.

Hostile but readable runs (names with newlines and ANSI escapes, 5,000 characters, ``$`` for
matplotlib's mathtext, ``../`` in the stream name) are shown escaped and cut, exported to a
bounded name in the folder asked for, and plotted.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from bridge.cli.runs import runs as runs_group
from bridge.store.layout import CHUNK_MAX_BYTES, MANIFEST_MAX_BYTES
from tests.helpers.cli import run_cli
from tests.helpers.run_store import BAKE1, BAKE2, GAN17, GAN18, START, build_store, small_flow, write_run

BAD = "badbadbad" + "0" * 23
GOOD_IDS = [BAKE1[:8], GAN17[:8], GAN18[:8], BAKE2[:8]]
GIB = 1024 ** 3


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def cli(store: Path, *args: str) -> Result:
    """``chamber-bridge runs ARGS --store STORE`` in this process; a traceback fails the test."""
    result = CliRunner().invoke(runs_group, [*args, "--store", str(store)], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"runs {args} raised {result.exception!r}") from result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def clean(text: str) -> None:
    """Nothing a terminal would act on: no ESC, no other control but newlines, no traceback."""
    assert "Traceback" not in text
    assert not [c for c in text if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f], repr(text[:300])


def one_line(result: Result, code: int, prefix: str = "chamber-bridge: error: ") -> str:
    assert result.code == code, (result.stdout, result.stderr)
    clean(result.stdout)
    clean(result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith(prefix), line
    return line.removeprefix(prefix)


# ---------------------------------------------------------------- damaged runs


def manifest_of(data_id: str = BAD, **change: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "v": 1, "data_id": data_id, "stream_name": "hostile", "site": "chamber-a", "run_id": data_id,
        "started_at": START + 30_000, "stopped_at": START + 30_010, "finalized": True, "exit_status": "success",
        "channels": {}, "flows": {}, "gaps": [], "report": {"complete": True}}
    manifest.update(change)
    return manifest


def write_manifest(store: Path, text: str | bytes, data_id: str = BAD) -> Path:
    folder = store / data_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def with_manifest(text: str | bytes) -> Callable[[Path], str]:
    def make(store: Path) -> str:
        write_manifest(store, text)
        return BAD
    return make


def changed(**change: Any) -> Callable[[Path], str]:
    return with_manifest(json.dumps(manifest_of(**change)))


def symlinked_manifest(store: Path) -> str:
    """A perfectly good manifest, but outside the store: refused all the same."""
    elsewhere = store.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "manifest.json").write_text(json.dumps(manifest_of()))
    (store / BAD).mkdir()
    (store / BAD / "manifest.json").symlink_to(elsewhere / "manifest.json")
    return BAD


def symlinked_folder(store: Path) -> str:
    elsewhere = store.parent / "elsewhere" / BAD
    elsewhere.mkdir(parents=True)
    (elsewhere / "manifest.json").write_text(json.dumps(manifest_of()))
    (store / BAD).symlink_to(elsewhere)
    return BAD


def huge_manifest(store: Path) -> str:
    path = write_manifest(store, b"")
    with open(path, "wb") as handle:  # sparse: 1 GB that costs nothing on disk
        handle.truncate(GIB)
    return BAD


def fifo_manifest(store: Path) -> str:
    (store / BAD).mkdir()
    os.mkfifo(store / BAD / "manifest.json")
    return BAD


def folder_manifest(store: Path) -> str:
    (store / BAD / "manifest.json").mkdir(parents=True)
    return BAD


def hostile_folder_name(store: Path) -> str:
    name = "evil\x1b[2Jname"
    write_manifest(store, json.dumps(manifest_of(data_id=name)), data_id=name)
    return name


def no_manifest(store: Path) -> str:
    (store / BAD).mkdir()
    return BAD


def deep_json(store: Path) -> str:
    write_manifest(store, "[" * 200_000 + "]" * 200_000)
    return BAD


MANIFEST_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "not json": (with_manifest('{"v": 1, "data_id": '), "not valid JSON"),
    "not utf-8": (with_manifest(b'{"v": 1, "stream_name": "\xff\xfe"}'), "not UTF-8 text"),
    "a list": (with_manifest("[1, 2, 3]"), "not a JSON object"),
    "empty": (with_manifest(""), "not valid JSON"),
    "no stream name": (changed(stream_name=None), "stream_name should be non-empty text"),
    "no version": (changed(v=None), "manifest version None"),
    "wrong data id": (changed(data_id=GAN17), "does not match its directory"),
    "started NaN": (with_manifest(json.dumps(manifest_of(started_at=math.nan))), "started_at should be a number"),
    "started inf": (with_manifest(json.dumps(manifest_of(started_at=math.inf))), "started_at should be a number"),
    "started 1e300": (changed(started_at=1e300), "started_at should be a number of Unix seconds"),
    "started negative": (changed(started_at=-5), "started_at should be a number of Unix seconds"),
    "started 10**400": (with_manifest(json.dumps(manifest_of()).replace(
        str(START + 30_000), "1" + "0" * 400)), "started_at should be a number of Unix seconds"),
    "an int of 5000 digits": (with_manifest(json.dumps(manifest_of()).replace(
        str(START + 30_000), "9" * 5000)), "not readable JSON"),
    "stopped 1e300": (changed(stopped_at=1e300), "stopped_at should be a number of Unix seconds"),
    "finalized_at inf": (with_manifest(json.dumps(manifest_of(finalized_at=math.inf))), "finalized_at should be"),
    "tags a string": (changed(tags="GaN"), "tags should be a list of text"),
    "channels a list": (changed(channels=[1]), "channels should be an object"),
    "channel counts negative": (changed(channels={"g/p": {"points": -1}}), "channels.g/p.points should be a count"),
    "gaps not objects": (changed(gaps=[1, 2]), "gaps should be a list of objects"),
    "nested too deep": (deep_json, "not readable JSON"),
    "symlink out of the store": (symlinked_manifest, "leads outside the store"),
    "run folder a symlink out": (symlinked_folder, "leads outside the store"),
    "1 GB": (huge_manifest, f"{GIB} bytes, more than a manifest may have ({MANIFEST_MAX_BYTES})"),
    "a FIFO": (fifo_manifest, "not a regular file"),
    "a folder": (folder_manifest, "not a regular file"),
    "no manifest": (no_manifest, "no manifest.json"),
    "folder name with escapes": (hostile_folder_name, "not a run folder: data_id must be"),
}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    build_store(tmp_path / "runs")
    return tmp_path / "runs"


def listed_ids(result: Result) -> list[str]:
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_a_damaged_manifest_is_one_line_and_the_other_runs_are_listed(store: Path, tmp_path: Path,
                                                                       case: str) -> None:
    make, says = MANIFEST_CASES[case]
    folder = make(store)
    listed = cli(store, "list")
    line = one_line(listed, 0, "chamber-bridge: warning: damaged run: ")
    assert says in line
    assert f"{store}/" in line and (folder in line or "evil\\x1b[2Jname" in line)
    assert listed_ids(listed) == GOOD_IDS
    as_json = cli(store, "list", "--json")
    assert one_line(as_json, 0, "chamber-bridge: warning: damaged run: ") == line
    assert [json.loads(x)["data_id"][:8] for x in as_json.stdout.splitlines()] == GOOD_IDS
    out = tmp_path / "out"
    out.mkdir()
    for args in (("show", folder), ("show", folder, "--json"), ("export", folder, "--out", str(out / "x.csv")),
                 ("plot", folder, "--out", str(out / "x.png"))):
        assert says in one_line(cli(store, *args), 1), args
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- damaged chunks


def chunk_file(store: Path, index: int = 0, flow: str = "main_gauge") -> Path:
    return store / BAD / "chunks" / flow / f"{index:06d}.msgpack"


def run_with(store: Path, *, finalized: bool) -> None:
    write_run(store, BAD, [small_flow("main_gauge", 6, START + 30_000)], stream_name="hostile", ppc=3,
              started_at=START + 30_000, finalized=finalized)


def body(index: int = 0, **channel: Any) -> bytes:
    data = {"timestamps": [START + 30_000, START + 30_001], "values": [1.0, 2.0], "units": "mbar", **channel}
    return bytes(msgpack.packb({"data_id": BAD, "chunk_index": index, "channels": {"main_gauge/p1": data}}))


def chunk_bytes(blob: bytes) -> Callable[[Path], None]:
    def make(store: Path) -> None:
        chunk_file(store).write_bytes(blob)
    return make


def huge_chunk(store: Path) -> None:
    with open(chunk_file(store), "wb") as handle:
        handle.truncate(GIB)


def symlinked_chunk(store: Path) -> None:
    outside = store.parent / "outside.msgpack"
    outside.write_bytes(chunk_file(store).read_bytes())
    chunk_file(store).unlink()
    chunk_file(store).symlink_to(outside)


def huge_index_name(store: Path) -> None:
    (store / BAD / "chunks" / "main_gauge" / "99999999999999999999.msgpack").write_bytes(body())


def hostile_flow_folder(store: Path) -> None:
    (store / BAD / "chunks" / "evil\x1b[31m").mkdir()


def nested_msgpack(store: Path) -> None:
    blob = b"\x91" * 100_000 + b"\xc0"  # a list in a list in a list ... 100,000 deep
    chunk_file(store).write_bytes(blob)


CHUNK_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "not msgpack": (chunk_bytes(b"\xc1\xc1 definitely not msgpack"), "not a valid msgpack chunk"),
    "cut short": (chunk_bytes(body()[:-5]), "not a valid msgpack chunk"),
    "mismatched lengths": (chunk_bytes(body(values=[1.0])), "2 timestamps but 1 values"),
    "NaN timestamp": (chunk_bytes(body(timestamps=[START, math.nan])), "timestamps[1] is not a time"),
    "inf timestamp": (chunk_bytes(body(timestamps=[math.inf, START])), "timestamps[0] is not a time"),
    "1e300 timestamp": (chunk_bytes(body(timestamps=[START, 1e300])), "timestamps[1] is not a time"),
    "negative timestamp": (chunk_bytes(body(timestamps=[-1.0, START])), "timestamps[0] is not a time"),
    "negative chunk index": (chunk_bytes(body(index=-1)), "chunk_index -1 does not match the file name"),
    "huge chunk index": (chunk_bytes(body(index=2**63)), "does not match the file name"),
    "a value that is text": (chunk_bytes(body(values=[1.0, "\x1b[31m"])), "values[1] is not a number"),
    "units not text": (chunk_bytes(body(units=None)), "units should be text"),
    "not a map": (chunk_bytes(bytes(msgpack.packb([1, 2]))), "not a chunk"),
    "1 GB": (huge_chunk, f"more than a chunk may have ({CHUNK_MAX_BYTES})"),
    "symlink out of the store": (symlinked_chunk, "a symbolic link (the store holds none"),
    "file name past 9 digits": (huge_index_name, "not a chunk file name"),
    "flow folder with escapes": (hostile_flow_folder, "not a flow folder"),
    "nested too deep": (nested_msgpack, "not a valid msgpack chunk"),
}


@pytest.mark.parametrize("case", list(CHUNK_CASES))
def test_a_damaged_chunk_is_one_line_and_the_other_runs_are_listed(store: Path, tmp_path: Path, case: str) -> None:
    make, says = CHUNK_CASES[case]
    run_with(store, finalized=False)  # an open run: list reads its chunks to count its points
    make(store)
    listed = cli(store, "list")
    line = one_line(listed, 0, "chamber-bridge: warning: damaged run: ")
    assert says in line and f"{store / BAD}" in line, line
    assert listed_ids(listed) == GOOD_IDS
    shown = cli(store, "show", BAD)
    assert says in one_line(shown, 1)
    assert "stream         hostile" in shown.stdout  # what the manifest says is still shown
    out = tmp_path / "out"
    out.mkdir()
    for args in (("export", BAD, "--out", str(out / "x.csv")), ("export", BAD, "--out", "-"),
                 ("plot", BAD, "--out", str(out / "x.png"))):
        result = cli(store, *args)
        assert says in one_line(result, 1), args
    assert list(out.iterdir()) == []


def test_a_finalized_run_with_a_damaged_chunk_is_listed_from_its_manifest(store: Path) -> None:
    run_with(store, finalized=True)
    chunk_bytes(body(timestamps=[START, math.nan]))(store)
    listed = cli(store, "list")  # list trusts a finalized manifest's counts: the damage shows in show
    assert (listed.code, listed.stderr) == (0, "")
    assert listed_ids(listed)[-1] == BAD[:8]
    assert "timestamps[1] is not a time" in one_line(cli(store, "show", BAD), 1)


def test_a_lone_chunk_far_past_the_others_is_a_problem_not_a_hang(store: Path) -> None:
    """Chunk 999,999,999 alone: the missing ones are counted as ranges, never enumerated."""
    run_with(store, finalized=True)
    last = 999_999_999
    chunk_file(store, last).write_bytes(body(last))
    result = cli(store, "show", BAD)
    assert result.code == 1
    assert "  flow main_gauge: chunk files missing: 2-999999998" in result.stdout.splitlines()
    clean(result.stdout)


# ---------------------------------------------------------------- hostile but readable


ESCAPES = "evil\x1b[2J\x1b]0;pwned\x07\nforged line\r\x9b31m\u202eevil"
LONG = "N" * 5000


def hostile_run(store: Path, stream_name: str, **extra: Any) -> None:
    write_run(store, BAD, [small_flow("main_gauge", 6, START + 30_000, unit="$\\frac{m}{bar$")],
              stream_name=stream_name, ppc=3, started_at=START + 30_000, **extra)
    path = store / BAD / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["report"]["finalized_because"] = ESCAPES
    manifest["report"]["stop_reason"] = ESCAPES
    manifest["gaps"] = [{"site": ESCAPES, "epoch": ESCAPES, "from_seq": 1, "to_seq": 2, "cause": ESCAPES}]
    manifest["report"]["complete"] = False
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", [ESCAPES, LONG, "../../../etc/passwd", "$\\alpha$ $\\frac{"])
def test_hostile_names_are_printed_escaped_and_cut(store: Path, name: str) -> None:
    hostile_run(store, name, physical_sample=ESCAPES, tags=(ESCAPES, LONG), site="chamber-a")
    listed = cli(store, "list")
    assert (listed.code, listed.stderr) == (0, "")
    clean(listed.stdout)
    assert len(listed.stdout.splitlines()) == 6
    assert max(len(line) for line in listed.stdout.splitlines()) < 200
    shown = cli(store, "show", BAD)
    clean(shown.stdout)
    clean(shown.stderr)
    assert shown.code == 0, shown.stderr
    if name == ESCAPES:
        assert "\\x1b[2J" in listed.stdout and "\\x1b[2J" in shown.stdout and "\\n" in shown.stdout
    assert max(len(line) for line in shown.stdout.splitlines()) < 1100
    for args in (("list", "--json"), ("show", BAD, "--json")):
        result = cli(store, *args)
        clean(result.stdout)
        assert "\\u001b" in result.stdout  # JSON escapes, still valid JSON
    assert json.loads(cli(store, "show", BAD, "--json").stdout)["physical_sample"] == ESCAPES


@pytest.mark.parametrize("name", [ESCAPES, LONG, "../../../etc/passwd", "..", "/"])
def test_export_and_plot_names_stay_in_the_folder_and_bounded(store: Path, tmp_path: Path, name: str) -> None:
    pytest.importorskip("matplotlib")
    hostile_run(store, name)
    here = tmp_path / "here"
    here.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    previous = Path.cwd()
    os.chdir(here)
    try:
        exported = cli(store, "export", BAD)
        plotted = cli(store, "plot", BAD)
    finally:
        os.chdir(previous)
    for result in (exported, plotted):
        assert result.code == 0, result.stderr
        clean(result.stdout)
    made = sorted(p.name for p in here.iterdir())
    assert len(made) == 2 and all(p.endswith(f"-{BAD[:8]}.csv") or p.endswith(f"-{BAD[:8]}.png") for p in made)
    assert all(len(p) <= 64 + 1 + 8 + 4 for p in made)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing next to the chosen folder


def test_a_plot_of_times_spanning_millennia_is_drawn_or_one_line(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    flow = small_flow("main_gauge", 3, 0.0)
    flow.polls.append((253_402_300_000.0, {"p1": 1e300}))
    write_run(store, BAD, [flow], stream_name="millennia", ppc=3, started_at=0.0, stopped_at=253_402_300_500.0)
    result = cli(store, "plot", BAD, "--out", str(tmp_path / "x.png"))
    clean(result.stdout + result.stderr)
    assert result.code in (0, 1)
    assert len(result.stderr.splitlines()) == result.code  # drawn silently, or one line saying why not


def test_the_real_process_lists_a_store_full_of_damage(store: Path, tmp_path: Path) -> None:
    """Every damaged manifest case at once, through ``python -m bridge``: exit 0, one line each,
    the good runs listed. Each case is made in a scratch store, then its folder moved in under a
    name of its own."""
    for n, (make, _) in enumerate(MANIFEST_CASES.values()):
        scratch = tmp_path / f"scratch{n}" / "runs"
        scratch.mkdir(parents=True)
        folder = scratch / make(scratch)
        target = store / (folder.name if make is hostile_folder_name else f"{BAD[:-3]}{n:03d}")
        if folder.is_symlink():
            target.symlink_to(os.readlink(folder))
        else:
            folder.rename(target)
    result = run_cli("runs", "list", "--store", str(store), timeout=120)
    assert result.returncode == 0, result.stderr
    clean(result.stdout)
    clean(result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == len(MANIFEST_CASES)
    assert all(line.startswith("chamber-bridge: warning: damaged run: ") for line in lines)
    assert listed_ids(Result(0, result.stdout, "")) == GOOD_IDS


def test_the_real_process_never_prints_a_traceback_for_show(store: Path) -> None:
    write_manifest(store, json.dumps(manifest_of(started_at=1e300)))
    result = run_cli("runs", "show", BAD, "--store", str(store))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.endswith("started_at should be a number of Unix seconds (1970..9999), not 1e+300")

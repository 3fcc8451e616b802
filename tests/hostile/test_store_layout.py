"""The store cannot be escaped: hostile run ids, flows and chunk indexes, and symlinks planted in
the store, are refused by bridge.store.layout and by the local sink, which writes nothing anywhere.

Every test that drives the sink snapshots the whole temporary tree outside the store root before
and after, so "nothing written outside" is checked on the file system, not taken from the code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.store import layout
from bridge.store.layout import StoreLayoutError
from bridge.uploader.sinks.base import SinkRejected, StreamInfo
from bridge.uploader.sinks.local import LocalSink

RUN = "0123456789abcdef" * 2
T0 = 1_763_700_000.0
STREAM = StreamInfo(run_id=RUN, site="chamber-a", stream_name="GaN-17", physical_sample=None, synth_source_id=None,
                    project_id=None, tags=(), points_per_chunk=100, started_at=T0)

HOSTILE_NAMES = [
    "../../../x", "..", ".", "", "/etc", "/tmp/x", "a/b", "a/../../b", "x\n", "\x1b[31mred", "a" * 65, " a",
    ".hidden", "-rf", "a\x00b", "ü", None, 5, ["a"],
]


def body(index: object = 0, flow: str = "main_gauge", data_id: str = RUN) -> dict[str, Any]:
    return {"data_id": data_id, "chunk_index": index,
            "channels": {f"{flow}/p1": {"timestamps": [T0], "values": [1.0e-7], "units": "mbar"}}}


def tree(top: Path, skip: Path | None = None) -> dict[str, bytes | str]:
    """Every path under ``top`` (but under ``skip``), with its content, or where a symlink points."""
    out: dict[str, bytes | str] = {}
    for folder, dirs, names in os.walk(top):
        here = Path(folder)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        for name in dirs + names:
            path = here / name
            if skip is not None and path == skip:
                continue
            rel = str(path.relative_to(top))
            if path.is_symlink():
                out[rel] = f"-> {os.readlink(path)}"
            elif path.is_file():
                out[rel] = path.read_bytes()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "lab" / "runs"
    root.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "precious.txt").write_text("must not change")
    return root


def refused_and_nothing_outside(tmp_path: Path, store: Path, action: Callable[[], object], says: str) -> None:
    before = tree(tmp_path, skip=store)
    with pytest.raises(SinkRejected) as err:
        action()
    message = str(err.value)
    assert says in message, message
    assert "\n" not in message and "\x1b" not in message
    assert tree(tmp_path, skip=store) == before


# ---------------------------------------------------------------- the path builders


@pytest.mark.parametrize("data_id", HOSTILE_NAMES)
def test_a_data_id_that_is_not_a_name_is_refused(tmp_path: Path, data_id: object) -> None:
    for build in (layout.run_dir, layout.manifest_path, layout.chunks_dir):
        with pytest.raises(StoreLayoutError, match=r"^data_id must be"):
            build(tmp_path, data_id)
    with pytest.raises(StoreLayoutError, match=r"^data_id must be"):
        layout.chunk_path(tmp_path, data_id, "main_gauge", 0)


@pytest.mark.parametrize("flow", HOSTILE_NAMES)
def test_a_flow_that_is_not_a_name_is_refused(tmp_path: Path, flow: object) -> None:
    with pytest.raises(StoreLayoutError, match=r"^flow must be"):
        layout.chunk_path(tmp_path, RUN, flow, 0)
    with pytest.raises(StoreLayoutError, match=r"^flow must be"):
        layout.flow_dir(tmp_path, RUN, flow)


@pytest.mark.parametrize("index", [-1, layout.CHUNK_INDEX_MAX + 1, 10**30, True, False, "1", 1.0, None, [0]])
def test_a_chunk_index_out_of_range_or_not_an_int_is_refused(tmp_path: Path, index: object) -> None:
    with pytest.raises(StoreLayoutError, match=r"^chunk_index must be an integer 0\.\.999999999"):
        layout.chunk_path(tmp_path, RUN, "main_gauge", index)


def test_valid_components_make_the_contract_paths(tmp_path: Path) -> None:
    uuid = "5b0a6f3e-1d2c-4e5f-8a9b-0c1d2e3f4a5b"  # an id the Atomscale API might hand out
    assert layout.run_dir(tmp_path, RUN) == tmp_path / RUN
    assert layout.manifest_path(tmp_path, uuid) == tmp_path / uuid / "manifest.json"
    assert layout.chunk_path(tmp_path, RUN, "main_gauge", 7) == (
        tmp_path / RUN / "chunks" / "main_gauge" / "000007.msgpack")
    assert layout.chunk_path(tmp_path, RUN, "g", layout.CHUNK_INDEX_MAX).name == "999999999.msgpack"
    assert layout.chunk_index_of("000012.msgpack") == 12
    assert layout.chunk_index_of("1234567.msgpack") == 1_234_567
    assert layout.chunk_index_of(".000012.msgpack.tmp") is None
    with pytest.raises(StoreLayoutError, match="not a chunk file name"):
        layout.chunk_index_of("99999999999999999999.msgpack")


@pytest.mark.parametrize("where", ["run", "chunks", "flow", "manifest", "chunk"])
def test_a_symlink_out_of_the_store_is_refused_by_the_builders(store: Path, tmp_path: Path, where: str) -> None:
    outside = tmp_path / "outside"
    links = {"run": store / RUN, "chunks": store / RUN / "chunks", "flow": store / RUN / "chunks" / "g",
             "manifest": store / RUN / "manifest.json", "chunk": store / RUN / "chunks" / "g" / "000000.msgpack"}
    link = links[where]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / "precious.txt" if where in ("manifest", "chunk") else outside)
    build = layout.manifest_path if where in ("run", "manifest") else None
    with pytest.raises(StoreLayoutError, match="leads outside the store"):
        if build is not None:
            build(store, RUN)
        else:
            layout.chunk_path(store, RUN, "g", 0)


def test_symlinks_that_stay_in_the_store_and_a_store_that_is_a_symlink_are_fine(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "runs"
    (real / RUN / "chunks").mkdir(parents=True)
    (tmp_path / "runs").symlink_to(real)  # /srv/runs -> /mnt/disk/runs is a normal setup
    assert layout.chunk_path(tmp_path / "runs", RUN, "g", 0) == (
        tmp_path / "runs" / RUN / "chunks" / "g" / "000000.msgpack")
    (real / "alias").symlink_to(real / RUN)
    assert layout.manifest_path(tmp_path / "runs", "alias") == tmp_path / "runs" / "alias" / "manifest.json"


def test_a_symlink_loop_is_refused_not_a_crash(store: Path) -> None:
    (store / RUN).symlink_to(store / RUN)
    with pytest.raises(StoreLayoutError):
        layout.manifest_path(store, RUN)


# ---------------------------------------------------------------- the local sink


@pytest.mark.parametrize("run_id", ["../../../x", "/tmp/x", "..", "a/b", "x\n\x1b[2J", "a" * 300])
def test_the_sink_refuses_a_hostile_run_id_and_writes_nothing(store: Path, tmp_path: Path, run_id: str) -> None:
    sink = LocalSink(store)
    refused_and_nothing_outside(tmp_path, store, lambda: sink.initialize(replace(STREAM, run_id=run_id)),
                                "refused: data_id must be")
    refused_and_nothing_outside(tmp_path, store, lambda: sink.push_chunk(run_id, "g", body(0, "g", run_id)),
                                "refused: data_id must be")
    refused_and_nothing_outside(tmp_path, store, lambda: sink.finalize(run_id, {"v": 1}), "refused: data_id must be")
    assert list(store.iterdir()) == []


@pytest.mark.parametrize("flow", ["../../..", "../../../outside", "/tmp", "..", "a/b", "\x1b[31m"])
def test_the_sink_refuses_a_hostile_flow(store: Path, tmp_path: Path, flow: str) -> None:
    sink = LocalSink(store)
    sink.initialize(STREAM)
    before = tree(store)
    refused_and_nothing_outside(tmp_path, store, lambda: sink.push_chunk(RUN, flow, body(0, flow)),
                                "refused: flow must be")
    assert tree(store) == before


@pytest.mark.parametrize("index", [-1, 10**12, "0", None, 2.0, True])
def test_the_sink_refuses_a_hostile_chunk_index(store: Path, tmp_path: Path, index: object) -> None:
    sink = LocalSink(store)
    sink.initialize(STREAM)
    before = tree(store)
    refused_and_nothing_outside(tmp_path, store, lambda: sink.push_chunk(RUN, "g", body(index, "g")),
                                "refused: chunk_index must be")
    assert tree(store) == before


def test_the_sink_refuses_a_body_without_a_chunk_index(store: Path, tmp_path: Path) -> None:
    sink = LocalSink(store)
    sink.initialize(STREAM)
    chunk = body(0)
    del chunk["chunk_index"]
    refused_and_nothing_outside(tmp_path, store, lambda: sink.push_chunk(RUN, "g", chunk), "chunk_index must be")


@pytest.mark.parametrize("where", ["run", "chunks", "flow", "manifest", "chunk", "temporary"])
def test_the_sink_refuses_to_write_through_a_planted_symlink(store: Path, tmp_path: Path, where: str) -> None:
    """Someone made a folder or file of the store a symlink to elsewhere: the sink writes nothing there."""
    outside = tmp_path / "outside"
    sink = LocalSink(store)
    if where not in ("run",):
        sink.initialize(STREAM)
        sink.push_chunk(RUN, "g", body(0, "g"))
    target = {"run": store / RUN, "chunks": store / RUN / "chunks", "flow": store / RUN / "chunks" / "g",
              "manifest": store / RUN / "manifest.json", "chunk": store / RUN / "chunks" / "g" / "000001.msgpack",
              "temporary": store / RUN / "chunks" / "g" / ".000001.msgpack.tmp"}[where]
    if target.is_dir():
        target.rename(target.with_name(target.name + ".moved"))
    elif target.exists():
        target.unlink()
    target.symlink_to(outside / "precious.txt" if where in ("manifest", "chunk", "temporary") else outside)
    fresh = LocalSink(store)  # no folder cached: every check is made again
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: sink.push_chunk(RUN, "g", body(1, "g")), "outside the store" if where != "temporary" else "symbolic"),
        (lambda: fresh.push_chunk(RUN, "g", body(1, "g")), "outside the store" if where != "temporary" else "symbolic"),
    ]
    if where in ("run", "manifest"):
        calls = [(lambda: fresh.initialize(STREAM), "outside the store"),
                 (lambda: fresh.finalize(RUN, {"v": 1}), "outside the store")]
    for call, says in calls:
        refused_and_nothing_outside(tmp_path, store, call, says)
    assert (outside / "precious.txt").read_text() == "must not change"
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]

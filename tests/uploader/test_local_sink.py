"""The local store on real files: the contract layout (docs/design.md section 5), atomic writes, repeats, failures."""

from __future__ import annotations

import json
import os
import pickle
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from bridge.uploader.sinks.base import SinkError, SinkRejected, StreamInfo
from bridge.uploader.sinks.local import LocalSink, write_atomically
from bridge.wire.contract import pack

RUN = "0123456789abcdef" * 2
T0 = 1_763_700_000.0
STREAM = StreamInfo(run_id=RUN, site="chamber-a", stream_name="GaN-17", physical_sample="S-1", synth_source_id="3",
                    project_id=None, tags=("GaN", "MBE"), points_per_chunk=100, started_at=T0)
NOBODY = 65534


def body(index: int, flow: str = "main_gauge") -> dict[str, Any]:
    return {"data_id": RUN, "chunk_index": index, "channels": {
        f"{flow}/p1": {"timestamps": [T0 + index, T0 + index + 1.5], "values": [1.25e-7, 1.5e-7], "units": "mbar"},
        f"{flow}/p2": {"timestamps": [T0 + index + 1.5], "values": [2.0e-3], "units": "mbar"},
    }}


def final_manifest() -> dict[str, Any]:
    return {"v": 1, "data_id": RUN, "stream_name": "GaN-17", "site": "chamber-a", "run_id": RUN,
            "physical_sample": "S-1", "synth_source_id": "3", "project_id": None, "tags": ["GaN", "MBE"],
            "points_per_chunk": 100, "started_at": T0, "stopped_at": T0 + 3600, "exit_status": "success",
            "finalized": True, "finalized_at": T0 + 3601.5,
            "channels": {"main_gauge/p1": {"flow": "main_gauge", "units": "mbar", "points": 2, "bad_quality": 0,
                                           "chunks": 1}},
            "flows": {"main_gauge": {"points": 2, "chunks": 1}}, "gaps": [],
            "report": {"complete": True, "finalized_because": "complete", "readings": 2, "bad_quality": 0,
                       "chunks": 1, "retries": 0, "clock": {"ntp_synchronized": None}}}


def files(root: Path) -> list[str]:
    """Every file and folder under ``root``, relative, hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def manifest_of(root: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((root / RUN / "manifest.json").read_text(encoding="utf-8"))
    return document


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def sink(store: Path) -> Iterator[LocalSink]:
    sink = LocalSink(store)
    try:
        yield sink
    finally:
        sink.close()


# ---------------------------------------------------------------- initialize


def test_initialize_creates_the_run_folder_and_an_unfinalized_manifest(sink: LocalSink, store: Path) -> None:
    assert sink.kind == "local"
    assert sink.initialize(STREAM) == RUN  # data_id is the run id
    assert files(store) == [RUN, f"{RUN}/chunks", f"{RUN}/manifest.json"]
    assert manifest_of(store) == {
        "v": 2, "data_id": RUN, "stream_name": "GaN-17", "site": "chamber-a", "run_id": RUN, "physical_sample": "S-1",
        "synth_source_id": "3", "project_id": None, "tags": ["GaN", "MBE"], "points_per_chunk": 100,
        "started_at": T0, "stopped_at": None, "exit_status": None, "finalized": False, "finalized_at": None,
        "channels": {}, "flows": {}, "gaps": []}


def test_initialize_is_idempotent_and_never_overwrites_a_finalized_manifest(sink: LocalSink, store: Path) -> None:
    sink.initialize(STREAM)
    first = (store / RUN / "manifest.json").read_bytes()
    assert sink.initialize(STREAM) == RUN
    assert (store / RUN / "manifest.json").read_bytes() == first
    sink.push_chunk(RUN, "main_gauge", body(0))
    sink.finalize(RUN, final_manifest())
    # a crash after the sink finalized but before the ledger recorded the stream: initialize comes again
    assert LocalSink(store).initialize(STREAM) == RUN
    assert manifest_of(store) == final_manifest()
    assert (store / RUN / "chunks" / "main_gauge" / "000000.msgpack").read_bytes() == pack(body(0))


# ---------------------------------------------------------------- chunks


def test_push_chunk_writes_the_push_multi_body_as_msgpack_at_the_contract_path(sink: LocalSink, store: Path) -> None:
    sink.initialize(STREAM)
    for index in (0, 1, 12):
        sink.push_chunk(RUN, "main_gauge", body(index))
    sink.push_chunk(RUN, "pyro", body(0, "pyro"))
    folder = store / RUN / "chunks"
    assert files(folder) == ["main_gauge", "main_gauge/000000.msgpack", "main_gauge/000001.msgpack",
                             "main_gauge/000012.msgpack", "pyro", "pyro/000000.msgpack"]
    for flow, index in (("main_gauge", 0), ("main_gauge", 1), ("main_gauge", 12), ("pyro", 0)):
        data = (folder / flow / f"{index:06d}.msgpack").read_bytes()
        assert msgpack.unpackb(data, raw=False) == body(index, flow)
        assert data == pack(body(index, flow))


def test_a_chunk_index_past_six_digits_still_sorts_by_name(sink: LocalSink, store: Path) -> None:
    sink.initialize(STREAM)
    sink.push_chunk(RUN, "main_gauge", body(1_234_567))
    assert files(store / RUN / "chunks" / "main_gauge") == ["1234567.msgpack"]


def test_pushing_a_chunk_again_is_harmless(sink: LocalSink, store: Path) -> None:
    """Crash recovery resends the first unconfirmed chunk, byte-identical."""
    sink.initialize(STREAM)
    sink.push_chunk(RUN, "main_gauge", body(3))
    before = files(store)
    sink.push_chunk(RUN, "main_gauge", body(3))
    LocalSink(store).push_chunk(RUN, "main_gauge", body(3))  # and from a restarted uploader
    assert files(store) == before
    assert (store / RUN / "chunks" / "main_gauge" / "000003.msgpack").read_bytes() == pack(body(3))


def test_finalize_rewrites_the_manifest_and_may_be_repeated(sink: LocalSink, store: Path) -> None:
    sink.initialize(STREAM)
    sink.push_chunk(RUN, "main_gauge", body(0))
    sink.finalize(RUN, final_manifest())
    assert manifest_of(store) == final_manifest()
    text = (store / RUN / "manifest.json").read_bytes()
    assert text.endswith(b"\n") and text.decode("utf-8")
    sink.finalize(RUN, final_manifest())
    assert (store / RUN / "manifest.json").read_bytes() == text


def test_no_temporary_file_is_left_behind(sink: LocalSink, store: Path) -> None:
    sink.initialize(STREAM)
    for index in range(5):
        sink.push_chunk(RUN, "main_gauge", body(index))
        sink.push_chunk(RUN, "main_gauge", body(index))
    sink.finalize(RUN, final_manifest())
    names = files(store)
    assert not [n for n in names if Path(n).name.startswith(".") or n.endswith(".tmp")]
    assert len(names) == 3 + 1 + 5


def test_write_atomically_replaces_the_file_and_a_stale_temporary_one(tmp_path: Path) -> None:
    """A crash mid-write leaves ``.NAME.tmp``; the next write overwrites and renames it."""
    target = tmp_path / "manifest.json"
    (tmp_path / ".manifest.json.tmp").write_bytes(b"half a manifest from before the crash, longer than the new one")
    write_atomically(target, b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert files(tmp_path) == ["manifest.json"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o644 == 0o644


# ---------------------------------------------------------------- failures


def as_unprivileged(cwd: Path, action: Callable[[], object]) -> None:
    """Run ``action`` in ``cwd`` where permission bits apply, and raise whatever it raised.

    Root ignores permission bits, so as root the action runs in a forked child that changes to
    ``cwd`` and drops to the user ``nobody`` (paths in ``action`` are relative to ``cwd``, which
    nobody could not reach through the test's private temporary folders).
    """
    if os.geteuid() != 0:
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            action()
        finally:
            os.chdir(previous)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                action()
                outcome: BaseException | None = None
            except BaseException as exc:
                outcome = exc
            os.write(write_end, pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the unprivileged child failed"
    raised = pickle.loads(data)
    if raised is not None:
        raise raised


def make_read_only(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


@pytest.fixture
def reachable(store: Path) -> Path:
    """The store's parent, which an unprivileged child may search (it starts there: see as_unprivileged)."""
    store.mkdir()
    os.chmod(store.parent, 0o711)
    return store.parent


def test_a_read_only_store_is_rejected(store: Path, reachable: Path) -> None:
    """A store nobody may write to needs a person: SinkRejected raises the alarm, the data stays in the spool."""
    LocalSink(store).initialize(STREAM)
    make_read_only(store)
    relative = LocalSink(Path(store.name))
    with pytest.raises(SinkRejected, match="local store runs: initialize"):
        as_unprivileged(reachable, lambda: relative.initialize(replace(STREAM, run_id="f" * 32)))
    with pytest.raises(SinkRejected, match="chunk 0 of main_gauge"):
        as_unprivileged(reachable, lambda: relative.push_chunk(RUN, "main_gauge", body(0)))
    with pytest.raises(SinkRejected, match="finalize"):
        as_unprivileged(reachable, lambda: relative.finalize(RUN, final_manifest()))
    assert manifest_of(store)["finalized"] is False
    assert files(store) == [RUN, f"{RUN}/chunks", f"{RUN}/manifest.json"]


def test_a_store_the_uploader_may_not_even_look_into_is_rejected(store: Path, reachable: Path) -> None:
    """Checking for an existing manifest is part of initialize: its PermissionError is a SinkRejected too."""
    os.chmod(store, 0o600)  # no search permission: even stat() of a path inside fails
    relative = LocalSink(Path(store.name))
    with pytest.raises(SinkRejected, match="local store runs: initialize"):
        as_unprivileged(reachable, lambda: relative.initialize(STREAM))


@pytest.mark.parametrize("call", ["initialize", "push_chunk", "finalize"])
def test_a_store_path_that_is_a_file_is_a_sink_error(store: Path, call: str) -> None:
    store.write_text("not a folder")
    sink = LocalSink(store)
    with pytest.raises(SinkError, match=f"local store {store}"):
        if call == "initialize":
            sink.initialize(STREAM)
        elif call == "push_chunk":
            sink.push_chunk(RUN, "main_gauge", body(0))
        else:
            sink.finalize(RUN, final_manifest())
    assert store.read_text() == "not a folder"

"""The wire contract (docs/design.md section 5): for the same inputs, AtomscaleSink sends what the SDK sends.

The official SDK (``atomscale`` 0.21.10, ``TimeseriesStreamer``) and the project's sink each
stream the same three runs to their own Atomscale emulator (a separate process: the SDK holds
the GIL while it waits for answers): a run that creates its sample and tags and has an instrument
and a project, one that finds them again under other spellings, and a bare one. The emulators'
request logs are then compared per run and phase:

- the clock: both first ask ``GET /gateway/time`` without a key (neither does with
  ``ATOMSCALE_SKIP_CLOCK_SYNC``);
- resolving the sample and tags, then the initialize, then linking: the SDK runs the sample and
  tag branches concurrently, so the comparison is per branch (same requests in the same order)
  and the phase holds the same requests overall;
- chunks: the SDK's pushes are fire-and-forget and concurrent, so the test waits for them and
  compares them as a set;
- finalize.

Requests are compared by method, path (with the data_id in it normalised), JSON body keys in
order, ``X-API-KEY`` present and JSON content type, and the bodies themselves where both sides
are deterministic; the streams the two servers end up holding must match too.
"""

from __future__ import annotations

import functools
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.uploader.sinks.atomscale import SKIP_CLOCK_SYNC_ENV, AtomscaleSink
from bridge.uploader.sinks.base import StreamInfo
from tests.helpers.atomscale import RemoteEmulator, chunk_channels, emulator_process, load_sdk, sink_config
from tests.helpers.polling import wait_until

KEY = "contract-key"
POINTS_PER_CHUNK = 3

#: the SDK's initialize() arguments, one run each
RUNS: list[dict[str, Any]] = [
    {"stream_name": "GaN-17", "synth_source_id": 3, "physical_sample": "S-1", "project_id": "proj-1",
     "tags": ["GaN", "growth", " gan "]},
    {"stream_name": "GaN-18", "synth_source_id": None, "physical_sample": " s-1 ", "project_id": None,
     "tags": ["GROWTH", "new-tag", ""]},
    {"stream_name": "bare", "synth_source_id": None, "physical_sample": None, "project_id": None, "tags": None},
]
CHUNKS = [chunk_channels(0), chunk_channels(1), chunk_channels(2, points=2)]

Log = list[dict[str, Any]]


@pytest.fixture(params=["clock_sync", "skip_clock_sync"])
def clock_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both clients read ``ATOMSCALE_SKIP_CLOCK_SYNC`` (the SDK when its streamer is created)."""
    if request.param == "skip_clock_sync":
        monkeypatch.setenv(SKIP_CLOCK_SYNC_ENV, "1")
    else:
        monkeypatch.delenv(SKIP_CLOCK_SYNC_ENV, raising=False)
    yield str(request.param)


def _answered_chunks(emulator: RemoteEmulator, data_id: str) -> int:
    return sum(1 for r in emulator.control.requests()
               if r["path"] == "/tool-state/stream/chunk/multi" and r["status"] == 200
               and isinstance(r["body"], dict) and r["body"].get("data_id") == data_id)


def _all_chunks_answered(emulator: RemoteEmulator, data_id: str) -> bool:
    return _answered_chunks(emulator, data_id) == len(CHUNKS)


def drive_sdk(emulator: RemoteEmulator) -> None:
    sdk = load_sdk()
    streamer = sdk.TimeseriesStreamer(api_key=KEY, endpoint=emulator.url, points_per_chunk=POINTS_PER_CHUNK)
    for run in RUNS:
        data_id = streamer.initialize(**run)
        for index, channels in enumerate(CHUNKS):
            streamer.push_multi(data_id, index, channels)
        # push_multi is fire-and-forget: finalize only once the server has every chunk
        all_arrived = functools.partial(_all_chunks_answered, emulator, data_id)
        assert wait_until(all_arrived, timeout=20), "the SDK's chunks did not all arrive"
        streamer.finalize(data_id)


def drive_sink(emulator: RemoteEmulator, tmp_path: Path) -> None:
    key_file = tmp_path / "atomscale.key"
    key_file.write_text(KEY + "\n")
    sink = AtomscaleSink(sink_config(emulator.url, key_file), timeout=5.0, call_budget=5.0)
    try:
        for n, run in enumerate(RUNS):
            synth = run["synth_source_id"]
            stream = StreamInfo(
                run_id=f"{n:032x}", site="chamber-a", stream_name=run["stream_name"],
                physical_sample=run["physical_sample"], synth_source_id=None if synth is None else str(synth),
                project_id=run["project_id"], tags=tuple(run["tags"] or ()), points_per_chunk=POINTS_PER_CHUNK,
                started_at=1763700000.0)
            data_id = sink.initialize(stream)
            for index, channels in enumerate(CHUNKS):
                sink.push_chunk(data_id, "main_gauge", {"data_id": data_id, "chunk_index": index, "channels": channels})
            sink.finalize(data_id, {})
    finally:
        sink.close()


# ---------------------------------------------------------------- comparing logs

def _branch(path: str) -> str:
    """Which concurrent branch of the SDK a request belongs to."""
    if path == "/physical_samples/":
        return "sample"
    if path == "/tags/":
        return "tags"
    if path == "/data_entries/physical_sample" or path.startswith("/projects/"):
        return "link sample"
    if path == "/tags/data-items/":
        return "link tags"
    return path


def _signature(record: dict[str, Any], data_ids: set[str]) -> tuple[Any, ...]:
    path = record["path"]
    for data_id in data_ids:
        path = path.replace(data_id, "<data_id>")
    keys = tuple(record["body_keys"]) if record["body_keys"] is not None else None
    json_body = record["headers"].get("content-type") == "application/json" if keys is not None else None
    return record["method"], path, keys, record["api_key_present"], json_body


def _runs(log: Log) -> list[dict[str, Log]]:
    """The log cut into runs (each ends with its finalize), each run cut into phases."""
    runs: list[dict[str, Log]] = []
    phase: dict[str, Log] = {"resolve": [], "initialize": [], "link": [], "chunks": [], "finalize": []}
    for record in log:
        path = record["path"]
        if path == "/tool-state/stream/initialize":
            phase["initialize"].append(record)
        elif path == "/tool-state/stream/chunk/multi":
            phase["chunks"].append(record)
        elif path.endswith("/finalize"):
            phase["finalize"].append(record)
            runs.append(phase)
            phase = {"resolve": [], "initialize": [], "link": [], "chunks": [], "finalize": []}
        elif phase["initialize"]:
            phase["link"].append(record)
        else:
            phase["resolve"].append(record)
    assert not any(phase.values()), f"requests after the last finalize: {phase}"
    return runs


def _by_branch(records: Log, data_ids: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    branches: dict[str, list[tuple[Any, ...]]] = {}
    for record in records:
        branches.setdefault(_branch(record["path"]), []).append(_signature(record, data_ids))
    return branches


def _names(records: Log) -> dict[str, list[Any]]:
    """The bodies of create requests (the names), per branch, in order."""
    names: dict[str, list[Any]] = {}
    for record in records:
        if record["method"] == "POST":
            names.setdefault(_branch(record["path"]), []).append(record["body"])
    return names


def _split_clock(log: Log) -> tuple[Log, Log]:
    clock = [r for r in log if r["path"] == "/gateway/time"]
    return clock, [r for r in log if r["path"] != "/gateway/time"]


def _streams(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Each stream as the server holds it, its ids replaced by what they name."""
    samples = {s["id"]: s["name"] for s in state["physical_samples"]}
    tags = {t["id"]: t["name"] for t in state["tags"]}
    return [{
        "stream_name": s["stream_name"], "synth_source_id": s["synth_source_id"],
        "points_per_chunk": s["points_per_chunk"], "project_id": s["project_id"],
        "finalized": s["finalized"], "finalize_calls": s["finalize_calls"],
        "chunks_after_finalize": s["chunks_after_finalize"],
        "physical_sample": samples.get(s["physical_sample_id"]), "tags": [tags[t] for t in s["tag_ids"]],
    } for s in sorted(state["streams"], key=lambda s: s["created_at"])]


def _chunk_bodies(records: Log) -> dict[int, dict[str, Any]]:
    return {r["body"]["chunk_index"]: r["body"]["channels"] for r in records}


def test_sink_sends_what_the_sdk_sends(clock_mode: str, tmp_path: Path) -> None:
    with emulator_process(KEY) as sdk_server, emulator_process(KEY) as sink_server:
        drive_sdk(sdk_server)
        drive_sink(sink_server, tmp_path)
        sdk_log, sink_log = sdk_server.control.requests(), sink_server.control.requests()
        sdk_state, sink_state = sdk_server.control.state(), sink_server.control.state()

    # every request (but the clock's) carries the key; every answer was a success
    for log in (sdk_log, sink_log):
        assert all(r["api_key_present"] == (r["path"] != "/gateway/time") for r in log)
        assert all(r["status"] is not None and 200 <= r["status"] < 300 for r in log), log

    sdk_clock, sdk_rest = _split_clock(sdk_log)
    sink_clock, sink_rest = _split_clock(sink_log)
    if clock_mode == "skip_clock_sync":
        assert sdk_clock == [] and sink_clock == []
    else:
        # the SDK measures once before its first initialize, then samples in the background
        for log in (sdk_log, sink_log):
            first = log[0]
            assert (first["method"], first["path"], first["api_key_present"]) == ("GET", "/gateway/time", False)
            assert first["headers"].get("cache-control") == "no-store"
        assert len(sink_clock) == 1

    data_ids = {s["data_id"] for s in sdk_state["streams"]} | {s["data_id"] for s in sink_state["streams"]}
    sdk_runs, sink_runs = _runs(sdk_rest), _runs(sink_rest)
    assert len(sdk_runs) == len(sink_runs) == len(RUNS)
    for n, (sdk_run, sink_run) in enumerate(zip(sdk_runs, sink_runs, strict=True)):
        where = f"run {n} ({RUNS[n]['stream_name']})"
        for phase in ("resolve", "link"):
            assert _by_branch(sink_run[phase], data_ids) == _by_branch(sdk_run[phase], data_ids), f"{where}: {phase}"
        assert _names(sink_run["resolve"]) == _names(sdk_run["resolve"]), f"{where}: created names"
        for phase in ("initialize", "finalize"):
            assert [_signature(r, data_ids) for r in sink_run[phase]] == \
                   [_signature(r, data_ids) for r in sdk_run[phase]], f"{where}: {phase}"
        # the initialize body itself, JSON types included (synth_source_id is an integer)
        sdk_init, sink_init = sdk_run["initialize"][0]["body"], sink_run["initialize"][0]["body"]
        assert sink_init == sdk_init, where
        assert [type(v) for v in sink_init.values()] == [type(v) for v in sdk_init.values()], where
        for phase in ("link",):
            sdk_tracking = [r["body"] for r in sdk_run[phase] if r["path"].startswith("/projects/")]
            sink_tracking = [r["body"] for r in sink_run[phase] if r["path"].startswith("/projects/")]
            assert [b["set_active"] for b in sink_tracking] == [b["set_active"] for b in sdk_tracking] \
                   == ([True] if RUNS[n]["project_id"] else [])
        # chunks: the same requests, as a set (the SDK sends them concurrently)
        assert Counter((_signature(r, data_ids), r["body"]["chunk_index"]) for r in sink_run["chunks"]) == \
               Counter((_signature(r, data_ids), r["body"]["chunk_index"]) for r in sdk_run["chunks"]), where
        sink_chunks, sdk_chunks = _chunk_bodies(sink_run["chunks"]), _chunk_bodies(sdk_run["chunks"])
        assert sink_chunks == dict(enumerate(CHUNKS)), "the sink sends the bridge's chunk unchanged"
        for index, channels in sdk_chunks.items():
            assert channels.keys() == CHUNKS[index].keys()
            for name, channel in channels.items():
                expected = CHUNKS[index][name]
                assert channel["values"] == expected["values"] and channel.get("units") == expected["units"]
                if clock_mode == "skip_clock_sync":
                    assert channel["timestamps"] == expected["timestamps"]
                else:
                    # the SDK shifts host timestamps by its measured offset (about 0 here: one machine)
                    assert channel["timestamps"] == pytest.approx(expected["timestamps"], abs=1.0)

    assert _streams(sink_state) == _streams(sdk_state)
    assert sorted(s["name"] for s in sink_state["physical_samples"]) == \
           sorted(s["name"] for s in sdk_state["physical_samples"]) == ["S-1"]
    assert sorted(t["name"] for t in sink_state["tags"]) == sorted(t["name"] for t in sdk_state["tags"]) \
           == ["GaN", "growth", "new-tag"]
    assert sink_state["duplicates_stored"] == sdk_state["duplicates_stored"] == 0


def test_sdk_is_installed_at_the_pinned_version() -> None:
    """Not skippable: without the SDK the contract cannot be checked, so the suite fails."""
    module = load_sdk()
    assert hasattr(module, "TimeseriesStreamer")
    assert "atomscale" not in sys.modules, "the heavy atomscale package itself must not be imported"

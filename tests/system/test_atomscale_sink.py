"""AtomscaleSink against the Atomscale emulator over real HTTP: a run end to end, then every fault.

The emulator runs in this process (the sink's httpx calls release the GIL). Its request log is
the evidence: which requests were made, what each was answered, and when, so "Retry-After was
honoured" is asserted as a protocol property (the next request came no earlier than the server
asked), never as a duration of the test. The sink is tuned to retry within tenths of seconds.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.uploader.sinks.atomscale import SKIP_CLOCK_SYNC_ENV, AtomscaleSink
from bridge.uploader.sinks.base import SinkError, SinkRejected, SinkUnavailable
from simulators.services.atomscale import AtomscaleEmulator, RemoteControl, RequestRecord
from tests.helpers.atomscale import chunk_body, chunk_channels, sink_config, stream_info
from tests.helpers.polling import wait_until

KEY = "sk-test-0123456789abcdef"
ROTATED = "sk-test-fedcba9876543210"
CHUNK_PATH = "/tool-state/stream/chunk/multi"
FAST = {"timeout": 0.5, "connect_timeout": 0.5, "call_budget": 3.0, "backoff_initial": 0.02, "backoff_cap": 0.2,
        "backoff_floor": 0.01}


@pytest.fixture
def emulator() -> Iterator[AtomscaleEmulator]:
    with AtomscaleEmulator([KEY], seed=1) as emulator:
        yield emulator


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "atomscale.key"
    path.write_text(KEY + "\n")
    return path


def make_sink(emulator: AtomscaleEmulator, key_file: Path, **tunables: Any) -> AtomscaleSink:
    return AtomscaleSink(sink_config(emulator.url, key_file), rng=random.Random(7), **{**FAST, **tunables})


@pytest.fixture
def sink(emulator: AtomscaleEmulator, key_file: Path) -> Iterator[AtomscaleSink]:
    sink = make_sink(emulator, key_file)
    yield sink
    sink.close()


@pytest.fixture
def data_id(sink: AtomscaleSink, emulator: AtomscaleEmulator) -> str:
    data_id = sink.initialize(stream_info())
    emulator.clear_requests()
    return data_id


def chunk_requests(emulator: AtomscaleEmulator) -> list[RequestRecord]:
    return emulator.requests(CHUNK_PATH)


def statuses(records: list[RequestRecord]) -> list[int | None]:
    return [r.status for r in records]


def assert_stored_once(emulator: AtomscaleEmulator, data_id: str, chunks: list[int]) -> None:
    """Every point of ``chunks`` is stored exactly once, in order."""
    for channel in ("main_gauge/p1", "main_gauge/p2"):
        expected_t = [t for i in chunks for t in chunk_channels(i)[channel]["timestamps"]]
        expected_v = [v for i in chunks for v in chunk_channels(i)[channel]["values"]]
        assert emulator.points(data_id, channel) == (expected_t, expected_v)
    assert emulator.duplicates_stored() == 0
    assert emulator.conflicts == 0


# ---------------------------------------------------------------- a run

def test_a_run_is_initialized_streamed_and_finalized(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SKIP_CLOCK_SYNC_ENV, raising=False)
    data_id = sink.initialize(stream_info())
    assert [(r.method, r.path, r.api_key_present) for r in emulator.requests()] == [
        ("GET", "/gateway/time", False),
        ("GET", "/physical_samples/", True),
        ("POST", "/physical_samples/", True),
        ("GET", "/tags/", True),
        ("POST", "/tags/", True),
        ("POST", "/tags/", True),
        ("POST", "/tool-state/stream/initialize", True),
        ("POST", "/data_entries/physical_sample", True),
        ("POST", "/projects/proj-1/configuration/tracking_samples", True),
        ("POST", "/tags/data-items/", True),
    ]
    assert sink.clock is not None and math.isfinite(sink.clock.offset_ms)
    for index in range(3):
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, index))
    sink.finalize(data_id, {"data_id": data_id})

    stream = emulator.stream(data_id)
    assert (stream.stream_name, stream.synth_source_id, stream.points_per_chunk, stream.project_id) == \
           ("GaN-17", 3, 3, "proj-1")
    assert stream.finalized and stream.finalize_calls == 1 and stream.chunks_after_finalize == 0
    assert [emulator.tags()[t] for t in stream.tag_ids] == ["GaN", "growth"]
    assert stream.physical_sample_id is not None
    assert emulator.physical_samples()[stream.physical_sample_id] == "S-1"
    tracking = emulator.tracking("proj-1")
    assert tracking is not None and tracking.active_tracking_physical_sample_id == stream.physical_sample_id
    assert_stored_once(emulator, data_id, [0, 1, 2])
    assert emulator.units(data_id, "main_gauge/p1") == {"mbar"}
    assert sink.retries == 0


def test_initialize_is_safe_to_repeat_and_finds_existing_names(emulator: AtomscaleEmulator,
                                                              sink: AtomscaleSink) -> None:
    first = sink.initialize(stream_info())
    before = len(emulator.requests())
    assert sink.initialize(stream_info()) == first, "the same run is the same stream"
    assert len(emulator.requests()) == before

    second = sink.initialize(stream_info("1" * 32, stream_name="GaN-18", physical_sample=" s-1 ",
                                         tags=("GAN", " growth", "")))
    assert second != first
    created = [r.path for r in emulator.requests()[before:] if r.method == "POST" and r.path in
               ("/physical_samples/", "/tags/")]
    assert created == [], "names are matched case-insensitively, not created again"
    assert emulator.stream(second).tag_ids == emulator.stream(first).tag_ids
    assert emulator.stream(second).physical_sample_id == emulator.stream(first).physical_sample_id


def test_a_link_that_fails_for_now_is_finished_by_the_next_initialize(emulator: AtomscaleEmulator,
                                                                     key_file: Path) -> None:
    sink = make_sink(emulator, key_file, call_budget=0.3)
    try:
        emulator.add_fault("http_5xx", path_prefix="/tags/data-items/")
        with pytest.raises(SinkUnavailable):
            sink.initialize(stream_info())
        emulator.clear_faults()
        data_id = sink.initialize(stream_info())
    finally:
        sink.close()
    assert [s.data_id for s in emulator.streams()] == [data_id], "no second stream"
    assert len(emulator.stream(data_id).tag_ids) == 2
    assert len(emulator.requests("/tool-state/stream/initialize")) == 1


def test_a_rejected_link_ends_the_stream_as_the_sdk_does(emulator: AtomscaleEmulator, sink: AtomscaleSink) -> None:
    emulator.add_fault("unauthorized", count=1, path_prefix="/tags/data-items/")
    with pytest.raises(SinkRejected, match="could not be linked, so it was ended") as caught:
        sink.initialize(stream_info())
    assert caught.value.status == 401
    [ended] = emulator.streams()
    assert ended.finalized and not ended.tag_ids
    data_id = sink.initialize(stream_info())
    assert data_id != ended.data_id and len(emulator.stream(data_id).tag_ids) == 2


# ---------------------------------------------------------------- faults

@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried(emulator: AtomscaleEmulator, sink: AtomscaleSink, data_id: str, status: int) -> None:
    emulator.add_fault("http_5xx", count=2, status=status, path_prefix=CHUNK_PATH)
    sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    assert statuses(chunk_requests(emulator)) == [status, status, 200]
    assert_stored_once(emulator, data_id, [0])


def test_a_reset_connection_is_retried(emulator: AtomscaleEmulator, sink: AtomscaleSink, data_id: str) -> None:
    emulator.add_fault("reset", count=2, path_prefix=CHUNK_PATH)
    sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    assert statuses(chunk_requests(emulator)) == [None, None, 200]
    assert emulator.repeats == 0
    assert_stored_once(emulator, data_id, [0])


def test_a_server_slower_than_the_timeout_is_retried_idempotently(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                                  data_id: str) -> None:
    emulator.add_fault("slow", count=1, delay=1.5, path_prefix=CHUNK_PATH)  # the sink's timeout is 0.5 s
    sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    # the timed-out request is still applied once the slow server gets to it
    assert wait_until(lambda: all(r.answered_at is not None for r in chunk_requests(emulator)), timeout=10)
    records = chunk_requests(emulator)
    assert records[0].fault == "slow" and len(records) == 2
    assert emulator.repeats == 2, "both attempts stored the same content (2 channels each, the second a repeat)"
    assert_stored_once(emulator, data_id, [0])


def test_429_retry_after_in_seconds_is_honoured(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                data_id: str) -> None:
    emulator.add_fault("rate_limit", count=1, retry_after=1, path_prefix=CHUNK_PATH)
    sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    limited, retried = chunk_requests(emulator)
    assert (limited.status, retried.status) == (429, 200)
    assert limited.answered_at is not None and retried.at - limited.answered_at >= 1.0
    assert_stored_once(emulator, data_id, [0])


def test_429_retry_after_as_an_http_date_is_honoured(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                     data_id: str) -> None:
    # the date has whole seconds: now + 2 s, truncated, is at least 1 s away
    emulator.add_fault("rate_limit", count=1, retry_after=2, retry_after_date=True, path_prefix=CHUNK_PATH)
    sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    limited, retried = chunk_requests(emulator)
    assert (limited.status, retried.status) == (429, 200)
    assert limited.answered_at is not None and retried.at - limited.answered_at >= 1.0


def test_a_retry_after_beyond_the_call_budget_is_handed_to_the_caller(emulator: AtomscaleEmulator,
                                                                      sink: AtomscaleSink, data_id: str) -> None:
    emulator.add_fault("rate_limit", count=1, retry_after=60, path_prefix=CHUNK_PATH)
    with pytest.raises(SinkUnavailable) as caught:
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and caught.value.retry_after == pytest.approx(60)
    assert len(chunk_requests(emulator)) == 1, "it did not sit out the wait inside the call"


def test_a_rotated_key_is_picked_up_from_the_key_file(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                      data_id: str, key_file: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    emulator.set_keys([ROTATED])  # rotated on the server; the key file still holds the old one
    with pytest.raises(SinkRejected) as caught:
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    assert caught.value.status == 401
    alarms = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("ALARM" in m and "401" in m and CHUNK_PATH in m for m in alarms), alarms

    key_file.write_text(ROTATED + "\n")  # the operator rotates the key file: the next call succeeds
    sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    assert statuses(chunk_requests(emulator)) == [401, 401, 200]
    assert_stored_once(emulator, data_id, [0])


def test_a_passing_401_is_an_alarm_and_the_next_call_succeeds(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                              data_id: str) -> None:
    emulator.add_fault("unauthorized", count=1, path_prefix=CHUNK_PATH)
    with pytest.raises(SinkRejected):
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
    assert statuses(chunk_requests(emulator)) == [401, 200]


def test_a_lost_response_is_retried_without_doubling_data(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                          data_id: str) -> None:
    emulator.add_fault("lost_response", count=2, path_prefix=CHUNK_PATH)
    for index in range(2):
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, index))
    assert statuses(chunk_requests(emulator)) == [None, None, 200, 200]
    assert emulator.repeats == 4, "chunk 0 arrived three times (2 channels each): two repeats per channel"
    assert_stored_once(emulator, data_id, [0, 1])

    emulator.add_fault("lost_response", count=1, path_prefix="/tool-state/stream/")
    sink.finalize(data_id, {})
    stream = emulator.stream(data_id)
    assert stream.finalized and stream.finalize_calls == 2 and stream.chunks_after_finalize == 0


def test_an_outage_is_waited_out_with_backoff_not_a_hot_loop(emulator: AtomscaleEmulator, key_file: Path) -> None:
    sink = make_sink(emulator, key_file, call_budget=2.0)
    try:
        data_id = sink.initialize(stream_info())
        # switched from "another process": the admin endpoint
        RemoteControl(emulator.url).add_fault("http_5xx", status=503, path_prefix=CHUNK_PATH)
        with pytest.raises(SinkUnavailable) as caught:
            sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        assert caught.value.status == 503
        attempts = len(chunk_requests(emulator))
        # backoff from 0.02 s doubling to 0.2 s allows some 10-20 attempts in 2 s; a loop without
        # backoff answers in about a millisecond and would make hundreds
        assert 3 <= attempts <= 40, attempts
        gaps = [b.at - a.at for a, b in zip(chunk_requests(emulator), chunk_requests(emulator)[1:], strict=False)]
        assert sum(gaps[len(gaps) // 2:]) / len(gaps[len(gaps) // 2:]) > 0.05, "later retries are spaced out"

        RemoteControl(emulator.url).clear_faults()
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        assert_stored_once(emulator, data_id, [0])
    finally:
        sink.close()


def test_an_unreachable_server_is_unavailable(emulator: AtomscaleEmulator, key_file: Path) -> None:
    sink = make_sink(emulator, key_file, call_budget=0.5)
    emulator.stop()
    try:
        with pytest.raises(SinkUnavailable, match="ConnectError"):
            sink.finalize("0" * 32, {})
    finally:
        sink.close()


def test_close_ends_a_retry_wait(emulator: AtomscaleEmulator, key_file: Path) -> None:
    sink = make_sink(emulator, key_file, call_budget=60.0, backoff_cap=1.0)
    data_id = sink.initialize(stream_info())
    emulator.add_fault("http_5xx", path_prefix=CHUNK_PATH)
    raised: list[BaseException] = []

    def push() -> None:
        try:
            sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        except SinkError as exc:
            raised.append(exc)

    worker = threading.Thread(target=push)
    worker.start()
    assert wait_until(lambda: len(chunk_requests(emulator)) >= 3, timeout=10)
    sink.close()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], SinkUnavailable)


def test_another_4xx_is_rejected_at_once_with_an_alarm(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SinkRejected) as caught:
        sink.push_chunk("no-such-stream", "main_gauge", chunk_body("no-such-stream", 0))
    assert caught.value.status == 404
    assert len(chunk_requests(emulator)) == 1
    assert any("ALARM" in r.getMessage() and "404" in r.getMessage() and CHUNK_PATH in r.getMessage()
               for r in caplog.records)


def test_a_chunk_the_api_cannot_take_is_rejected_without_a_request(emulator: AtomscaleEmulator,
                                                                   sink: AtomscaleSink, data_id: str) -> None:
    body = chunk_body(data_id, 0)
    body["channels"]["main_gauge/p1"]["values"][0] = math.nan
    with pytest.raises(SinkRejected, match="not valid JSON"):
        sink.push_chunk(data_id, "main_gauge", body)
    assert chunk_requests(emulator) == []


def test_channels_without_points_are_left_out_as_the_sdk_does(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                              data_id: str) -> None:
    body = chunk_body(data_id, 0)
    body["channels"]["main_gauge/p2"] = {"timestamps": [], "values": [], "units": "mbar"}
    sink.push_chunk(data_id, "main_gauge", body)
    [record] = chunk_requests(emulator)
    assert list(record.body["channels"]) == ["main_gauge/p1"]
    sink.push_chunk(data_id, "main_gauge", {"data_id": data_id, "chunk_index": 1, "channels": {}})
    assert len(chunk_requests(emulator)) == 1, "nothing to send, nothing sent"


def test_the_api_key_is_never_logged(emulator: AtomscaleEmulator, key_file: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    sink = make_sink(emulator, key_file)
    messages: list[str] = []
    try:
        data_id = sink.initialize(stream_info())
        emulator.add_fault("http_5xx", count=1, path_prefix=CHUNK_PATH)
        emulator.add_fault("reset", count=1, path_prefix=CHUNK_PATH)
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        emulator.set_keys([ROTATED])
        with pytest.raises(SinkRejected) as caught:
            sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 1))
        messages.append(str(caught.value))
        key_file.write_text(ROTATED)
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 1))
        with pytest.raises(SinkRejected) as caught:
            sink.finalize("no-such-stream", {})
        messages.append(str(caught.value))
        sink.finalize(data_id, {})
    finally:
        sink.close()
    assert any(r.name.startswith("httpx") for r in caplog.records), "httpx's own logging was captured too"
    text = caplog.text + "\n".join(messages)
    assert "ALARM" in text
    assert KEY not in text and ROTATED not in text


def test_a_chunk_of_the_store_goes_as_numbers_only(emulator: AtomscaleEmulator, sink: AtomscaleSink,
                                                   data_id: str) -> None:
    """The chunk the uploader cut (store version 2): readings of a bad quality without a value, a bool, an
    enum. The API holds numbers and no quality: the bool goes as 0/1, the rest is left out (and counted
    in the manifest, not here); a channel left without a point is not sent at all."""
    t = [1_763_700_000.0 + i for i in range(3)]
    body = {"data_id": data_id, "chunk_index": 0, "channels": {
        "psu/voltage": {"timestamps": t, "values": [12.0, None, 12.5], "units": "V",
                        "quality": ["ok", "over_range", "ok"]},
        "psu/output": {"timestamps": t, "values": [True, False, True], "units": "", "type": "bool"},
        "psu/mode": {"timestamps": t, "values": ["CV", "CC", "CV"], "units": "", "type": "enum"},
        "psu/faults": {"timestamps": t, "values": [0, 5, 0], "units": "", "type": "bits",
                       "detail": ["", "OVP, AC fail", ""]},
        "gauge/p3": {"timestamps": t, "values": [None, None, None], "units": "mbar",
                     "quality": ["no_sensor"] * 3},
    }}
    sink.push_chunk(data_id, "psu", body)
    (request,) = chunk_requests(emulator)
    assert request.status == 200
    assert sorted(emulator.channels(data_id)) == ["psu/faults", "psu/output", "psu/voltage"]
    assert emulator.points(data_id, "psu/voltage") == ([t[0], t[2]], [12.0, 12.5])
    assert emulator.points(data_id, "psu/output") == (t, [1.0, 0.0, 1.0])
    assert emulator.points(data_id, "psu/faults") == (t, [0.0, 5.0, 0.0])
    sink.push_chunk(data_id, "gauge", {"data_id": data_id, "chunk_index": 0, "channels": {
        "gauge/p3": body["channels"]["gauge/p3"]}})
    assert len(chunk_requests(emulator)) == 1, "a chunk without a number to send sends nothing"

"""The Atomscale emulator itself: what it stores, how it counts repeats and duplicates, its faults.

A test that relies on the emulator to catch a doubled chunk must know that the emulator would
show one, so this checks its bookkeeping with plain HTTP requests (httpx), no sink involved.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.services.atomscale import AtomscaleEmulator, Fault, RemoteControl
from tests.helpers.cli import simulate

KEY = "emulator-test-key"


@pytest.fixture
def emulator() -> Iterator[AtomscaleEmulator]:
    with AtomscaleEmulator([KEY], seed=3) as emulator:
        yield emulator


@pytest.fixture
def client(emulator: AtomscaleEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, headers={"X-API-KEY": KEY}, timeout=5) as client:
        yield client


def _stream(client: httpx.Client) -> str:
    answer = client.post("/tool-state/stream/initialize",
                         json={"stream_name": "s", "points_per_chunk": 2, "project_id": None})
    assert answer.status_code == 200
    return str(answer.json()["data_id"])


def _multi(client: httpx.Client, data_id: str, index: int, channels: dict[str, Any]) -> httpx.Response:
    return client.post("/tool-state/stream/chunk/multi",
                       json={"data_id": data_id, "chunk_index": index, "channels": channels})


def test_every_endpoint_but_the_clock_needs_a_valid_key(emulator: AtomscaleEmulator, client: httpx.Client) -> None:
    assert httpx.get(emulator.url + "/gateway/time").status_code == 200
    assert httpx.get(emulator.url + "/tags/").status_code == 401
    assert httpx.get(emulator.url + "/tags/", headers={"X-API-KEY": "wrong"}).status_code == 401
    assert client.get("/tags/").status_code == 200
    emulator.set_keys(["new"])
    assert client.get("/tags/").status_code == 401
    assert [r.api_key_present for r in emulator.requests()] == [False, False, True, True, True]
    assert all(KEY not in str(r.headers) for r in emulator.requests()), "the key's value is never kept"


def test_the_reference_clock_can_be_skewed(emulator: AtomscaleEmulator) -> None:
    emulator.reference_offset_ms = 5000.0
    answer = httpx.get(emulator.url + "/gateway/time").json()
    assert answer["transmittedAtUnixMs"] >= answer["receivedAtUnixMs"]


def test_samples_and_tags_are_unique_by_name(emulator: AtomscaleEmulator, client: httpx.Client) -> None:
    sample = client.post("/physical_samples/", json={"name": "S-1"}).json()["id"]
    taken = client.post("/physical_samples/", json={"name": " s-1 "})
    assert taken.status_code == 409 and taken.json() == {"detail": {"physical_sample_id": sample}}
    assert client.post("/tags/", json={"name": "GaN"}).status_code == 201
    assert client.post("/tags/", json={"name": "gan"}).status_code == 400
    assert client.get("/physical_samples/").json() == [{"id": sample, "name": "S-1"}]


def test_repeats_conflicts_and_duplicates_are_counted(emulator: AtomscaleEmulator, client: httpx.Client) -> None:
    data_id = _stream(client)
    a = {"timestamps": [1.0, 2.0], "values": [10.0, 20.0], "units": "mbar"}
    assert _multi(client, data_id, 0, {"x": a}).status_code == 200
    assert _multi(client, data_id, 0, {"x": a}).status_code == 200
    assert (emulator.repeats, emulator.conflicts, emulator.duplicates_stored()) == (1, 0, 0)
    # the same points again under another chunk index: stored twice, a duplicate
    assert _multi(client, data_id, 1, {"x": a}).status_code == 200
    assert emulator.duplicates_stored() == 2
    # different content at an existing key: a conflict, both versions kept
    b = {"timestamps": [3.0, 4.0], "values": [30.0, 40.0]}
    assert _multi(client, data_id, 1, {"x": b}).status_code == 200
    assert emulator.conflicts == 1
    assert len(emulator.chunk_versions(data_id, "x", 1)) == 2
    assert emulator.points(data_id, "x") == ([1.0, 2.0, 1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 10.0, 20.0, 30.0, 40.0])


def test_chunks_are_validated(emulator: AtomscaleEmulator, client: httpx.Client) -> None:
    data_id = _stream(client)
    assert _multi(client, "nope", 0, {"x": {"timestamps": [1.0], "values": [1.0]}}).status_code == 404
    assert _multi(client, data_id, 0, {"x": {"timestamps": [1.0], "values": []}}).status_code == 422
    assert _multi(client, data_id, 0, {"x": {"timestamps": [], "values": []}}).status_code == 422
    assert _multi(client, data_id, -1, {"x": {"timestamps": [1.0], "values": [1.0]}}).status_code == 422
    single = client.post("/tool-state/stream/chunk", json={
        "data_id": data_id, "chunk_index": 0, "channel_name": "y", "timestamps": [1.0], "values": [2.0]})
    assert single.status_code == 200
    assert emulator.points(data_id, "y") == ([1.0], [2.0])
    assert emulator.chunk_keys() == [(data_id, "y", 0)]


def test_finalize_is_idempotent_and_late_chunks_are_counted(emulator: AtomscaleEmulator,
                                                            client: httpx.Client) -> None:
    data_id = _stream(client)
    for _ in range(2):
        assert client.post(f"/tool-state/stream/{data_id}/finalize").status_code == 200
    assert _multi(client, data_id, 0, {"x": {"timestamps": [1.0], "values": [1.0]}}).status_code == 200
    stream = emulator.stream(data_id)
    assert (stream.finalized, stream.finalize_calls, stream.chunks_after_finalize) == (True, 2, 1)
    assert client.post("/tool-state/stream/unknown/finalize").status_code == 404


def test_a_counted_fault_hits_the_next_matching_requests_only(emulator: AtomscaleEmulator,
                                                              client: httpx.Client) -> None:
    emulator.add_fault("http_5xx", count=2, status=502, path_prefix="/tags/")
    assert [client.get("/physical_samples/").status_code] == [200]
    assert [client.get("/tags/").status_code for _ in range(3)] == [502, 502, 200]
    assert emulator.faults() == []


def test_a_probable_fault_is_repeatable_with_its_seed() -> None:
    outcomes = []
    for _ in range(2):
        with AtomscaleEmulator([KEY], seed=11) as emulator, \
                httpx.Client(base_url=emulator.url, headers={"X-API-KEY": KEY}) as client:
            emulator.add_fault("unauthorized", probability=0.5)
            outcomes.append([client.get("/tags/").status_code for _ in range(20)])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 401}


@pytest.mark.parametrize("kind", ["reset", "lost_response"])
def test_dropped_connections(emulator: AtomscaleEmulator, client: httpx.Client, kind: str) -> None:
    data_id = _stream(client)
    emulator.add_fault(kind, count=1)
    with pytest.raises(httpx.TransportError):
        _multi(client, data_id, 0, {"x": {"timestamps": [1.0], "values": [1.0]}})
    applied = emulator.points(data_id, "x") == ([1.0], [1.0])
    assert applied == (kind == "lost_response")
    assert emulator.requests()[-1].status is None


def test_rate_limit_answers_retry_after(emulator: AtomscaleEmulator, client: httpx.Client) -> None:
    emulator.add_fault("rate_limit", count=1, retry_after=7)
    emulator.add_fault("rate_limit", count=1, retry_after=7, retry_after_date=True)
    first, second = client.get("/tags/"), client.get("/tags/")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert second.status_code == 429 and second.headers["Retry-After"].endswith("GMT")


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("meteor")
    with pytest.raises(ValueError, match="not both"):
        Fault("reset", count=1, probability=0.5)
    with pytest.raises(ValueError, match="5xx"):
        Fault("http_5xx", status=404)
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_json({"kind": "reset", "hits": 3})


def test_the_admin_endpoints_drive_it_from_elsewhere(emulator: AtomscaleEmulator, client: httpx.Client) -> None:
    remote = RemoteControl(emulator.url)
    remote.add_fault("http_5xx", status=500, count=1)
    assert client.get("/tags/").status_code == 500
    remote.add_fault("http_5xx", status=503)
    remote.clear_faults()
    remote.set_keys(["other"])
    assert client.get("/tags/").status_code == 401
    state = remote.state()
    assert state["faults"] == [] and state["requests"] == 2
    assert [r["status"] for r in remote.requests()] == [500, 401]
    bad = httpx.post(emulator.url + "/_emulator/faults", json={"kind": "meteor"})
    assert bad.status_code == 422


def test_stop_closes_open_connections(emulator: AtomscaleEmulator, client: httpx.Client) -> None:
    assert client.get("/tags/").status_code == 200  # a keep-alive connection is now open
    emulator.stop()
    with pytest.raises(httpx.TransportError):
        client.get("/tags/")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(client.base_url.port or 0)), timeout=1):
        pass


def test_simulate_atomscale_serves_until_stopped(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    with simulate("atomscale", "--key-file", str(key_file), timeout=10) as process:
        assert process.where.startswith("http://127.0.0.1:")
        assert httpx.get(process.where + "/tags/", headers={"X-API-KEY": "from-a-file"}).status_code == 200


def test_simulate_atomscale_with_tls_serves_https_trusted_by_its_ca_only(tmp_path: Path) -> None:
    with simulate("atomscale", "--tls", str(tmp_path / "tls"), timeout=30) as process:
        assert process.where.startswith("https://127.0.0.1:")
        ca = tmp_path / "tls" / "ca.pem"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as trusting:
            assert trusting.get(process.where + "/gateway/time").status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(process.where + "/gateway/time")
        remote = RemoteControl(process.where, ca_file=ca)
        remote.add_fault("drip", delay=0.5, count=1)
        remote.add_fault("huge_body", size=1000, count=1)
        assert [f["kind"] for f in remote.state()["faults"]] == ["drip", "huge_body"]


def test_drip_and_huge_body_answer_as_documented(emulator: AtomscaleEmulator) -> None:
    emulator.add_fault("huge_body", size=200_000, count=1, path_prefix="/tags/")
    answer = httpx.get(emulator.url + "/tags/", headers={"X-API-KEY": KEY})
    assert answer.status_code == 200 and len(answer.content) == 200_000 and set(answer.json()) == {"pad"}
    emulator.add_fault("drip", delay=0.01, count=1, path_prefix="/tags/")
    with httpx.stream("GET", emulator.url + "/tags/", headers={"X-API-KEY": KEY}) as dripped:
        pieces = list(dripped.iter_raw())
    assert b"".join(pieces) == b"[]"
    assert emulator.requests("/tags/")[-1].fault == "drip"
    with pytest.raises(ValueError, match="size"):
        Fault("huge_body", size=3)

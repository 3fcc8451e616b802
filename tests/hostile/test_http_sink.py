"""A hostile or broken Atomscale endpoint cannot wedge the uploader, fill its memory or take the API key.

Real parts: the emulator (simulators/services/atomscale/) dripping its answer a byte at a time,
sending a 100 MB body, or serving HTTPS with a certificate of a throwaway CA; the sink over real
HTTP; the uploader in this process or as a real ``chamber-bridge upload`` process with a private
Mosquitto. Durations are only asserted as generous upper bounds ("does not hang").
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import parse_config
from bridge.uploader.sinks.atomscale import AtomscaleSink
from bridge.uploader.sinks.base import SinkRejected, SinkUnavailable
from simulators.services.atomscale import AtomscaleEmulator, TlsFiles, make_tls_files
from tests.helpers.atomscale import chunk_body, sink_config, stream_info
from tests.helpers.atomscale_run import KEY, assert_emulator_holds_run, atomscale_config, start_uploader
from tests.helpers.cli import run_cli
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.processes import UploaderProcess, write_config
from tests.helpers.uploader import RecordingBridge, wait_for
from tests.system.test_uploader import start_run, stop_run

CHUNK_PATH = "/tool-state/stream/chunk/multi"
FAST = {"timeout": 1.0, "connect_timeout": 1.0, "call_budget": 0.5, "backoff_initial": 0.02, "backoff_cap": 0.1,
        "backoff_floor": 0.01}
MIB = 1024 * 1024


@pytest.fixture
def emulator() -> Iterator[AtomscaleEmulator]:
    with AtomscaleEmulator([KEY], seed=11) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_emulator(tls_files: TlsFiles) -> Iterator[AtomscaleEmulator]:
    with AtomscaleEmulator([KEY], seed=12, tls=tls_files) as emulator:
        yield emulator


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "atomscale.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)  # check refuses a secret others can read
    return path


def make_sink(emulator: AtomscaleEmulator, key_file: Path, **options: Any) -> AtomscaleSink:
    config_options = {k: options.pop(k) for k in ("ca_file",) if k in options}
    return AtomscaleSink(sink_config(emulator.url, key_file, **config_options), rng=random.Random(3),
                         **{**FAST, **options})


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def dripping(emulator: AtomscaleEmulator) -> bool:
    return any(r.fault == "drip" for r in emulator.requests(CHUNK_PATH))


class StatusWatcher:
    """Every retained status the uploader publishes, as received."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="http-sink-status-watcher")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("lab/uploader/status", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.seen.append((time.monotonic(), json.loads(message.payload)))

    def since(self, moment: float) -> list[dict[str, Any]]:
        with self._lock:
            return [status for at, status in self.seen if at >= moment]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ---------------------------------------------------------------- a dripping endpoint


def test_a_dripping_answer_fails_the_push_by_the_deadline(emulator: AtomscaleEmulator, key_file: Path) -> None:
    """One byte every 0.3 s never trips the 1 s read timeout: only the exchange's deadline ends it."""
    sink = make_sink(emulator, key_file, deadline=2.0)
    try:
        data_id = sink.initialize(stream_info())
        emulator.add_fault("drip", delay=0.3, path_prefix=CHUNK_PATH)
        began = time.monotonic()
        with pytest.raises(SinkUnavailable, match=r"no complete answer within the 2 s deadline"):
            sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        assert time.monotonic() - began < 10
        assert dripping(emulator)
    finally:
        sink.close()


def test_close_aborts_a_push_stuck_on_a_dripping_answer(emulator: AtomscaleEmulator, key_file: Path) -> None:
    sink = make_sink(emulator, key_file, deadline=600.0, call_budget=600.0)
    data_id = sink.initialize(stream_info())
    emulator.add_fault("drip", delay=2.0, path_prefix=CHUNK_PATH)
    outcome: list[BaseException] = []

    def push() -> None:
        try:
            sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    pusher = threading.Thread(target=push)
    pusher.start()
    wait_for(lambda: dripping(emulator), timeout=10, what="the push to be dripped at")
    time.sleep(0.5)
    sink.close()
    pusher.join(timeout=5)
    assert not pusher.is_alive(), "close() did not abort the push in flight"
    assert len(outcome) == 1 and isinstance(outcome[0], SinkUnavailable), outcome
    assert "closed" in str(outcome[0])


def test_the_status_keeps_coming_while_a_push_drips(mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path,
                                                    emulator: AtomscaleEmulator) -> None:
    """The delivery thread is stuck in a push; the retained status is still published (and says so)."""
    raw = atomscale_config(mosquitto, gauges, tmp_path, emulator)
    watcher = StatusWatcher(mosquitto)
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = start_uploader(raw, sink_options={"timeout": 5.0, "deadline": 600.0, "call_budget": 600.0})
    try:
        emulator.add_fault("drip", delay=2.0, path_prefix=CHUNK_PATH)
        start_run(raw, name="drip")
        wait_for(lambda: dripping(emulator), timeout=30, what="a chunk push dripped at")
        moment = time.monotonic()
        time.sleep(3.0)  # ten status intervals (0.3 s)
        statuses = watcher.since(moment)
        assert len(statuses) >= 3, f"only {len(statuses)} statuses in 3 s while a push drips"
        assert any(s.get("delivery_busy_s", 0) > 1 for s in statuses), statuses[-1]
        warning = statuses[-1]["sinks"]["atomscale"]["warning"]
        assert "plain http" in warning and "clear text" in warning
        stopping = time.monotonic()
        uploader.stop()
        assert time.monotonic() - stopping < 10, "stop() waited for the dripping push"
        assert watcher.since(stopping)[-1]["state"] == "offline"
    finally:
        if not uploader._stop.is_set():
            uploader.stop()
        bridge.stop()
        watcher.close()


def test_sigterm_stops_an_upload_process_stuck_on_a_dripping_endpoint(
        mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, emulator: AtomscaleEmulator) -> None:
    """A real ``chamber-bridge upload`` with the sink's defaults (30 s deadline, 20 s retry budget),
    one byte every 2 s: SIGTERM still ends it within 10 s, as systemd and Docker expect."""
    raw = atomscale_config(mosquitto, gauges, tmp_path, emulator)
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = UploaderProcess(write_config(raw, tmp_path), tmp_path / "uploader.log")
    try:
        emulator.add_fault("drip", delay=2.0, path_prefix=CHUNK_PATH)
        start_run(raw, name="drip-sigterm")
        wait_for(lambda: dripping(emulator) or uploader.died(), timeout=60, what="a chunk push dripped at")
        assert not uploader.died(), uploader.log_tail()
        time.sleep(1.0)
        began = time.monotonic()
        code = uploader.stop()
        took = time.monotonic() - began
    finally:
        if not uploader.died():
            uploader.kill()
        bridge.stop()
    assert took < 10, f"SIGTERM took {took:.1f} s: {uploader.log_tail()}"
    assert code == 0, uploader.log_tail()
    assert "Traceback" not in uploader.log_text(), uploader.log_tail()


# ---------------------------------------------------------------- a huge answer


def test_a_huge_answer_is_cut_at_the_cap_without_filling_memory(emulator: AtomscaleEmulator,
                                                                key_file: Path) -> None:
    sink = make_sink(emulator, key_file, deadline=30.0)
    try:
        data_id = sink.initialize(stream_info())
        emulator.add_fault("huge_body", path_prefix=CHUNK_PATH)  # 100 MB to every push
        before = rss_mib()
        with pytest.raises(SinkUnavailable, match=r"HTTP 200: the answer is over the 1 MiB cap"):
            sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        grown = rss_mib() - before
        assert grown < 50, f"RSS grew by {grown:.0f} MiB reading a 100 MB answer"
        emulator.clear_faults()
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))  # repeated: stored once
        assert emulator.duplicates_stored() == 0 and emulator.conflicts == 0
    finally:
        sink.close()


def test_a_huge_error_answer_is_read_only_up_to_the_cap(emulator: AtomscaleEmulator, key_file: Path) -> None:
    """A 404 with a 10 MiB body: the rejection quotes its start, the rest is never read."""
    sink = make_sink(emulator, key_file, max_body=64 * 1024)
    try:
        emulator.add_fault("huge_body", size=10 * MIB, path_prefix=CHUNK_PATH)
        before = rss_mib()
        with pytest.raises(SinkRejected, match=r'HTTP 404: \{"pad":"x+\.\.\.$'):
            sink.push_chunk("no-such-stream", "main_gauge", chunk_body("no-such-stream", 0))
        assert rss_mib() - before < 50
    finally:
        sink.close()


# ---------------------------------------------------------------- TLS and plain http


def test_a_certificate_that_fails_verification_is_an_alarm_and_nothing_is_sent(
        tls_emulator: AtomscaleEmulator, key_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = make_sink(tls_emulator, key_file)
    try:
        with pytest.raises(SinkRejected) as caught:
            sink.initialize(stream_info())
    finally:
        sink.close()
    message = str(caught.value)
    assert f"the TLS certificate of {tls_emulator.url} failed verification" in message
    assert "unable to get local issuer certificate" in message or "self-signed" in message, message
    assert "uploader.sink.ca_file" in message
    assert KEY not in message and KEY not in caplog.text
    assert tls_emulator.requests() == [], "a request got through a failed verification"
    assert any("ALARM atomscale sink" in r.message for r in caplog.records)


def test_with_the_ca_file_uploads_go_over_https(tls_emulator: AtomscaleEmulator, tls_files: TlsFiles,
                                               key_file: Path) -> None:
    assert tls_emulator.url.startswith("https://127.0.0.1:")
    sink = make_sink(tls_emulator, key_file, ca_file=tls_files.ca_file)
    try:
        assert sink.warning is None
        data_id = sink.initialize(stream_info())
        sink.push_chunk(data_id, "main_gauge", chunk_body(data_id, 0))
        sink.finalize(data_id, {})
    finally:
        sink.close()
    assert tls_emulator.stream(data_id).finalized
    assert len(tls_emulator.chunk_keys(data_id)) == 2


def test_a_bad_certificate_alarms_in_the_status_keeps_the_data_and_a_ca_file_drains_it(
        mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, tls_emulator: AtomscaleEmulator,
        tls_files: TlsFiles) -> None:
    raw = atomscale_config(mosquitto, gauges, tmp_path, tls_emulator)
    del raw["uploader"]["sink"]["allow_insecure_http"]
    bridge = RecordingBridge(parse_config(raw)).start()
    uploader = start_uploader(raw)
    try:
        run_id = start_run(raw, name="tls")
        wait_for(lambda: uploader.last_status.get("sinks", {}).get("atomscale", {}).get("alarm"), timeout=30,
                 what="the sink alarm in the status")
        sink_status = uploader.last_status["sinks"]["atomscale"]
        assert "failed verification" in sink_status["last_error"]
        assert tls_emulator.url in sink_status["last_error"]
        stop_run(raw)
        uploader.stop()
        assert tls_emulator.requests() == []
        raw["uploader"]["sink"]["ca_file"] = str(tls_files.ca_file)
        uploader = start_uploader(raw)
        wait_for(lambda: any(s.finalized for s in tls_emulator.streams()), timeout=60,
                 what="the run finalized over HTTPS")
    finally:
        uploader.stop()
        bridge.stop()
    assert_emulator_holds_run(tls_emulator, "tls", bridge.recorded.run(run_id))


def test_check_refuses_a_plain_http_endpoint_without_the_flag(tmp_path: Path, key_file: Path) -> None:
    raw: dict[str, Any] = {"site": "lab-server", "uploader": {"state_dir": str(tmp_path / "state"), "sink": {
        "kind": "atomscale", "endpoint": "http://127.0.0.1:9", "api_key_file": str(key_file)}}}
    refused = run_cli("check", str(write_config(raw, tmp_path, "plain.yaml")))
    assert refused.returncode == 2, refused
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "uploader.sink.endpoint" in lines[0] and "clear text" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr
    raw["uploader"]["sink"]["allow_insecure_http"] = True
    allowed = run_cli("check", str(write_config(raw, tmp_path, "allowed.yaml")))
    assert allowed.returncode == 0, allowed.stderr


def test_check_refuses_a_ca_file_that_does_not_load(tmp_path: Path, key_file: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for ca_file in (not_pem, tmp_path / "missing.pem"):
        raw = {"site": "lab-server", "uploader": {"sink": {
            "kind": "atomscale", "endpoint": "https://api.example.invalid", "api_key_file": str(key_file),
            "ca_file": str(ca_file)}}}
        refused = run_cli("check", str(write_config(raw, tmp_path)))
        assert refused.returncode == 2, refused
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "uploader.sink.ca_file" in lines[0] and str(ca_file) in lines[0], refused.stderr

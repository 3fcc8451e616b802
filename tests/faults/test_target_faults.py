"""Fault matrix rows 12-15: the upload target fails for a while, loses answers, throttles, refuses the key.

The bridge runs in this process with its log recorded (the exact ground truth), the uploader
pushes to the Atomscale API emulator (simulators/services/atomscale/) directly or through the TCP
fault proxy (tests/helpers/fault_proxy.py, for the blackhole). tests/system/test_uploader_atomscale.py
already shows every fault mode at random (30 % of requests) costs nothing; these rows switch a
fault on for every request for a stretch of time, then off, and measure what docs/design.md section 12 asks:
how often the uploader knocked during the outage (no hot loop), how long it took to drain, that
Retry-After was waited out, when the alarm showed. Afterwards the emulator must hold exactly the
run's readings, each once, in one finalized stream (``assert_emulator_holds_run``), the spool must
have drained and the broker dropped nothing. The long versions (minutes, the sink's production
retry settings) are marked ``slow``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.uploader.service import UploaderService, UploaderSettings
from simulators.services.atomscale import AtomscaleEmulator
from tests.faults.conftest import Figures
from tests.helpers.atomscale_run import (
    KEY,
    SETTINGS,
    assert_emulator_holds_run,
    atomscale_config,
    finalized_stream,
    start_uploader,
)
from tests.helpers.fault_proxy import FaultProxy
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.pipeline import UPLOADER_STATUS
from tests.helpers.uploader import RecordingBridge, assert_spool_drained, wait_for
from tests.helpers.watch import Watcher, sys_broker
from tests.system.test_uploader import start_run, stop_run

#: how long the short versions keep the target down; the long ones, minutes
OUTAGE = 6.0
LONG_OUTAGE = 180.0
#: a hot loop against a local target that answers at once would knock thousands of times a second
HOT_LOOP_RATE = 100.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = sys_broker(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def emulator() -> Iterator[AtomscaleEmulator]:
    emu = AtomscaleEmulator(keys=[KEY], seed=7).start()
    yield emu
    emu.stop()


@pytest.fixture
def proxy(emulator: AtomscaleEmulator) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", emulator.port) as proxy:
        yield proxy


@dataclass
class Chain:
    """Bridge (recorded) -> broker -> uploader -> emulator, and a watcher on the broker."""

    raw: dict[str, Any]
    bridge: RecordingBridge
    uploader: UploaderService
    watch: Watcher
    emulator: AtomscaleEmulator
    tmp: Path
    stopped: bool = False

    def requests(self, since: float, until: float | None = None) -> list[Any]:
        """The emulator's requests that arrived in [since, until) (monotonic)."""
        return [r for r in self.emulator.requests()
                if r.at >= since and (until is None or r.at < until)]

    def finish(self, run_id: str, name: str, stop_seq: int, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the stream, stop both services, assert nothing lost; figures every row reports."""
        wait_for(lambda: finalized_stream(self.emulator, name), timeout=timeout, what=f"the stream {name} finalized")
        wait_for(lambda: self.bridge.outbox.acked_seq >= stop_seq, what="the outbox acked past the run")
        time.sleep(1.2)  # one more $SYS period
        self.bridge.stop()
        self.uploader.stop()
        self.stopped = True
        readings = self.bridge.recorded.run(run_id)
        assert_emulator_holds_run(self.emulator, name, readings)
        assert_spool_drained(self.tmp / "uploader-state", stop_seq)
        assert self.watch.dropped() == 0
        state = self.emulator.state()
        return {"lost": 0, "duplicates_stored": state["duplicates_stored"], "repeats_at_target": state["repeats"],
                "readings": len(readings), "broker_dropped": self.watch.dropped()}

    def close(self) -> None:
        if not self.stopped:
            self.bridge.stop()
            self.uploader.stop()
        self.watch.close()


@pytest.fixture
def chain(broker: MosquittoBroker, gauges: Any, tmp_path: Path, emulator: AtomscaleEmulator
          ) -> Iterator[Callable[..., Chain]]:
    made: list[Chain] = []

    def make(endpoint: str | None = None, settings: UploaderSettings = SETTINGS,
             sink_options: dict[str, float] | None = None) -> Chain:
        raw = atomscale_config(broker, gauges, tmp_path, emulator, endpoint=endpoint)
        watch = Watcher(broker, [UPLOADER_STATUS])
        bridge = RecordingBridge(parse_config(raw)).start()
        uploader = start_uploader(raw, settings=settings, sink_options=sink_options)
        made.append(Chain(raw, bridge, uploader, watch, emulator, tmp_path))
        return made[-1]

    yield make
    for made_chain in made:
        made_chain.close()


def wait_logged(chain: Chain, more: int) -> None:
    target = len(chain.bridge.recorded.entries) + more
    wait_for(lambda: len(chain.bridge.recorded.entries) >= target, what=f"{more} more entries logged")


# ---------------------------------------------------------------- row 12: the target down for a while


def outage(chain: Chain, proxy: FaultProxy, kind: str, seconds: float) -> dict[str, Any]:
    """Switch the outage on for every request, wait ``seconds``, switch it off; what the uploader did meanwhile."""
    accepted = proxy.accepted
    began = time.monotonic()
    if kind == "blackhole":
        proxy.set_mode("blackhole")
    else:
        chain.emulator.add_fault(kind, **({"status": 503} if kind == "http_5xx" else {}))
    time.sleep(seconds)
    ended = time.monotonic()
    if kind == "blackhole":
        proxy.set_mode("pass")
    else:
        chain.emulator.clear_faults()
    if kind == "blackhole":
        attempts = proxy.accepted - accepted  # connections opened into the void (one per attempt)
    else:
        attempts = sum(1 for r in chain.requests(began, ended) if r.fault == kind)
    gaps = [b.at - a.at for a, b in itertools.pairwise(chain.requests(began, ended))]
    return {"attempts": attempts, "rate": attempts / (ended - began), "ended": ended,
            "min_gap_s": round(min(gaps), 4) if gaps else None}


def run_outage(chain: Chain, proxy: FaultProxy, kind: str, seconds: float, figures: Figures, long: bool) -> None:
    name = f"outage-{kind}"
    run_id = start_run(chain.raw, name=name)
    wait_logged(chain, 200)
    seen = outage(chain, proxy, kind, seconds)
    stop_seq = stop_run(chain.raw)
    wait_for(lambda: finalized_stream(chain.emulator, name), timeout=seconds + 300,
             what="the stream finalized after the outage")
    drain = time.monotonic() - seen["ended"]
    assert seen["attempts"] > 0, "the uploader never tried during the outage"
    assert seen["rate"] < HOT_LOOP_RATE, f"{seen['rate']:.0f} attempts/s during the outage: a hot loop"
    result = chain.finish(run_id, name, stop_seq)
    figures.record(row=12, fault=f"target {kind} on every request for {seconds:.0f} s"
                   + (" (production retry settings)" if long else " (test retry settings)"),
                   attempts_during_outage=seen["attempts"], attempts_per_s=round(seen["rate"], 2),
                   drain_s=round(drain, 2), **result)


OUTAGES = ["http_5xx", "reset", "blackhole"]


@pytest.mark.parametrize("kind", OUTAGES)
def test_target_down_for_a_while_is_retried_with_backoff_and_drains(
        chain: Callable[..., Chain], proxy: FaultProxy, kind: str, figures: Figures) -> None:
    run_outage(chain(endpoint=f"http://{proxy.host}:{proxy.port}"), proxy, kind, OUTAGE, figures, long=False)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("kind", OUTAGES)
def test_target_down_for_minutes_with_production_retry_settings(
        chain: Callable[..., Chain], proxy: FaultProxy, kind: str, figures: Figures) -> None:
    run_outage(chain(endpoint=f"http://{proxy.host}:{proxy.port}", settings=UploaderSettings(status_interval=1.0),
                     sink_options={}), proxy, kind, LONG_OUTAGE, figures, long=True)


# ---------------------------------------------------------------- row 13: lost responses


def test_lost_responses_store_nothing_twice(chain: Callable[..., Chain], figures: Figures) -> None:
    """The target commits, then the answer is lost: every chunk push is lost a first time, and a finalize."""
    c = chain()
    c.emulator.add_fault("lost_response", count=60, path_prefix="/tool-state/stream/chunk")
    c.emulator.add_fault("lost_response", count=1, path_prefix="/tool-state/stream/initialize")
    name = "lost-responses"
    run_id = start_run(c.raw, name=name)
    wait_logged(c, 400)
    c.emulator.add_fault("lost_response", count=2, path_prefix="/tool-state/stream/")  # the finalize, among others
    stop_seq = stop_run(c.raw)
    result = c.finish(run_id, name, stop_seq)
    lost = sum(1 for r in c.emulator.requests() if r.fault == "lost_response")
    empty_twins = sum(1 for s in c.emulator.streams() if s.stream_name == name and not c.emulator.chunk_keys(s.data_id))
    assert lost >= 60
    figures.record(row=13, fault="target commits, then drops the connection: 60 chunk pushes, an initialize, "
                   "2 more stream calls", responses_lost=lost, empty_streams_left=empty_twins, **result)


# ---------------------------------------------------------------- row 14: throttled, slow


RETRY_AFTER = 1.5


def test_429_retry_after_is_waited_out(chain: Callable[..., Chain], figures: Figures) -> None:
    """One push at a time, so each request's predecessor is known: after a 429 the next request
    must not come before Retry-After has passed."""
    c = chain(settings=UploaderSettings(status_interval=0.3, backoff_initial=0.05, backoff_cap=0.5, upload_workers=1))
    name = "throttled"
    run_id = start_run(c.raw, name=name)
    wait_logged(c, 200)
    began = time.monotonic()
    c.emulator.add_fault("rate_limit", retry_after=RETRY_AFTER)
    time.sleep(OUTAGE)
    c.emulator.clear_faults()
    ended = time.monotonic()
    stop_seq = stop_run(c.raw)
    result = c.finish(run_id, name, stop_seq)
    requests = c.requests(began)
    waits = [b.at - a.answered_at for a, b in itertools.pairwise(requests)
             if a.status == 429 and a.answered_at is not None and a.at < ended]
    assert len(waits) >= 3, f"only {len(waits)} throttled requests"
    assert min(waits) >= RETRY_AFTER - 0.05, \
        f"a request came {min(waits):.2f} s after a 429 (Retry-After {RETRY_AFTER:g} s)"
    figures.record(row=14, fault=f"429 with Retry-After {RETRY_AFTER:g} s on every request for {OUTAGE:.0f} s",
                   throttled=len(waits), shortest_wait_s=round(min(waits), 3), longest_wait_s=round(max(waits), 3),
                   retry_after_honoured=True, **result)


def test_a_target_slower_than_the_timeout_stores_nothing_twice(chain: Callable[..., Chain], figures: Figures) -> None:
    """Every request takes longer than the sink's timeout (0.5 s), and the target applies it anyway."""
    c = chain()
    name = "slow-target"
    run_id = start_run(c.raw, name=name)
    wait_logged(c, 200)
    began = time.monotonic()
    c.emulator.add_fault("slow", delay=0.8)
    time.sleep(OUTAGE)
    c.emulator.clear_faults()
    ended = time.monotonic()
    stop_seq = stop_run(c.raw)
    wait_for(lambda: finalized_stream(c.emulator, name), timeout=120, what="the stream finalized")
    drain = time.monotonic() - ended
    result = c.finish(run_id, name, stop_seq)
    slowed = sum(1 for r in c.requests(began, ended) if r.fault == "slow")
    figures.record(row=14, fault=f"target 0.8 s per request (sink timeout 0.5 s) for {OUTAGE:.0f} s", slowed=slowed,
                   attempts_per_s=round(slowed / (ended - began), 2), drain_s=round(drain, 2), **result)


# ---------------------------------------------------------------- row 15: the key refused, then fixed


def sink_alarm(status: Any) -> bool:
    return bool(status["sinks"]["atomscale"]["alarm"])


@pytest.mark.parametrize("refusal", ["401", "403"])
def test_a_refused_key_raises_the_alarm_keeps_the_data_and_recovers_when_fixed(
        chain: Callable[..., Chain], tmp_path: Path, refusal: str, figures: Figures) -> None:
    """401: the key was revoked, the operator rotates it (writes the new one to the key file).
    403: the key lacks a permission, an admin grants it (the emulator stops refusing)."""
    c = chain()
    name = f"refused-{refusal}"
    refused = time.monotonic()
    if refusal == "401":
        c.emulator.set_keys(["key-two"])
    else:
        c.emulator.add_fault("forbidden")
    run_id = start_run(c.raw, name=name)
    alarm = wait_for(lambda: c.watch.first(UPLOADER_STATUS, sink_alarm, since=refused), what="the alarm")
    wait_logged(c, 200)
    stop_seq = stop_run(c.raw)
    wait_for(lambda: c.bridge.outbox.acked_seq >= stop_seq, what="the run acked into the spool while refused")
    assert c.uploader.ledger.backlog() > 0 or c.uploader.ledger.streams_to_initialize(), "data not kept"
    assert str(refusal) in c.uploader.last_upload_error
    assert KEY not in str(c.watch.on(UPLOADER_STATUS)), "the key leaked into the status"
    fixed = time.monotonic()
    if refusal == "401":
        (tmp_path / "api-key").write_text("key-two\n")
    else:
        c.emulator.clear_faults()
    wait_for(lambda: finalized_stream(c.emulator, name), timeout=60, what="the stream after the fix")
    recovered = time.monotonic() - fixed
    cleared = wait_for(lambda: c.watch.first(UPLOADER_STATUS, lambda s: not sink_alarm(s), since=fixed),
                       what="the alarm to clear")
    result = c.finish(run_id, name, stop_seq)
    figures.record(row=15, fault="HTTP 401 (key revoked), then the key rotated" if refusal == "401" else
                   "HTTP 403 (permission missing), then granted", alarm_s=round(alarm[0] - refused, 2),
                   alarm_cleared_s=round(cleared[0] - fixed, 2), recovery_s=round(recovered, 2), **result)

"""Fault matrix rows 1-6, 9, 16 and 18: the broker, the network and paho fail; the bridge and uploader survive.

The chain runs in this process (tests/helpers/pipeline.py): simulated gauges -> bridge (its log
recorded: the exact ground truth) -> a private Mosquitto (``$SYS`` every second, so its dropped
counter is watched) -> uploader -> local store. Network faults go through the TCP fault proxy
(tests/helpers/fault_proxy.py). Every test asserts "nothing lost" as docs/design.md section 12 defines it
(:meth:`Pipeline.finish`) and records what it measured with ``figures``; none asserts a time.
The long versions (minutes of outage, 65,535+ entries, 10x keepalive) are marked ``slow``
(scripts/test-slow.sh).
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.edge.publisher import Publisher, PublisherSettings
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.uploader.subscriber import Subscriber
from tests.faults.conftest import Figures
from tests.helpers.fault_proxy import FaultProxy
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.pipeline import BRIDGE_STATUS, UPLOADER_STATUS, Pipeline, Sampler
from tests.helpers.uploader import FAST_PUBLISHER, wait_for
from tests.helpers.watch import sys_broker

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = sys_broker(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.thaw()
        broker.kill()


@pytest.fixture
def make_pipeline(tmp_path: Path, broker: MosquittoBroker, gauges: Any) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(**options: Any) -> Pipeline:
        pipe = Pipeline(tmp_path, broker, gauges, **options)
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        pipe.close()


@pytest.fixture
def proxy(broker: MosquittoBroker) -> Iterator[FaultProxy]:
    with FaultProxy(broker.host, broker.port) as p:
        yield p


# ---------------------------------------------------------------- row 1: broker clean restart


@pytest.mark.parametrize("down", [0.1, 5.0, pytest.param(60.0, marks=SLOW)], ids=["0.1s", "5s", "60s"])
def test_row1_broker_restarted_cleanly_mid_run(make_pipeline: Callable[..., Pipeline], broker: MosquittoBroker,
                                               figures: Figures, down: float) -> None:
    pipe = make_pipeline().start()
    run_id = pipe.start_run("restart")
    pipe.wait_logged(150)
    broker.stop()  # SIGTERM: the broker saves its persistence file
    time.sleep(down)
    broker.start()
    back = pipe.last_seq()
    recovery = pipe.wait_acked(back, timeout=120)
    pipe.wait_logged(100)
    result = pipe.finish(run_id, pipe.stop_run())
    figures.record(row=1, fault=f"broker SIGTERM, restarted after {down:g} s", down_s=down,
                   recovery_s=round(recovery, 2), **result)


# ---------------------------------------------------------------- row 2: broker crash


def count_reads(pipe: Pipeline) -> collections.Counter[int]:
    """How often each seq was read from the outbox for publishing (more than once: replayed)."""
    outbox = pipe.recorded.outbox
    reads: collections.Counter[int] = collections.Counter()
    original = outbox.pending_stored

    def counting(after_seq: int, limit: int) -> list[Any]:
        rows = original(after_seq, limit)
        reads.update(row[0] for row in rows)
        return rows

    outbox.pending_stored = counting  # type: ignore[method-assign]
    return reads


#: the uploader's link holds each chunk this long (a network's latency): whatever the broker has PUBACKed
#: in the last moment before a SIGKILL is still on its way, so every kill has something in flight to lose
LINK_LATENCY = 0.2


@pytest.mark.parametrize("kills", [3, pytest.param(30, marks=SLOW)])
def test_row2_broker_killed_at_random_points_replays_from_the_outbox(
        make_pipeline: Callable[..., Pipeline], broker: MosquittoBroker, proxy: FaultProxy, figures: Figures,
        kills: int) -> None:
    rng = random.Random(2)
    proxy.set_mode("delay", LINK_LATENCY)
    pipe = make_pipeline(uploader_port=proxy.port).start()
    reads = count_reads(pipe)
    run_id = pipe.start_run("crash")
    recoveries, unacked_at_kill = [], []
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 2.0))
        unacked_at_kill.append(pipe.recorded.outbox.depth())
        broker.kill()  # SIGKILL: whatever the broker held since its last autosave is gone
        time.sleep(rng.uniform(0.0, 1.0))
        broker.start()
        recoveries.append(pipe.wait_acked(pipe.last_seq(), timeout=120))
    pipe.wait_logged(50)
    result = pipe.finish(run_id, pipe.stop_run())
    replayed = sum(n - 1 for n in reads.values() if n > 1)
    figures.record(row=2, fault=f"broker SIGKILL x{kills} at random points, restarted (uploader's link latency "
                   f"{LINK_LATENCY:g} s)", kills=kills,
                   replayed_from_outbox=replayed, unacked_at_kill_max=max(unacked_at_kill),
                   recovery_s_max=round(max(recoveries), 2), recovery_s_mean=round(sum(recoveries) / kills, 2),
                   **result)
    assert replayed > 0, "no entry was ever sent twice: the kills hit nothing in flight"


# ---------------------------------------------------------------- row 3: broker crash while the uploader is offline


def test_row3_broker_killed_while_the_uploader_is_offline(
        make_pipeline: Callable[..., Pipeline], broker: MosquittoBroker, figures: Figures,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge.uploader.subscriber")
    pipe = make_pipeline().start()
    run_id = pipe.start_run("offline")
    pipe.wait_logged(100)
    pipe.stop_uploader()  # its persistent session stays; the broker queues for it
    pipe.wait_logged(200)
    queued = pipe.recorded.outbox.depth()  # published, PUBACKed by the broker, waiting for the uploader
    broker.kill()
    broker.start()
    pipe.start_uploader()
    restarted = pipe.last_seq()
    recovery = pipe.wait_acked(restarted, timeout=120)
    result = pipe.finish(run_id, pipe.stop_run())
    sessions = [r.getMessage() for r in caplog.records if "session present" in r.getMessage()]
    figures.record(row=3, fault="uploader stopped, broker SIGKILLed with its queue, both restarted",
                   queued_at_kill=queued, session_after_restart=sessions[-1] if sessions else None,
                   recovery_s=round(recovery, 2), **result)
    assert queued > 0
    assert sessions and "session present: False" in sessions[-1], "the broker kept the session: nothing was at risk"


# ---------------------------------------------------------------- row 4: broker frozen, or the network a blackhole


FREEZES = [
    pytest.param("sigstop", 2, 2, id="sigstop-2x"),
    pytest.param("blackhole", 2, 2, id="blackhole-2x"),
    pytest.param("sigstop", 10, 5, id="sigstop-10x", marks=SLOW),
    pytest.param("blackhole", 10, 5, id="blackhole-10x", marks=SLOW),
]


@pytest.mark.parametrize(("how", "factor", "keepalive"), FREEZES)
def test_row4_broker_frozen_is_detected_without_a_hang(
        make_pipeline: Callable[..., Pipeline], broker: MosquittoBroker, proxy: FaultProxy, figures: Figures,
        how: str, factor: int, keepalive: int) -> None:
    port = proxy.port if how == "blackhole" else None
    pipe = make_pipeline(bridge_port=port, uploader_port=port, keepalive=keepalive).start()
    run_id = pipe.start_run("frozen")
    pipe.wait_logged(100)
    bridge, uploader = pipe.recorded.service.publisher, pipe.uploader
    assert uploader is not None
    links = Sampler(lambda: (bridge.connected, uploader.subscriber.connected.is_set()))
    polled = pipe.logged()
    started = time.monotonic()
    if how == "sigstop":
        broker.freeze()
    else:
        proxy.set_mode("blackhole")
    time.sleep(factor * keepalive)
    if how == "sigstop":
        broker.thaw()
    else:
        proxy.set_mode("pass")
    ended = time.monotonic()
    polled = pipe.logged() - polled
    recovery = pipe.wait_acked(pipe.last_seq(), timeout=120)
    links.stop()
    bridge_lost = links.first(lambda v: not v[0], since=started)
    uploader_lost = links.first(lambda v: not v[1], since=started)
    result = pipe.finish(run_id, pipe.stop_run())
    detected = {who: None if at is None or at > ended else round(at - started, 2)
                for who, at in (("bridge", bridge_lost), ("uploader", uploader_lost))}
    figures.record(row=4, fault=f"broker {how} for {factor}x keepalive ({factor * keepalive} s)", keepalive=keepalive,
                   detection_s_bridge=detected["bridge"], detection_s_uploader=detected["uploader"],
                   readings_polled_meanwhile=polled, recovery_s=round(recovery, 2), **result)
    assert polled > 0, "polling stopped while the broker was unreachable"
    if factor >= 10:
        assert None not in detected.values(), f"a client never noticed the broker was gone: {detected}"


# ---------------------------------------------------------------- row 5: an outage past paho's 65,535 message ids


@pytest.mark.parametrize("entries", [4_000, pytest.param(70_000, marks=SLOW)])
def test_row5_outage_longer_than_pahos_queue_is_carried_by_the_outbox(
        make_pipeline: Callable[..., Pipeline], broker: MosquittoBroker, figures: Figures, entries: int) -> None:
    pipe = make_pipeline(interval=0.005, ppc=100).start()
    run_id = pipe.start_run("long-outage")
    pipe.wait_logged(200)
    publisher = pipe.recorded.service.publisher
    paho_queue = Sampler(lambda: len(publisher.client._out_messages), interval=0.05)
    broker.kill()
    went = time.monotonic()
    wait_for(lambda: pipe.recorded.outbox.depth() >= entries, timeout=900, interval=0.2,
             what=f"{entries} entries in the outbox")
    broker.start()
    peak, down_s = pipe.recorded.outbox.depth(), time.monotonic() - went
    drain = pipe.wait_acked(pipe.last_seq(), timeout=900)
    paho_queue.stop()
    result = pipe.finish(run_id, pipe.stop_run(), timeout=300)
    figures.record(row=5, fault=f"broker down while {entries} entries were logged", down_s=round(down_s, 1),
                   peak_outbox_entries=peak, paho_queue_peak=paho_queue.peak(), drain_s=round(drain, 2), **result)
    # the backlog waited in the outbox, not in paho's memory (whose 65,535 message ids it could exceed)
    assert paho_queue.peak() <= FAST_PUBLISHER.max_in_flight + 8


# ---------------------------------------------------------------- row 6: slow uploader under a 10x burst

#: the lab server's broker queues (deploy/mosquitto/mosquitto.conf): a small in-flight window, a large queue
DEPLOYED_QUEUES = "max_inflight_messages 200\nmax_queued_messages 1000000\nmax_queued_bytes 1073741824\n"
#: the slow uploader's link: every chunk of at most 1 KiB it receives is held 0.16 s (6.4 KiB/s: about
#: three times the nominal traffic, half the burst's). Its messages wait at the broker meanwhile.
SLOW_CHUNK, SLOW_DELAY = 1024, 0.16
#: a TPG reply delay that brings two gauges' 4 channels near 20 readings/s: the nominal rate
NOMINAL_REPLY_DELAY = 0.03


class BrokerStore:
    """The peak of ``$SYS/broker/store/messages/count``: messages the broker holds (queued or in flight)."""

    TOPIC = "$SYS/broker/store/messages/count"

    def __init__(self, broker: MosquittoBroker) -> None:
        self.peak = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="store-watcher")
        self.client.on_connect = lambda client, *args: client.subscribe(self.TOPIC)
        self.client.on_message = lambda client, userdata, message: self._seen(int(message.payload or b"0"))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _seen(self, count: int) -> None:
        self.peak = max(self.peak, count)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rate(pipe: Pipeline, seconds: float) -> float:
    before = pipe.logged()
    time.sleep(seconds)
    return (pipe.logged() - before) / seconds


#: the bridge's and the uploader's own timings (resends after 10 s without ack progress, statuses every 5 s)
ROW6_PUBLISHER = PublisherSettings(drain_timeout=5.0)
ROW6_UPLOADER = UploaderSettings()


@pytest.mark.parametrize("burst", [3.0, pytest.param(60.0, marks=SLOW)])
def test_row6_slow_uploader_under_a_10x_burst_drops_nothing_at_the_broker(
        tmp_path: Path, gauges: Any, figures: Figures, burst: float) -> None:
    broker = sys_broker(tmp_path / "mosquitto-deployed", DEPLOYED_QUEUES)
    link = FaultProxy(broker.host, broker.port, chunk=SLOW_CHUNK).start()
    link.set_mode("delay", SLOW_DELAY)
    pipe = Pipeline(tmp_path, broker, gauges, uploader_port=link.port, publisher=ROW6_PUBLISHER,
                    uploader_settings=ROW6_UPLOADER)
    store = BrokerStore(broker)
    try:
        for sim, _ in gauges:
            sim.reply_delay = NOMINAL_REPLY_DELAY
        pipe.start()
        run_id = pipe.start_run("burst")
        nominal = rate(pipe, 2.0)
        lag = Sampler(lambda: (pipe.recorded.outbox.depth(), pipe.recorded.service.status()["outbox"]
                               ["oldest_unacked_age"] or 0.0), interval=0.1)
        for sim, _ in gauges:
            sim.reply_delay = 0.0
        burst_rate = rate(pipe, burst)
        for sim, _ in gauges:
            sim.reply_delay = NOMINAL_REPLY_DELAY
        catch_up = pipe.wait_acked(pipe.last_seq(), timeout=600)
        lag.stop()
        result = pipe.finish(run_id, pipe.stop_run(), timeout=300)
    finally:
        store.close()
        pipe.close()
        link.stop()
        broker.kill()
    capacity = SLOW_CHUNK / SLOW_DELAY
    figures.record(row=6, fault=f"uploader's link slowed to {capacity / 1024:.1f} KiB/s (a 1 KiB chunk per "
                   f"{SLOW_DELAY:g} s), {burst:g} s burst", broker_held_messages_peak=store.peak,
                   nominal_readings_per_s=round(nominal, 1), burst_readings_per_s=round(burst_rate, 1),
                   burst_factor=round(burst_rate / nominal, 1), peak_outbox_entries=max(v[0] for _, v in lag.samples),
                   peak_lag_s=round(max(v[1] for _, v in lag.samples), 2), catch_up_s=round(catch_up, 2), **result)
    assert max(v[1] for _, v in lag.samples) > 2 * SLOW_DELAY, "the uploader kept up: the burst tested nothing"
    # the uploader's acks kept pace with what it committed (they once queued behind the data backlog, and
    # the bridge, seeing no ack for 10 s, resent its whole backlog into the slow link, again and again)
    assert result["resends"] == 0 and result["duplicates_deduped"] == 0, result


# ---------------------------------------------------------------- row 9: uploader down past its session expiry


@pytest.mark.parametrize("expiry", [2, pytest.param(60, marks=SLOW)])
def test_row9_uploader_down_past_its_session_expiry_loses_nothing(
        make_pipeline: Callable[..., Pipeline], figures: Figures, expiry: int) -> None:
    pipe = make_pipeline()
    if expiry >= 60:
        pipe.uploader_raw["uploader"]["session_expiry"] = expiry  # the config's own minimum: the real contract

    def short_session(service: UploaderService) -> None:
        # the config refuses less than 60 s; the short version hands the subscriber a shorter one directly
        service.subscriber.session_expiry = expiry

    configure = short_session if expiry < 60 else None
    pipe.start(configure)
    publisher = pipe.recorded.service.publisher
    no_subscribers: list[int] = []
    delivered: Any = publisher.client.on_publish

    def watching(client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if reason_code == 0x10:  # the broker had nobody to give it to: dropped there, kept in the outbox
            no_subscribers.append(mid)
        delivered(client, userdata, mid, reason_code, properties)

    publisher.client.on_publish = watching
    run_id = pipe.start_run("expired")
    pipe.wait_logged(100)
    pipe.stop_uploader()
    time.sleep(expiry + 2)  # the session is gone: the broker drops what the bridge publishes meanwhile
    pipe.wait_logged(100)
    pipe.start_uploader(configure=configure)
    recovery = pipe.wait_acked(pipe.last_seq(), timeout=120)
    result = pipe.finish(run_id, pipe.stop_run())
    figures.record(row=9, fault=f"uploader down {expiry + 2} s past a {expiry} s session expiry", expiry_s=expiry,
                   batches_dropped_by_broker=len(no_subscribers), recovery_s=round(recovery, 2), **result)
    assert no_subscribers, "the session did not expire: the broker queued everything"


# ---------------------------------------------------------------- row 16: ACL or size limit misconfigured

#: anonymous clients may use every topic of the site except publishing its data
DENY_DATA_ACL = "\n".join(f"topic {access} {topic}" for access, topic in [
    ("readwrite", "lab/chamber-u/status"), ("readwrite", "lab/chamber-u/run"), ("readwrite", "lab/chamber-u/ack"),
    ("readwrite", "lab/chamber-u/command"), ("readwrite", "lab/chamber-u/command/reply"),
    ("readwrite", "lab/uploader/status"), ("read", "lab/chamber-u/data"), ("read", "$SYS/#")]) + "\n"
#: larger than every status, ack and command, smaller than most data batches at this poll rate
SIZE_LIMIT = 1500


@pytest.mark.parametrize(("protocol", "misconfig"), [("5", "acl"), ("5", "size"), ("3.1.1", "acl"), ("3.1.1", "size")])
def test_row16_acl_or_size_limit_misconfiguration_surfaces_and_keeps_the_data(
        make_pipeline: Callable[..., Pipeline], broker: MosquittoBroker, tmp_path: Path, figures: Figures,
        caplog: pytest.LogCaptureFixture, protocol: str, misconfig: str) -> None:
    caplog.set_level(logging.WARNING, logger="bridge")
    if misconfig == "acl":
        (tmp_path / "acl").write_text(DENY_DATA_ACL)
        wrong = f"acl_file {tmp_path / 'acl'}\n"
    else:
        wrong = f"message_size_limit {SIZE_LIMIT}\n"
    pipe = make_pipeline(protocol=protocol, interval=0.01, ppc=50).start()
    run_id = pipe.start_run("misconfigured")
    pipe.wait_logged(200)
    good = broker.extra_config
    broker.extra_config = good + wrong  # an operator's config change, applied by a restart
    broker.restart()
    since = time.monotonic()
    if protocol == "5" and misconfig == "acl":
        seen = lambda s: s["publisher"]["rejected"] > 0  # noqa: E731
    elif protocol == "5":
        seen = lambda s: s["publisher"]["last_disconnect"] == "Protocol error"  # noqa: E731
    else:
        seen = lambda s: s["publisher"]["resends"] > 0  # noqa: E731
    at, status = wait_for(lambda: pipe.watch.first(BRIDGE_STATUS, seen, since=since), timeout=60,
                          what="the misconfiguration to show in the bridge's status")
    pipe.wait_logged(500)
    outbox = pipe.recorded.outbox
    held, last = outbox.depth(), pipe.last_seq()
    assert outbox.acked_seq < last, "the data got through the misconfigured broker"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("bridge")]
    broker.extra_config = good  # the operator fixes the config
    broker.restart()
    fixed = time.monotonic()
    pipe.wait_connected()
    stop_seq = pipe.stop_run()
    pipe.wait_acked(stop_seq, timeout=120)
    drain = time.monotonic() - fixed
    result = pipe.finish(run_id, stop_seq)
    surfaced = status["publisher"]
    what = "ACL denies the data topic" if misconfig == "acl" else f"message_size_limit {SIZE_LIMIT}"
    figures.record(row=16, fault=f"MQTT {protocol}: {what}", shown_in_status_s=round(at - since, 2),
                   held_in_outbox=held, status_publisher=surfaced, status_outbox_depth=status["outbox"]["depth"],
                   log_warnings=len(errors), log_sample=sorted(set(errors))[:3],
                   drain_after_fix_s=round(drain, 2), **result)
    if protocol == "5" and misconfig == "acl":
        assert "Not authorized (0x87)" in surfaced["last_rejection"], surfaced
        assert any("refused a message: Not authorized (0x87)" in line for line in errors), errors
    elif protocol == "5":
        # Mosquitto answers PUBACK 0x95, a code MQTT v5 does not allow on a PUBACK: paho takes the packet
        # for a malformed one and drops the connection, again after every reconnect. The bridge shows
        # the disconnects and their reason; the data waits in the outbox.
        assert surfaced["last_disconnect"] and surfaced["rejected"] == 0, surfaced
        assert any("lost the broker" in line for line in errors), errors
    else:
        # MQTT 3.1.1 has no reason codes: the broker acknowledged and dropped; only the outbox shows it
        assert surfaced["rejected"] == 0 and status["outbox"]["depth"] > 0, status


# ---------------------------------------------------------------- row 18: an exception in a paho callback


class Flaky:
    """Wraps a method at class level (before the objects are built, since paho is handed bound methods):
    once armed, it raises ``left`` times instead of running, then behaves again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
        self.left = 0
        self.raised = 0
        original = getattr(cls, name)

        def flaky(instance: Any, *args: Any) -> Any:
            if self.left > 0:
                self.left -= 1
                self.raised += 1
                raise RuntimeError(f"injected failure in {cls.__name__}.{name}")
            return original(instance, *args)

        monkeypatch.setattr(cls, name, flaky)

    def arm(self, times: int) -> None:
        self.left = times


def raise_once(callback: Any, what: str) -> Callable[..., None]:
    """A callback that raises (unguarded, into paho's network thread) the first time it is called."""
    fired: list[bool] = []

    def failing(*args: Any) -> None:
        if not fired:
            fired.append(True)
            raise RuntimeError(f"injected failure escaping {what}")
        callback(*args)

    return failing


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the threads we kill
def test_row18_exceptions_in_paho_callbacks_are_detected_and_recovered(
        make_pipeline: Callable[..., Pipeline], figures: Figures, monkeypatch: pytest.MonkeyPatch) -> None:
    on_publish = Flaky(monkeypatch, Publisher, "_on_publish")
    on_message = Flaky(monkeypatch, Subscriber, "_on_message")
    pipe = make_pipeline().start()
    uploader = pipe.uploader
    assert uploader is not None
    publisher = pipe.recorded.service.publisher
    run_id = pipe.start_run("callbacks")
    pipe.wait_logged(100)
    outcomes: dict[str, dict[str, Any]] = {}

    def inject(name: str, act: Callable[[], None], detected: Callable[[Any], bool], topic: str) -> None:
        started = time.monotonic()
        act()
        at = wait_for(lambda: pipe.watch.first(topic, detected, since=started), what=f"{name} in the status")[0]
        pipe.wait_acked(pipe.last_seq(), timeout=60)  # everything logged by now got through
        outcomes[name] = {"detection_s": round(at - started, 2), "recovery_s": round(time.monotonic() - started, 2)}

    # 1. the bridge's on_publish raises, more often than it has batches in flight: their PUBACKs go unseen
    inject("bridge on_publish raises 8 times", lambda: on_publish.arm(8),
           lambda s: s["publisher"]["callback_errors"] >= 8, BRIDGE_STATUS)
    # 2. the uploader's on_message raises: those messages are never committed nor acknowledged
    inject("uploader on_message raises 3 times", lambda: on_message.arm(3),
           lambda s: s["mqtt"]["callback_errors"] >= 3, UPLOADER_STATUS)
    # 3. an exception escapes into paho's network threads (as from a callback nobody wrapped): they die
    inject("bridge network thread killed",
           lambda: setattr(publisher.client, "on_publish", raise_once(publisher.client.on_publish, "on_publish")),
           lambda s: s["publisher"]["loop_restarts"] >= 1, BRIDGE_STATUS)
    inject("uploader network thread killed",
           lambda: setattr(uploader.subscriber.client, "on_message",
                           raise_once(uploader.subscriber.client.on_message, "on_message")),
           lambda s: s["mqtt"]["loop_restarts"] >= 1, UPLOADER_STATUS)
    result = pipe.finish(run_id, pipe.stop_run())
    figures.record(row=18, fault="exceptions injected into paho callbacks (bridge and uploader)",
                   injections=outcomes, **result)

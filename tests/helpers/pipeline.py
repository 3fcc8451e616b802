"""The whole chain in this process for a fault test: simulated gauges -> bridge -> broker -> uploader -> store.

For the fault-matrix rows in which the broker, the network or a callback fails but the bridge's
process survives, the bridge runs here as a :class:`~tests.helpers.uploader.RecordingBridge`, so
its recorded log is the exact ground truth, and the uploader as an
:class:`~bridge.uploader.service.UploaderService` (stopped and started again at will, on the same
state directory). A :class:`~tests.helpers.watch.Watcher` on the broker itself (not through any
proxy) keeps the statuses and the broker's dropped counter.

:meth:`Pipeline.finish` is the row's verdict, "nothing lost" as docs/design.md section 12 defines it: the
run's stream holds exactly the readings the bridge logged for it, each once, in order; the spool
drained; the outbox acknowledged past the stop marker; the broker dropped nothing.
"""

from __future__ import annotations

import copy
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.config import Config, parse_config
from bridge.edge.publisher import PublisherSettings
from bridge.uploader.service import UploaderService, UploaderSettings
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.uploader import (
    FAST_PUBLISHER,
    RecordingBridge,
    assert_spool_drained,
    assert_store_holds_run,
    chamber_config,
    finalized,
    wait_for,
)
from tests.helpers.watch import Watcher
from tests.system.test_uploader import FAST_UPLOADER, start_run, stop_run

SITE = "chamber-u"
BRIDGE_STATUS = f"lab/{SITE}/status"
UPLOADER_STATUS = "lab/uploader/status"


def with_port(raw: dict[str, Any], port: int | None, **mqtt: Any) -> dict[str, Any]:
    """A copy of the raw config whose clients reach the broker on ``port`` (a proxy) with other mqtt keys."""
    raw = copy.deepcopy(raw)
    if port is not None:
        raw["mqtt"]["port"] = port
    raw["mqtt"].update(mqtt)
    return raw


class Pipeline:
    """One chamber's chain in this process. ``bridge_port`` / ``uploader_port``: reach the broker another
    way (a fault proxy); ``mqtt``: other keys of the ``mqtt`` section (``keepalive``, ``protocol``)."""

    def __init__(self, tmp: Path, broker: MosquittoBroker, gauges: list[tuple[TPGSimulator, TcpServer]], *,
                 ppc: int = 10, interval: float = 0.02, bridge_port: int | None = None,
                 uploader_port: int | None = None, publisher: PublisherSettings = FAST_PUBLISHER,
                 uploader_settings: UploaderSettings = FAST_UPLOADER, **mqtt: Any) -> None:
        self.tmp = tmp
        self.broker = broker
        self.ppc = ppc
        self.raw = chamber_config(broker, gauges, tmp, interval=interval, points_per_chunk=ppc)
        self.raw["mqtt"].update(mqtt)
        self.bridge_raw = with_port(self.raw, bridge_port)
        self.uploader_raw = with_port(self.raw, uploader_port)
        self.store = tmp / "store"
        self.uploader_state = tmp / "uploader-state"
        self.publisher_settings = publisher
        self.uploader_settings = uploader_settings
        self.watch = Watcher(broker, [BRIDGE_STATUS, UPLOADER_STATUS])
        wait_for(self.watch.client.is_connected, what="the watcher to connect")
        self.bridge: RecordingBridge | None = None
        self.uploader: UploaderService | None = None

    # ------------------------------------------------------------ parts

    def start_bridge(self) -> RecordingBridge:
        self.bridge = RecordingBridge(parse_config(self.bridge_raw), self.publisher_settings).start()
        return self.bridge

    def start_uploader(self, configure: Callable[[UploaderService], None] | None = None) -> UploaderService:
        """A new UploaderService on the same state; ``configure`` may adjust it before it connects."""
        self.uploader = UploaderService(self.uploader_config(), settings=self.uploader_settings)
        if configure is not None:
            configure(self.uploader)
        self.uploader.start()
        return self.uploader

    def uploader_config(self) -> Config:
        return parse_config(self.uploader_raw)

    def stop_uploader(self) -> None:
        if self.uploader is not None:
            self.uploader.stop()
            self.uploader = None

    def start(self, configure: Callable[[UploaderService], None] | None = None) -> Pipeline:
        """The uploader first, subscribed before the bridge publishes (else the first entries find no
        subscriber and wait for the bridge's resend after ``ack_timeout``)."""
        uploader = self.start_uploader(configure)
        wait_for(uploader.subscriber.connected.is_set, what="the uploader to connect")
        time.sleep(0.3)  # its SUBSCRIBE reaches the broker
        self.start_bridge()
        return self

    @property
    def recorded(self) -> RecordingBridge:
        assert self.bridge is not None, "the bridge is not running"
        return self.bridge

    # ------------------------------------------------------------ runs (commands travel the bridge's way)

    def start_run(self, name: str = "fault-run") -> str:
        return start_run(self.bridge_raw, name=name)

    def stop_run(self) -> int:
        return stop_run(self.bridge_raw)

    def logged(self) -> int:
        """Entries the bridge has logged so far."""
        return len(self.recorded.recorded.entries)

    def wait_logged(self, more: int, timeout: float = 30.0) -> int:
        """Wait until ``more`` further entries are logged; the count then."""
        target = self.logged() + more
        return int(wait_for(lambda: self.logged() >= target and self.logged(), timeout=timeout,
                            what=f"{more} more readings logged"))

    def wait_acked(self, seq: int, timeout: float = 60.0) -> float:
        """Wait until the outbox is acknowledged through ``seq``; the time it took (s)."""
        started = time.monotonic()
        wait_for(lambda: self.recorded.outbox.acked_seq >= seq, timeout=timeout,
                 what=f"the outbox to be acknowledged through seq {seq}")
        return time.monotonic() - started

    def wait_connected(self, timeout: float = 60.0) -> None:
        """Wait until the bridge (and the uploader, if running) are connected: commands reach the bridge only then."""
        publisher, uploader = self.recorded.service.publisher, self.uploader
        wait_for(lambda: publisher.connected and (uploader is None or uploader.subscriber.connected.is_set()),
                 timeout=timeout, what="the bridge and the uploader to be connected")

    def last_seq(self) -> int:
        self.recorded.outbox.flush()
        return self.recorded.outbox.last_seq or 0

    # ------------------------------------------------------------ figures

    def spool_duplicates(self) -> int:
        """Entries the uploader's spool received again and dropped (dedupe hits), over every source."""
        path = self.uploader_state / "spool.sqlite"
        if not path.exists():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (duplicates,) = db.execute("SELECT coalesce(sum(duplicates), 0) FROM sources").fetchone()
        finally:
            db.close()
        return int(duplicates)

    # ------------------------------------------------------------ the verdict

    def finish(self, run_id: str, stop_seq: int, timeout: float = 60.0, *,
               done: Callable[[], bool] | None = None,
               verify: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Wait for the run's stream, stop everything, assert nothing lost; the figures every row reports.

        The run's stream is in the local store unless ``done`` (the stream is finalized at the sink)
        and ``verify`` (given the run's logged readings, assert the sink holds exactly them; figures)
        say where else to look.
        """
        bridge = self.recorded
        wait_for(done or (lambda: finalized(self.store, run_id)), timeout=timeout,
                 what=f"run {run_id} to be finalized")
        wait_for(lambda: bridge.outbox.acked_seq >= stop_seq, timeout=timeout,
                 what="the outbox to be acknowledged past the run")
        time.sleep(1.2)  # one more $SYS period: the dropped counter as of now
        bridge.stop()  # first, while the uploader still acknowledges what it publishes on the way out
        self.stop_uploader()
        readings = bridge.recorded.run(run_id)
        if verify is None:
            doc = assert_store_holds_run(self.store, run_id, readings, self.ppc)
            assert doc["report"]["complete"], f"run {run_id} has gaps: {doc['gaps']}"
            figures: dict[str, Any] = {}
        else:
            figures = verify(readings)
        assert_spool_drained(self.uploader_state, stop_seq, SITE)
        assert bridge.outbox.acked_seq >= stop_seq
        dropped = self.watch.dropped()
        assert dropped == 0, f"the broker dropped {dropped} messages"
        return {"lost": 0, "readings": len(readings), "duplicates_deduped": self.spool_duplicates(),
                "broker_dropped": dropped, "resends": bridge.service.publisher.resends, **figures}

    def close(self) -> None:
        """Tear down whatever is still running (after a failure too)."""
        if self.uploader is not None:
            self.uploader.stop()
            self.uploader = None
        if self.bridge is not None and not self.bridge.service.stopped.is_set():
            self.bridge.stop()
        self.watch.close()


class Sampler:
    """Calls ``probe`` every ``interval`` seconds in a thread and keeps (monotonic time, value)."""

    def __init__(self, probe: Callable[[], Any], interval: float = 0.02) -> None:
        self.probe = probe
        self.samples: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._interval = interval
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.samples.append((time.monotonic(), self.probe()))

    def first(self, condition: Callable[[Any], bool], since: float = 0.0) -> float | None:
        """When ``condition`` first held at or after ``since`` (monotonic), None if never."""
        return next((at for at, value in list(self.samples) if at >= since and condition(value)), None)

    def peak(self) -> Any:
        return max((value for _, value in self.samples), default=None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

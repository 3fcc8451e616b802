"""One chamber on one machine for a fault test whose services run as processes, with witnesses outside them.

:class:`Scene` holds a private Mosquitto, simulated gauges that log what they serve
(tests/helpers/checker.py), a config for both services, ``chamber-bridge poll`` and
``chamber-bridge upload`` as processes (tests/helpers/processes.py), a tap on the data topic
feeding a :class:`~tests.helpers.checker.CommittedLog`, and a :class:`~tests.helpers.watch.Watcher`
on both status topics. It starts, kills and restarts the processes; the test decides when.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.helpers.ack_subscriber import AckingSubscriber
from tests.helpers.checker import CommittedLog, assert_served_in_order, read_outbox
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.pipeline import BRIDGE_STATUS, SITE, UPLOADER_STATUS
from tests.helpers.processes import BridgeProcess, UploaderProcess, write_config
from tests.helpers.uploader import assert_spool_drained, assert_store_holds_run, chamber_config, manifest, wait_for
from tests.helpers.watch import Watcher

__all__ = ["BRIDGE_STATUS", "SITE", "UPLOADER_STATUS", "Scene"]


class Scene:
    def __init__(self, tmp: Path, broker: MosquittoBroker, gauges: list[tuple[TPGSimulator, TcpServer]], *,
                 ppc: int = 10, interval: float = 0.05, grace: float = 3600.0, mode: str | None = None,
                 channels: list[int] | None = None, bridge_state: Path | None = None,
                 uploader_state: Path | None = None, sink: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        self.broker = broker
        self.gauges = gauges
        self.ppc = ppc
        self.raw = chamber_config(broker, gauges, tmp, interval=interval, points_per_chunk=ppc, grace=grace, sink=sink)
        for instrument in self.raw["bridge"]["instruments"]:
            if mode is not None:
                instrument["options"]["mode"] = mode
            if channels is not None:
                instrument["options"]["channels"] = channels
        if bridge_state is not None:
            self.raw["bridge"]["state_dir"] = str(bridge_state)
        if uploader_state is not None:
            self.raw["uploader"]["state_dir"] = str(uploader_state)
        self.bridge_state = Path(self.raw["bridge"]["state_dir"])
        self.uploader_state = Path(self.raw["uploader"]["state_dir"])
        self.store = tmp / "store"
        self.config = write_config(self.raw, tmp)
        self.tap = AckingSubscriber(broker.host, broker.port, "lab", SITE, client_id="wire-tap")
        self.tap.acking = False
        self.truth = CommittedLog(self.tap)
        self.watch = Watcher(broker, [BRIDGE_STATUS, UPLOADER_STATUS])
        wait_for(lambda: self.tap.client.is_connected() and self.watch.client.is_connected(),
                 what="the tap and the watcher to connect")
        time.sleep(0.2)  # their subscriptions reach the broker before anything is published
        self.bridge: BridgeProcess | None = None
        self.uploader: UploaderProcess | None = None
        self._uploader_starts = 0

    @property
    def outbox_path(self) -> Path:
        return self.bridge_state / "outbox.sqlite"

    @property
    def sims(self) -> dict[str, TPGSimulator]:
        return {f"gauge{i}": sim for i, (sim, _) in enumerate(self.gauges, start=1)}

    # ------------------------------------------------------------ processes

    def write_config(self) -> None:
        write_config(self.raw, self.tmp)

    def start_bridge(self, crash_at: str | None = None, env: Mapping[str, str] | None = None,
                     wait: bool = True) -> BridgeProcess:
        """``chamber-bridge poll``; with ``wait``, returns once its status says online (it takes commands)."""
        since = time.monotonic()
        self.bridge = BridgeProcess(self.config, self.tmp / "bridge.log", crash_at=crash_at, env=env)
        if wait:
            bridge = self.bridge
            wait_for(lambda: bridge.died() or self.watch.first(BRIDGE_STATUS, lambda s: s["state"] == "online",
                                                               since=since), timeout=60, what="the bridge online")
            assert not bridge.died(), f"the bridge exited: {bridge.log_tail()}"
        return self.bridge

    def start_uploader(self, env: Mapping[str, str] | None = None, wait: bool = True) -> UploaderProcess:
        """``chamber-bridge upload``; with ``wait``, returns once it has subscribed."""
        self._uploader_starts += 1
        self.uploader = UploaderProcess(self.config, self.tmp / "uploader.log", env=env)
        if wait:
            uploader, starts = self.uploader, self._uploader_starts
            wait_for(lambda: uploader.died() or uploader.log_text().count("uploader subscribed") >= starts,
                     timeout=60, what="the uploader to subscribe")
            assert not uploader.died(), f"the uploader exited: {uploader.log_tail()}"
        return self.uploader

    def bridge_status(self) -> Any:
        return self.watch.latest(BRIDGE_STATUS)

    def close(self) -> None:
        for process in (self.bridge, self.uploader):
            if process is not None and not process.died():
                process.kill()
        self.tap.close()
        self.watch.close()

    # ------------------------------------------------------------ the verdict

    def assert_nothing_lost(self, run_id: str) -> dict[str, Any]:
        """Nothing lost for a run, as docs/design.md section 12 defines it, with the bridge's log seen from outside:
        the finalized stream holds exactly the committed readings of the run (each once, in order),
        each value was served by its instrument, the report is complete. Returns figures."""
        readings = self.truth.run(run_id)
        doc = assert_store_holds_run(self.store, run_id, readings, self.ppc)
        assert doc["report"]["complete"], f"run {run_id} has gaps: {doc['gaps']}"
        served = assert_served_in_order(self.store, run_id, self.sims)
        return {"readings": len(readings), **served}

    def assert_drained(self, through_seq: int) -> None:
        """After both services stopped: the spool drained through ``through_seq``, the outbox acked past it."""
        assert_spool_drained(self.uploader_state, through_seq)
        outbox = read_outbox(self.outbox_path)
        assert outbox.acked_seq >= through_seq, f"outbox acked {outbox.acked_seq} < {through_seq}"

    def finalized(self, run_id: str) -> bool:
        return bool(manifest(self.store, run_id).get("finalized"))

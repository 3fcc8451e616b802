"""``chamber-bridge poll``: pollers -> outbox -> publisher, with runs and status.

Every reading is written to the outbox before anything is published, so a broker outage, a
network cut or this process dying costs nothing that was committed (docs/design.md section 3).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from bridge.config import Config
from bridge.edge.baseline import Baselines
from bridge.edge.clock_sync import ntp_synchronized
from bridge.edge.conversion import UnitConversion
from bridge.edge.outbox import Outbox
from bridge.edge.polling.pollers import InstrumentStatus, Pollers, Snapshot
from bridge.edge.publisher import Publisher, PublisherSettings
from bridge.edge.runs import Runs
from bridge.edge.triggers import AutoRuns
from bridge.model import Reading
from bridge.wire import contract

log = logging.getLogger("bridge.edge.service")

OUTBOX_FILE = "outbox.sqlite"
#: how often the NTP state is asked again (it costs a subprocess)
CLOCK_CHECK_INTERVAL = 60.0
#: how often the automatic-run trigger looks without readings (max_duration, the status of its conditions)
TRIGGER_TICK = 1.0


class BridgeService:
    def __init__(self, config: Config, settings: PublisherSettings | None = None) -> None:
        self.config = config
        config.bridge.state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(config.bridge.state_dir / OUTBOX_FILE)
        runs = config.bridge.runs
        self.runs = Runs(self.outbox, resume_within=runs.resume_within, auto_configured=runs.auto is not None)
        self.conversion = UnitConversion(config.bridge.units.targets())
        self.pollers = Pollers(config.bridge.instruments, sink=self._store, on_change=self._instrument_changed,
                               on_baseline=self._connected)
        self.baselines = Baselines(self.pollers, self.outbox, self._run_id)
        if config.bridge.instruments:  # a bridge without instruments has nothing to describe
            self.runs.baselines = self.baselines
        self.publisher = Publisher(config.mqtt, config.site, self.outbox, status=self.status,
                                   commands=self.runs.handle, run_state=self.runs.state, settings=settings)
        self.runs.on_change.append(self.publisher.status_changed)
        self._clock: tuple[float, bool | None] = (0.0, None)
        self.stopped = threading.Event()
        #: the trigger of ``bridge.runs.auto``, made in :meth:`start` once a crashed run is dealt with
        self.triggers: AutoRuns | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()

    def _store(self, readings: list[Reading]) -> None:
        """One poll of one instrument: every reading carries the poll's mark ``p`` (docs/payload.md).

        Drivers stamp each exchange, so the channels of one poll can differ by milliseconds; the
        uploader needs to know which readings are one poll (one point of the flow) all the same.
        The readings are converted to ``bridge.units`` first, so the log and the automatic-run
        conditions see one unit per kind: a threshold in mbar holds after the gauge is set to Torr.
        """
        poll = readings[0].timestamp if readings else 0.0
        readings = self.conversion.apply_all(readings)  # before the trigger: conditions judge converted values
        seqs = []
        for reading in readings:
            body = contract.reading_body(reading)
            body["p"] = poll
            seqs.append(self.outbox.append("reading", body, reading.timestamp))
        triggers = self.triggers
        if triggers is not None:
            triggers.observe(readings, seqs)

    def _instrument_changed(self, status: InstrumentStatus) -> None:
        self.publisher.status_changed()

    def _connected(self, instrument: str, snapshot: Snapshot) -> None:
        self.baselines.connected(instrument, snapshot)

    def _run_id(self) -> str | None:
        run = self.runs.current
        return None if run is None else str(run.get("run_id"))

    def _ntp(self) -> bool | None:
        checked, value = self._clock
        if time.monotonic() - checked > CLOCK_CHECK_INTERVAL:
            value = ntp_synchronized()
            self._clock = (time.monotonic(), value)
        return value

    def status(self) -> dict[str, Any]:
        oldest = self.outbox.oldest_unacked_time()
        overflow = self.outbox.overflow
        return {
            "instruments": [
                {"name": s.name, "available": s.available, "last_error": s.last_error, "reads": s.reads,
                 "failures": s.failures, "missed_deadlines": s.missed_deadlines}
                for s in self.pollers.status()
            ],
            "outbox": {
                "epoch": self.outbox.epoch, "depth": self.outbox.depth(), "acked_seq": self.outbox.acked_seq,
                "last_seq": self.outbox.last_seq,
                "oldest_unacked_age": None if oldest is None else max(0.0, time.time() - oldest),
                "overflow": overflow.alarm, "refused_readings": overflow.refused,
                "commit_error": self.outbox.commit_error,
                # acks refused as forged or stale (another epoch, a seq never published): docs/security.md
                "refused_acks": self.publisher.refused_acks,
            },
            "clock": {"ntp_synchronized": self._ntp()},
            "run": self.runs.current,
            "mqtt": self.publisher.client.link.status(),
        }

    def start(self) -> None:
        self.runs.recover()
        auto = self.config.bridge.runs.auto
        if auto is not None:
            triggers = self.triggers = AutoRuns(auto, self.config.site, self.config.bridge.instruments, self.runs,
                                                on_change=self.runs.changed)
            self.runs.add_state_hook(lambda: {"auto_state": triggers.status()})
            self._ticker = threading.Thread(target=self._tick, name="auto-runs", daemon=True)
            self._ticker.start()
        self.publisher.start()
        self.pollers.start()
        log.info("bridge %s polling %d instruments; outbox epoch %s", self.config.site,
                 len(self.config.bridge.instruments), self.outbox.epoch)

    def _tick(self) -> None:
        while not self._stopping.wait(TRIGGER_TICK):
            triggers = self.triggers
            try:
                if triggers is not None:
                    triggers.tick(time.time())
            except Exception:  # the timer must outlive one bad look
                log.exception("the automatic-run trigger failed on its timer")

    def stop(self) -> None:
        """Stop polling, commit what was read, let the uploader catch up briefly, say offline."""
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        self.pollers.stop()
        self.outbox.flush()
        self.publisher.stop()
        self.outbox.close()
        self.stopped.set()

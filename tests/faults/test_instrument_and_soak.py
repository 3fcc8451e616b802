"""Fault matrix rows 20 and 21: an instrument misbehaves while the others go on; a soak with random faults.

Row 20 runs the chain in this process (tests/helpers/pipeline.py: the bridge's log recorded is
the exact ground truth) with three gauges on their own buses; the third is unplugged and plugged
back (its TCP server stopped and started on the same port), sends garbage, falls silent and
answers too slowly. The other two must keep exact sample counts; the status must show the fault
and the recovery. tests/edge/test_pollers.py shows the same at the poller's level.

Row 21 is the soak: nominal load (10 instruments x 3 channels at 10 Hz) through the real
processes (tests/helpers/scene.py), random faults from the rows above, every run checked
against what the gauges served and the bridge committed (tests/helpers/checker.py), and the
resident memory of bridge and uploader sampled from /proc to give its slope (recorded, not
asserted). Short versions run by default; the long soak is marked ``slow``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import TcpServer
from tests.faults.conftest import Figures
from tests.helpers.checker import served_gauges
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.pipeline import BRIDGE_STATUS, Pipeline
from tests.helpers.processes import ServiceProcess
from tests.helpers.scene import Scene
from tests.helpers.uploader import expected_points, tpg_gauges, wait_for
from tests.helpers.watch import sys_broker
from tests.system.test_uploader import start_run, stop_run


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = sys_broker(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.thaw()
        broker.kill()


# ---------------------------------------------------------------- row 20: one instrument misbehaves

INTERVAL = 0.1
PHASE = 2.0


def instrument(status: Any, name: str) -> dict[str, Any]:
    return next(i for i in status["instruments"] if i["name"] == name)


@dataclass
class Gauge3:
    """The misbehaving gauge and its server, which can be unplugged and plugged back on the same port."""

    sim: TPGSimulator
    server: TcpServer

    def unplug(self) -> None:
        self.server.stop()

    def replug(self) -> None:
        sim = self.sim
        self.server = TcpServer(lambda: sim, port=self.server.port).start()


def garbage_for(sim: TPGSimulator, seconds: float) -> None:
    """Line noise in front of every reply for a while."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sim.garbage = b"\x8f#@!~\x13"
        time.sleep(0.02)
    sim.garbage = b""


def test_a_misbehaving_instrument_costs_the_others_no_sample_and_recovers(
        tmp_path: Path, broker: MosquittoBroker, figures: Figures) -> None:
    gauges = tpg_gauges(3)
    faulty = Gauge3(*gauges[2])
    pipe = Pipeline(tmp_path, broker, gauges, interval=INTERVAL)
    phases: dict[str, dict[str, Any]] = {}
    try:
        pipe.start()
        run_id = pipe.start_run("misbehaving")
        pipe.wait_logged(100)

        def phase(name: str, fault: Callable[[], None], fix: Callable[[], None], goes_down: bool) -> None:
            before = instrument(pipe.bridge.service.status(), "gauge3")  # type: ignore[union-attr]
            began = time.monotonic()
            fault()
            seen: dict[str, Any] = {}
            if goes_down:
                down = wait_for(lambda: pipe.watch.first(BRIDGE_STATUS,
                                                         lambda s: not instrument(s, "gauge3")["available"],
                                                         since=began), what=f"gauge3 shown unavailable ({name})")
                seen["shown_down_s"] = round(down[0] - began, 2)
                seen["error"] = instrument(down[1], "gauge3")["last_error"]
            time.sleep(max(0.0, PHASE - (time.monotonic() - began)))
            fixed = time.monotonic()
            fix()
            up = wait_for(lambda: pipe.watch.first(BRIDGE_STATUS, lambda s: instrument(s, "gauge3")["available"]
                                                   and instrument(s, "gauge3")["reads"] > before["reads"] + 5,
                                                   since=fixed), timeout=60, what=f"gauge3 back ({name})")
            seen["recovery_s"] = round(up[0] - fixed, 2)
            after = instrument(pipe.bridge.service.status(), "gauge3")  # type: ignore[union-attr]
            seen["failures"] = after["failures"] - before["failures"]
            phases[name] = seen

        phase("unplugged", faulty.unplug, faulty.replug, goes_down=True)
        noise = threading.Thread(target=garbage_for, args=(faulty.sim, PHASE))
        phase("garbage", noise.start, noise.join, goes_down=False)
        phase("silent", lambda: setattr(faulty.sim, "silent", True), lambda: setattr(faulty.sim, "silent", False),
              goes_down=True)
        phase("slow replies", lambda: setattr(faulty.sim, "reply_delay", 0.5),
              lambda: setattr(faulty.sim, "reply_delay", 0.0), goes_down=True)
        healthy = {s["name"]: s for s in pipe.bridge.service.status()["instruments"]}  # type: ignore[union-attr]
        stop_seq = pipe.stop_run()
        result = pipe.finish(run_id, stop_seq)
        readings = pipe.recorded.recorded.run(run_id)
    finally:
        pipe.close()
        for _, server in gauges[:2]:
            server.stop()
        faulty.server.stop()
    counts = {}
    for flow, points in expected_points(readings).items():
        marks = [point[0].get("p", point[0]["t"]) for point in points]
        expected = round((marks[-1] - marks[0]) / INTERVAL) + 1
        counts[flow] = {"samples": len(points), "schedule": expected,
                        "missed_deadlines": healthy[flow]["missed_deadlines"]}
        if flow != "gauge3":
            assert abs(len(points) - expected) <= 1, f"{flow}: {len(points)} samples, {expected} on its schedule"
            assert all(len(point) == 2 for point in points), f"{flow}: a poll lost a channel"
            assert healthy[flow]["failures"] == 0, f"{flow} failed while gauge3 misbehaved"
    assert counts["gauge3"]["samples"] < counts["gauge3"]["schedule"], "gauge3 never missed a sample"
    figures.record(row=20, fault="gauge3 (own bus) unplugged/replugged, garbage, silent, replies 0.5 s late "
                   f"(timeout 0.3 s), {PHASE:g} s each", phases=phases, counts=counts, **result)


# ---------------------------------------------------------------- row 21: the soak

NOMINAL_INSTRUMENTS = 10


@dataclass
class Memory:
    """VmRSS of the services sampled every ``interval`` s; one series per process (a restart starts another)."""

    scene: Scene
    interval: float = 1.0
    series: dict[str, dict[int, list[tuple[float, int]]]] = field(default_factory=lambda: {"bridge": {},
                                                                                           "uploader": {}})
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Memory:
        threading.Thread(target=self._run, name="rss-sampler", daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, process in (("bridge", self.scene.bridge), ("uploader", self.scene.uploader)):
                rss = process.rss_kib() if isinstance(process, ServiceProcess) else None
                if rss is not None and process is not None:
                    self.series[name].setdefault(process.pid, []).append((time.monotonic(), rss))

    def stop(self) -> None:
        self._stop.set()

    def figures(self) -> dict[str, Any]:
        """Per service: peak RSS, and the slope (KiB/min, least squares) of each process that lived 20 s or more."""
        out: dict[str, Any] = {}
        for name, by_pid in self.series.items():
            slopes = [round(slope(samples) * 60, 1) for samples in by_pid.values()
                      if len(samples) >= 10 and samples[-1][0] - samples[0][0] >= 20]
            out[name] = {"peak_kib": max((rss for s in by_pid.values() for _, rss in s), default=None),
                         "slopes_kib_per_min": slopes, "processes": len(by_pid)}
        return out


def slope(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var if var else 0.0


class Soak:
    """Faults from the rows above, one at a time; each returns once the chain is whole again."""

    def __init__(self, scene: Scene, rng: random.Random) -> None:
        self.scene = scene
        self.rng = rng
        self.runs: list[str] = []
        self.done: list[str] = []

    def new_run(self) -> None:
        self.runs.append(start_run(self.scene.raw, name=f"soak-{len(self.runs)}"))

    def back_online(self, since: float) -> None:
        """Wait for a status the bridge published after ``since`` (Unix time; a retained one restored by the
        broker is older): it is connected and subscribed again, so commands reach it."""
        wait_for(lambda: self.scene.watch.first(BRIDGE_STATUS, lambda s: s["state"] == "online" and s["time"] > since),
                 timeout=60, what="the bridge back on the broker")

    def broker_restart(self) -> None:  # row 1
        since = time.time()
        self.scene.broker.restart(delay=self.rng.uniform(0.1, 2.0))
        self.back_online(since)

    def broker_crash(self) -> None:  # row 2: what it held for subscribers is gone; the outbox replays it
        scene = self.scene
        scene.broker.kill()
        time.sleep(0.5)
        scene.truth.add_spool(scene.uploader_state)  # what the tap may have missed in flight
        time.sleep(self.rng.uniform(0.0, 2.0))
        since = time.time()
        scene.broker.start()
        self.back_online(since)
        time.sleep(1.0)
        scene.truth.add_spool(scene.uploader_state)  # published before the tap was back

    def uploader_crash(self) -> None:  # rows 7, 8
        assert self.scene.uploader is not None
        self.scene.uploader.kill()
        self.scene.truth.add_spool(self.scene.uploader_state)
        time.sleep(self.rng.uniform(0.0, 2.0))
        self.scene.start_uploader()

    def uploader_stall(self) -> None:  # row 6: a slow (here: stopped) uploader, the bridge keeps the data
        assert self.scene.uploader is not None
        self.scene.uploader.freeze()
        time.sleep(self.rng.uniform(1.0, 3.0))
        self.scene.uploader.thaw()

    def bridge_crash(self) -> None:  # row 10: the run resumes at the restart (within bridge.runs.resume_within)
        assert self.scene.bridge is not None
        self.scene.bridge.kill()
        self.scene.truth.add_outbox(self.scene.outbox_path)
        self.scene.start_bridge()

    def instrument_silent(self) -> None:  # row 20
        sim = self.rng.choice(list(self.scene.sims.values()))
        sim.silent = True
        time.sleep(self.rng.uniform(1.0, 3.0))
        sim.silent = False

    def any(self, broker_crash: bool = True) -> None:
        faults = [self.broker_restart, self.uploader_crash, self.uploader_stall, self.bridge_crash,
                  self.instrument_silent]
        if broker_crash:
            faults.append(self.broker_crash)
        fault = self.rng.choice(faults)
        fault()
        self.done.append(fault.__name__)


def soak(tmp_path: Path, broker: MosquittoBroker, figures: Figures, seconds: float, every: tuple[float, float],
         seed: int, broker_crash: bool = True) -> None:
    gauges = served_gauges(NOMINAL_INSTRUMENTS, model="TPG366")
    scene = Scene(tmp_path, broker, gauges, interval=0.1, mode="all", channels=[1, 2, 3], ppc=100)
    memory = Memory(scene)
    try:
        scene.start_uploader()
        scene.start_bridge()
        memory.start()
        chaos = Soak(scene, random.Random(seed))
        chaos.new_run()
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            time.sleep(chaos.rng.uniform(*every))
            chaos.any(broker_crash)
        scene.truth.add_spool(scene.uploader_state)
        stop_seq = stop_run(scene.raw)
        wait_for(lambda: all(scene.finalized(run_id) for run_id in chaos.runs), timeout=180,
                 what="every run of the soak finalized")
        soaked = time.monotonic() - began
        memory.stop()
        assert scene.bridge is not None and scene.bridge.stop() == 0, scene.bridge.log_tail() if scene.bridge else ""
        assert scene.uploader is not None and scene.uploader.stop() == 0, scene.uploader.log_tail()
        totals = {"readings": 0, "values_checked": 0, "served_not_stored": 0}
        for run_id in chaos.runs:
            for key, value in scene.assert_nothing_lost(run_id).items():
                totals[key] += value
        scene.assert_drained(stop_seq)
        assert scene.watch.dropped() == 0
        figures.record(row=21, fault=f"soak {soaked:.0f} s at nominal load ({NOMINAL_INSTRUMENTS} instruments x 3 "
                       f"channels at 10 Hz) with random faults", faults=chaos.done, runs=len(chaos.runs), lost=0,
                       readings_per_s=round(totals["readings"] / soaked, 1), **totals,
                       duplicates_on_wire=scene.tap.duplicates, broker_dropped=scene.watch.dropped(),
                       memory=memory.figures())
    finally:
        memory.stop()
        scene.close()
        for _, server in gauges:
            server.stop()


@pytest.mark.timeout(600)
def test_short_soak_at_nominal_load_with_random_faults(tmp_path: Path, broker: MosquittoBroker,
                                                        figures: Figures) -> None:
    # Without broker SIGKILLs: the checker's wire tap cannot see a batch a killed broker handed to the
    # uploader only, and confirmed chunks' readings have left the spool, so such a batch would be
    # reported as unseen although it is stored. Row 2's own test covers broker crashes.
    soak(tmp_path, broker, figures, seconds=30, every=(4.0, 6.0), seed=21, broker_crash=False)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_long_soak_at_nominal_load_with_random_faults(tmp_path: Path, broker: MosquittoBroker,
                                                       figures: Figures) -> None:
    soak(tmp_path, broker, figures, seconds=900, every=(15.0, 30.0), seed=22)

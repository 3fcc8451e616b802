"""A run's identity and configuration end to end, with real processes (issue 14, docs/store.md ``baseline``).

The simulated chamber in this process (every instrument on TCP), a private Mosquitto, and
``chamber-bridge poll``, ``upload``, ``start-run``, ``stop-run`` and ``runs show`` as processes.
In the middle of the run the gauge controller is switched from mbar to Torr on its front panel,
the pyrometer's emissivity is turned from 0.70 to 0.65 and the ion gauge controller stops
answering its identity queries: ``runs show`` flags the unit and the emissivity as changed and
names the refused queries, the ion gauge keeps being read, and with ``bridge.units`` the
pressures are stored in mbar throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.store.reader import RunStore, load_run
from simulators.chamber.mbe import SimulatedChamber
from tests.helpers.cli import run_cli
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.processes import BridgeProcess, UploaderProcess
from tests.helpers.uploader import finalized, manifest, wait_for
from tests.helpers.watch import Watcher


@pytest.fixture
def chamber() -> Iterator[SimulatedChamber]:
    with SimulatedChamber(seed=7) as chamber:
        chamber.pyrometer.set_emissivity(0.7)
        yield chamber


def config(chamber: SimulatedChamber, broker: MosquittoBroker, tmp: Path) -> dict[str, Any]:
    raw = chamber.config(site="chamber-b")
    raw["mqtt"] = {"host": broker.host, "port": broker.port, "keepalive": 5}
    raw["bridge"]["state_dir"] = str(tmp / "bridge-state")
    raw["bridge"]["units"] = {"pressure": "mbar"}
    raw["uploader"] = {"state_dir": str(tmp / "uploader-state"), "points_per_chunk": 5,
                       "client_id": "baseline-uploader", "sink": {"kind": "local", "path": str(tmp / "store")}}
    for instrument in raw["bridge"]["instruments"]:
        instrument["interval"] = 0.25
    return raw


def requests_since(log: list[tuple[str, bytes]], start: int, request: bytes) -> int:
    return sum(1 for direction, data in log[start:] if direction == "rx" and request in data)


def test_a_configuration_changed_mid_run_is_flagged_by_runs_show(
        chamber: SimulatedChamber, mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    raw = config(chamber, mosquitto, tmp_path)
    path = tmp_path / "chamber.yaml"
    path.write_text(yaml.safe_dump(raw))
    store = tmp_path / "store"
    watch = Watcher(mosquitto, ["lab/chamber-b/status"], client_id="baseline-watcher")
    uploader = UploaderProcess(path, tmp_path / "upload.log")
    bridge = BridgeProcess(path, tmp_path / "poll.log")
    try:
        wait_for(lambda: uploader.died() or "uploader subscribed" in uploader.log_text(), timeout=60,
                 what="the uploader to subscribe")
        wait_for(lambda: bridge.died() or watch.first("lab/chamber-b/status", lambda s: s["state"] == "online"),
                 timeout=60, what="the bridge online (it takes commands)")
        assert not bridge.died() and not uploader.died(), bridge.log_tail() + uploader.log_tail()
        started = run_cli("start-run", str(path), "--name", "GaN-21", "--timeout", "30")
        assert started.returncode == 0, started.stderr + bridge.log_tail()
        run_id = started.stdout.split()[1]
        wait_for(lambda: (store / run_id / "chunks").is_dir(), timeout=60, what="the run's first chunks")

        mark = len(chamber.tpg.log)
        switched = time.time()
        chamber.tpg.set_unit("Torr")  # the front panel, mid-run
        chamber.pyrometer.set_emissivity(0.65)
        chamber.mks.refuse_identity = True
        wait_for(lambda: requests_since(chamber.tpg.log, mark, b"UNI") >= 3, timeout=60,
                 what="the bridge to read the gauge controller in its new unit")

        stopped = run_cli("stop-run", str(path), "--timeout", "30")
        assert stopped.returncode == 0, stopped.stderr + bridge.log_tail()
        assert f"run {run_id} stopped (success)" in stopped.stdout
        wait_for(lambda: finalized(store, run_id), timeout=90, what="the run to be finalized")
    finally:
        watch.close()
        assert bridge.stop() == 0, bridge.log_tail()
        assert uploader.stop() == 0, uploader.log_tail()

    shown = run_cli("runs", "show", run_id, "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    head = next(line for line in lines if line.startswith("baseline: "))
    assert head == ("baseline: identity and configuration at the run's start and stop; 2 fields changed during "
                    "the run: main_gauge.configuration.unit, pyrometer.configuration.emissivity")
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines
            if line.startswith("  ") and len(line.split()) >= 4}
    assert rows[("main_gauge", "configuration.unit")] == ["mbar", "Torr", "CHANGED"]
    assert rows[("pyrometer", "configuration.emissivity")] == ["0.7", "0.65", "CHANGED"]
    assert rows[("main_gauge", "identity.model")] == ["TPG362", "TPG362"]
    assert rows[("ion_gauge", "identity.serial")] == ["937B12345", "-"], "refused at the stop: not read, not changed"
    assert rows[("cell_al", "identity.instrument_id")] == ["3504", "3504"]
    assert any(line.startswith("  refused at stop: ion_gauge SN?: SN? refused with NAK160") for line in lines)

    doc = json.loads(run_cli("runs", "show", run_id, "--store", str(store), "--json").stdout)
    assert set(doc["baseline"]) == {"start", "stop"}
    assert list(doc["baseline"]["start"]) == ["main_gauge", "ion_gauge", "pyrometer", "cell_ga", "cell_al",
                                              "heater_psu"]
    assert doc["report"]["baseline_changed"] == ["main_gauge.configuration.unit", "pyrometer.configuration.emissivity"]
    assert doc["report"]["complete"] is True
    assert manifest(store, run_id)["channels"]["ion_gauge/pressure_1"]["points"] > 0

    # bridge.units: every pressure stored in mbar, before and after the switch to Torr
    data = load_run(RunStore(store).find(run_id))
    gauge = data.series["main_gauge/pressure_1"]
    assert set(gauge.units) == {"mbar"}
    assert min(gauge.timestamps) < switched < max(gauge.timestamps), "points before and after the switch"
    assert all(1e-10 < value < 1e-5 for value in gauge.values), "values converted back, no factor 0.75 jump"
    assert not doc["report"]["units_changed"]

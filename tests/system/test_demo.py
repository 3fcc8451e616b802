"""``chamber-bridge demo`` as a newcomer runs it: one command, a finalized run and its plot.

The run is the automatic trigger's (opened and closed on the substrate temperature) and the
recipe's steps are annotations: both are checked in what the store keeps, not in what the demo
prints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.demo.command import START_WHEN, STOP_WHEN, recipe
from tests.helpers.uploader import wait_for

DEMO = [sys.executable, "-m", "bridge", "demo"]


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc), e.g. the private Mosquitto."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_the_demo_finalizes_a_complete_run_and_plots_it(tmp_path: Path, broker: str) -> None:
    store = tmp_path / "runs"
    result = subprocess.run([*DEMO, "--duration", "8", "--store", str(store), "--broker", broker],
                            capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert ("private Mosquitto" if broker == "mosquitto" else "embedded broker") in out
    assert "recipe: Ga shutter open: growth" in out and "run open | readings" in out
    assert "finalized, complete" in out
    [run_dir] = [p for p in store.iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["finalized"] and manifest["report"]["complete"] and manifest["exit_status"] == "success"
    assert manifest["stream_name"] == "demo-growth" and len(manifest["channels"]) >= 10
    assert manifest["physical_sample"] == "demo-sample-1" and manifest["tags"] == ["demo", "GaAs"]  # next-run's
    # opened and closed by the trigger, with the values that made each condition true
    assert manifest["trigger"] == "auto"
    start, stop = manifest["why"]["start"], manifest["why"]["stop"]
    assert start["expression"] == START_WHEN and start["values"]["pyrometer.temperature"] > 300.0
    assert stop["expression"] == STOP_WHEN and stop["values"]["pyrometer.temperature"] < 250.0
    assert f"opened by the trigger (auto): {START_WHEN}" in out and f"closed by the trigger (auto): {STOP_WHEN}" in out
    # the pre-roll reaches back before the heater ramp, so every step of the recipe is the run's
    report = manifest["report"]
    assert report["first_seq"] == report["pre_roll_from"] < report["start_seq"]
    events = manifest["events"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events) and report["events"] == len(events)
    notes = [(step.note, list(step.tags)) for step in recipe() if step.note is not None]
    assert [(e["text"], e["tags"]) for e in events if e["source"] == "cli"] == notes
    assert report["pre_roll_from"] < events[0]["seq"]
    auto = [e for e in events if e["source"] == "auto"]
    assert [e["text"].split(":")[0] for e in auto] == ["auto start", "auto stop"] and events[-1] == auto[-1]
    assert auto[0]["seq"] > report["start_seq"]
    for note, _ in notes:
        assert note in out
    # the summary names the instruments from the run's start baseline, as the manifest holds it
    start = manifest["baseline"]["start"]
    assert f"instruments ({len(start)}, identity at the run's start):" in out and len(start) == 6
    assert "main_gauge: vendor Pfeiffer Vacuum, model TPG362" in out
    assert "changed between start and stop: nothing" in out
    plot = store / f"{run_dir.name}.png"
    assert f"plot: {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    listed = subprocess.run([sys.executable, "-m", "bridge", "runs", "list", "--store", str(store)],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "demo-growth" in listed.stdout


def test_ctrl_c_leaves_no_stray_process_and_no_open_run(tmp_path: Path) -> None:
    """Interrupted while the trigger's run is open (from about 0.4 to 0.9 of the recipe): closed as abort."""
    store = tmp_path / "runs"
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen([*DEMO, "--duration", "30", "--store", str(store), "--broker", "mosquitto"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: "run open | readings" in log.read_text(), timeout=60, what="the demo's run to be open")
        broker_processes = children_of(demo.pid)
        assert broker_processes, "the demo should run its own Mosquitto"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130, log.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            demo.kill()
    for pid in broker_processes:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the demo"
    [run_dir] = [p for p in store.iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["finalized"] and manifest["exit_status"] == "abort", manifest
    assert "the demo was interrupted" in json.dumps(manifest["report"])
    # the trigger opened it; the interruption, not the stop condition, closed it
    assert manifest["trigger"] == "auto" and manifest["why"]["start"]["expression"] == START_WHEN
    assert manifest["why"].get("stop") is None

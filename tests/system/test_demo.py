"""``chamber-bridge demo`` as a newcomer runs it: one command, a finalized run and its plot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    plot = store / f"{run_dir.name}.png"
    assert f"plot: {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    listed = subprocess.run([sys.executable, "-m", "bridge", "runs", "list", "--store", str(store)],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "demo-growth" in listed.stdout


def test_ctrl_c_leaves_no_stray_process_and_no_open_run(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen([*DEMO, "--duration", "60", "--store", str(store), "--broker", "mosquitto"],
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

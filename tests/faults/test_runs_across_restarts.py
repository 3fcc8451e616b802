"""Runs across restarts, and annotations, with the services as real processes (issue 13, docs/runs.md).

The scene of tests/faults/test_process_faults.py (its fixtures, imported): ``chamber-bridge poll``
and ``upload`` as processes, a private Mosquitto, gauges whose every value is unique, and the
ground truth outside the bridge (the tap on the data topic and the outbox read while the bridge
is dead). A bridge SIGKILLed and restarted inside ``bridge.runs.resume_within`` keeps its run,
which finalizes ``success`` with the time down as a ``bridge_down`` gap and every committed
reading; one restarted later closes the run as ``abort`` at its last reading. Annotations go
through the CLI, the bridge's log, the broker and the uploader once each, whatever restarts.
"""

from __future__ import annotations

import json
import re
import time

from tests.faults import test_process_faults
from tests.faults.conftest import Figures
from tests.helpers.checker import stored_values
from tests.helpers.cli import run_cli
from tests.helpers.scene import BRIDGE_STATUS, Scene
from tests.helpers.uploader import manifest, wait_for
from tests.system.test_uploader import start_run, stop_run

# the scene of the process-fault rows: a broker with $SYS counters, unique-valued gauges, the services as processes
broker, gauges, scene = test_process_faults.broker, test_process_faults.gauges, test_process_faults.scene


def markers(scene: Scene, kind: str) -> list[tuple[int, dict]]:
    return [(seq, body) for seq, k, body in scene.truth.markers() if k == kind]


def back_online(scene: Scene, since: float) -> None:
    """The bridge published a status after ``since`` (Unix time): it is subscribed again and takes commands."""
    wait_for(lambda: scene.watch.first(BRIDGE_STATUS, lambda s: s["state"] == "online" and s["time"] > since),
             timeout=60, what="the bridge back on the broker")


def last_committed(scene: Scene, seq: int) -> tuple[str, float, dict]:
    """The entry at ``seq``, from the outbox snapshot or (trimmed there) the tap."""
    entry = wait_for(lambda: scene.truth.entries().get(seq), what=f"entry {seq} seen")
    assert isinstance(entry, tuple)
    return entry


def annotate(scene: Scene, text: str, *tags: str) -> int:
    """``chamber-bridge annotate`` in its own process; the event's seq from its answer."""
    args = [arg for tag in tags for arg in ("--tag", tag)]
    result = run_cli("annotate", str(scene.config), text, *args)
    assert result.returncode == 0, result.stderr
    found = re.search(r"\(seq (\d+)\)$", result.stdout.strip())
    assert found, result.stdout
    return int(found.group(1))


def test_a_bridge_killed_mid_run_and_restarted_after_3_s_resumes_the_run(scene: Scene, figures: Figures) -> None:
    scene.start_uploader()
    bridge = scene.start_bridge()
    run_id = start_run(scene.raw, name="resumed")
    wait_for(lambda: len(scene.tap.entries) > 100, what="readings in the run")
    bridge.kill()
    crashed = scene.truth.add_outbox(scene.outbox_path)  # every entry the bridge had committed and not trimmed
    assert crashed.open_run is not None and crashed.open_run["run_id"] == run_id
    last = last_committed(scene, crashed.last_seq)
    time.sleep(3.0)
    scene.start_bridge()
    wait_for(lambda: markers(scene, "run_resume"), what="the resume marker")
    wait_for(lambda: max(scene.tap.entries, default=0) > crashed.last_seq + 100, what="readings after the restart")
    stop_seq = stop_run(scene.raw)
    wait_for(lambda: scene.finalized(run_id), timeout=60, what="the resumed run to be finalized")
    assert scene.bridge is not None and scene.bridge.stop() == 0, scene.bridge.log_tail()
    assert scene.uploader is not None and scene.uploader.stop() == 0, scene.uploader.log_tail()

    assert scene.truth.run_ids() == [run_id], "one run, not two"
    counts = scene.assert_nothing_lost(run_id)  # exactly the committed readings from start to stop, complete
    in_run = {seq for seq, _ in scene.truth.run_readings(run_id)}
    start_seq = markers(scene, "run_start")[0][0]
    committed = scene.truth.entries()
    readings = {seq for seq in range(start_seq + 1, crashed.last_seq + 1) if committed[seq][0] == "reading"}
    assert readings <= in_run, "a reading committed before the crash is missing"
    [(resume_seq, resume)] = markers(scene, "run_resume")
    assert resume_seq == crashed.last_seq + 1
    assert resume == {"run_id": run_id, "down_from": last[1], "down_to": resume["down_to"]}
    doc = manifest(scene.store, run_id)
    assert doc["exit_status"] == "success"
    assert doc["gaps"] == [{"site": "chamber-u", "epoch": scene.tap.epoch, "cause": "bridge_down",
                            "at_seq": resume_seq, "from_time": resume["down_from"], "to_time": resume["down_to"]}]
    assert doc["report"]["complete"] is True
    assert doc["report"]["bridge_down_s"] == round(resume["down_to"] - resume["down_from"], 3)
    scene.assert_drained(stop_seq)
    figures.record(row=10, fault="bridge SIGKILL mid-run, restarted after 3 s: the run resumed", lost=0,
                   runs=1, exit_status="success", bridge_down_s=doc["report"]["bridge_down_s"],
                   readings=counts["readings"], values_checked=counts["values_checked"],
                   broker_dropped=scene.watch.dropped())


def test_a_bridge_down_longer_than_resume_within_closes_the_run_as_abort_at_its_last_reading(
        scene: Scene, figures: Figures) -> None:
    scene.raw["bridge"]["runs"] = {"resume_within": 2}
    scene.write_config()
    scene.start_uploader()
    bridge = scene.start_bridge()
    run_id = start_run(scene.raw, name="aborted")
    wait_for(lambda: len(scene.tap.entries) > 100, what="readings in the run")
    bridge.kill()
    crashed = scene.truth.add_outbox(scene.outbox_path)
    last = last_committed(scene, crashed.last_seq)
    assert last[0] == "reading"
    time.sleep(4.0)  # down longer than resume_within (2 s)
    scene.start_bridge()
    wait_for(lambda: markers(scene, "run_stop"), what="the abort marker")
    [(stop_seq, stop)] = markers(scene, "run_stop")
    wait_for(lambda: max(scene.tap.entries, default=0) > stop_seq + 100, what="readings after the restart")
    wait_for(lambda: scene.finalized(run_id), timeout=60, what="the aborted run to be finalized")
    assert scene.bridge is not None and scene.bridge.stop() == 0, scene.bridge.log_tail()
    assert scene.uploader is not None and scene.uploader.stop() == 0, scene.uploader.log_tail()

    assert stop["exit_status"] == "abort" and stop["last_seq"] == crashed.last_seq == stop_seq - 1
    assert "later than bridge.runs.resume_within (2 s)" in stop["reason"]
    assert markers(scene, "run_resume") == []
    counts = scene.assert_nothing_lost(run_id)  # the run ends at its last reading before the crash
    later = {(f"{body['i']}/{body['c']}", body["v"]) for seq, (kind, _, body) in scene.truth.entries().items()
             if kind == "reading" and seq > stop_seq and body["q"] == "ok"}
    stored = {(name, value) for name, values in stored_values(scene.store, run_id).items() for value in values}
    assert later and not later & stored, "a reading logged after the restart is in the aborted run"
    doc = manifest(scene.store, run_id)
    assert (doc["exit_status"], doc["gaps"], doc["report"]["last_seq"]) == ("abort", [], stop_seq)
    figures.record(row=10, fault="bridge SIGKILL mid-run, restarted after 4 s with resume_within 2 s: closed as "
                   "abort", lost=0, exit_status="abort", readings=counts["readings"], later_readings_in_run=0,
                   broker_dropped=scene.watch.dropped())


def test_annotations_reach_the_run_once_and_in_order_across_broker_and_uploader_restarts(
        scene: Scene, figures: Figures) -> None:
    scene.start_uploader()
    scene.start_bridge()
    run_id = start_run(scene.raw, name="annotated")
    texts = ["Ga shutter open", "ramp to 580 °C", "As cracker on", "Ga shutter closed"]
    seqs = [annotate(scene, texts[0], "shutter")]
    since = time.time()
    scene.broker.restart(delay=0.5)  # SIGTERM: what it holds for the uploader survives
    back_online(scene, since)
    seqs.append(annotate(scene, texts[1], "ramp"))
    assert scene.uploader is not None
    scene.uploader.kill()  # before or after its spool commit and its ack: whatever it had is taken again
    scene.truth.add_spool(scene.uploader_state)
    seqs.append(annotate(scene, texts[2]))
    scene.start_uploader()
    time.sleep(1.0)
    scene.truth.add_spool(scene.uploader_state)
    since = time.time()
    scene.broker.kill()  # SIGKILL: what it queued is gone; the outbox sends it again
    scene.truth.add_spool(scene.uploader_state)
    scene.broker.start()
    back_online(scene, since)
    seqs.append(annotate(scene, texts[3], "shutter"))
    time.sleep(1.0)
    stop_seq = stop_run(scene.raw)
    wait_for(lambda: scene.finalized(run_id), timeout=90, what="the run to be finalized")
    assert scene.bridge is not None and scene.bridge.stop() == 0, scene.bridge.log_tail()
    assert scene.uploader is not None and scene.uploader.stop() == 0, scene.uploader.log_tail()

    shown = run_cli("runs", "show", run_id, "--json", "--store", str(scene.store))
    assert shown.returncode == 0, shown.stderr
    events = json.loads(shown.stdout)["events"]
    assert [(e["seq"], e["text"], e["source"]) for e in events] == [(s, t, "cli") for s, t in zip(seqs, texts,
                                                                                                   strict=True)]
    assert [e["tags"] for e in events] == [["shutter"], ["ramp"], [], ["shutter"]]
    start_seq = markers(scene, "run_start")[0][0]
    assert start_seq < seqs[0] and seqs == sorted(seqs) and seqs[-1] < stop_seq
    logged = scene.truth.entries()
    for event, seq in zip(events, seqs, strict=True):  # in the log where the CLI was told, among the readings
        kind, stamp, body = logged[seq]
        assert (kind, body["text"], body["run_id"], stamp) == ("event", event["text"], run_id, event["time"])
    counts = scene.assert_nothing_lost(run_id)
    plotted = run_cli("runs", "plot", run_id, "--store", str(scene.store), "--out", str(scene.tmp / "run.png"))
    assert plotted.returncode == 0, plotted.stderr
    figures.record(row=1, fault="annotations across a broker SIGTERM, an uploader SIGKILL and a broker SIGKILL",
                   lost=0, events=len(events), events_doubled=0, readings=counts["readings"],
                   duplicates_on_wire=scene.tap.duplicates, broker_dropped=scene.watch.dropped())

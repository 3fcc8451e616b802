"""Local run stores written file by file exactly per the contract (docs/design.md section 5).

The reader must accept what the contract allows, not just what today's writer happens to
produce, so the tests build stores here by hand: channels of one chunk of different lengths
(bad-quality readings left out), a channel absent from a whole chunk, a short last chunk, a time
hole where seqs were lost, an open run whose manifest counts nothing yet. Each flow is given as
its polls; the chunk files and the manifest's counts are derived from them the way the contract
defines them, and :func:`points` gives what a reader must read back.

``version=1`` (the default, what older uploaders wrote) leaves a reading whose quality is not ok
out of its chunk; ``version=2`` keeps it without a value, with its quality and detail
(:class:`Bad`), and carries the channels' types (``Flow.types``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]

START = 1_763_700_000.0  # 2025-11-21 04:40:00 UTC


@dataclass(frozen=True)
class Bad:
    """A reading whose quality is not ok: no value, its quality, what the instrument said."""

    quality: str = "sensor_off"
    detail: str = ""


#: a reading in a poll: a value, None (a bad reading of quality sensor_off) or :class:`Bad`
Cell = float | int | bool | str | Bad | None


@dataclass
class Flow:
    """One instrument: its channels' units and its polls, each ``(timestamp, {channel: value})``; a
    value of None or :class:`Bad` is a reading of a bad quality (version 1: left out of the chunk,
    counted in ``bad_quality``). ``types``: channels whose values are not floats (version 2)."""

    name: str
    units: dict[str, str]
    polls: list[tuple[float, dict[str, Cell]]] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)


def _bad(value: Cell) -> Bad | None:
    return Bad() if value is None else value if isinstance(value, Bad) else None


def chunk_bodies(data_id: str, flow: Flow, ppc: int, version: int = 1) -> list[dict[str, Any]]:
    """The flow's chunk bodies: chunk k holds polls k*ppc .. (k+1)*ppc-1."""
    bodies = []
    for k in range(math.ceil(len(flow.polls) / ppc)):
        channels: dict[str, dict[str, Any]] = {}
        for t, values in flow.polls[k * ppc:(k + 1) * ppc]:
            for channel, value in values.items():
                bad = _bad(value)
                if bad is not None and version == 1:
                    continue
                c = channels.setdefault(f"{flow.name}/{channel}",
                                        {"timestamps": [], "values": [], "units": flow.units[channel],
                                         "quality": [], "detail": []})
                c["timestamps"].append(t)
                c["values"].append(None if bad is not None else value)
                c["quality"].append("ok" if bad is None else bad.quality)
                c["detail"].append("" if bad is None else bad.detail)
        for name, c in channels.items():
            kind = flow.types.get(name.split("/", 1)[1])
            if kind is not None:
                c["type"] = kind
            if all(q == "ok" for q in c["quality"]):
                del c["quality"]
            if not any(c["detail"]):
                del c["detail"]
        bodies.append({"data_id": data_id, "chunk_index": k, "channels": channels})
    return bodies


def points(flows: list[Flow], version: int = 1) -> dict[str, list[tuple[Any, ...]]]:
    """What a reader must give back: channel -> [(timestamp, value, units)] in poll order; for version 2
    every reading, ``(timestamp, value or None, units, quality, detail)``."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for flow in flows:
        for t, values in flow.polls:
            for channel, value in values.items():
                bad = _bad(value)
                if version == 1:
                    if bad is None:
                        out.setdefault(f"{flow.name}/{channel}", []).append((t, value, flow.units[channel]))
                    continue
                out.setdefault(f"{flow.name}/{channel}", []).append(
                    (t, None if bad is not None else value, flow.units[channel], "ok" if bad is None else bad.quality,
                     "" if bad is None else bad.detail))
    return dict(sorted(out.items()))


def write_run(store: Path, data_id: str, flows: list[Flow], *, stream_name: str, ppc: int = 10,
              started_at: float = START, stopped_at: float | None = None, exit_status: str | None = "success",
              finalized: bool = True, gaps: list[dict[str, Any]] | None = None, site: str = "chamber-a",
              physical_sample: str | None = None, tags: tuple[str, ...] = (),
              events: list[dict[str, Any]] | None = None, version: int = 1, **extra: Any) -> dict[str, Any]:
    """Write one run (chunk files, then the manifest) and return the manifest; ``events`` and ``extra``
    (``trigger``, ``why``...) go into the manifest as given."""
    run_dir = store / data_id
    channels: dict[str, dict[str, Any]] = {}
    flow_counts: dict[str, dict[str, int]] = {}
    for flow in flows:
        folder = run_dir / "chunks" / flow.name
        folder.mkdir(parents=True, exist_ok=True)
        bodies = chunk_bodies(data_id, flow, ppc, version)
        for body in bodies:
            (folder / f"{body['chunk_index']:06d}.msgpack").write_bytes(msgpack.packb(body))
        flow_counts[flow.name] = {"points": len(flow.polls), "chunks": len(bodies)}
        for channel, units in flow.units.items():
            name = f"{flow.name}/{channel}"
            values = [v[channel] for _, v in flow.polls if channel in v]
            bad = [b for b in map(_bad, values) if b is not None]
            channels[name] = {"flow": flow.name, "units": units, "points": len(values) - len(bad),
                              "bad_quality": len(bad), "chunks": sum(name in b["channels"] for b in bodies)}
            if version >= 2:
                qualities: dict[str, int] = {"ok": len(values) - len(bad)} if len(values) > len(bad) else {}
                for b in bad:
                    qualities[b.quality] = qualities.get(b.quality, 0) + 1
                kind = flow.types.get(channel, "float")
                channels[name].update(points=len(values), type=kind, qualities=qualities,
                                      not_numeric=(len(values) - len(bad)) if kind in ("enum", "string") else 0)
    if stopped_at is None and finalized:
        stopped_at = max(t for f in flows for t, _ in f.polls) + 0.5
    gaps = gaps or []
    manifest: dict[str, Any] = {
        "v": version, "data_id": data_id, "stream_name": stream_name, "site": site, "run_id": data_id,
        "physical_sample": physical_sample, "synth_source_id": "3", "project_id": None, "tags": list(tags),
        "points_per_chunk": ppc, "started_at": started_at, "stopped_at": stopped_at,
        "exit_status": exit_status if finalized else None, "finalized": finalized,
        "finalized_at": stopped_at + 1.2 if finalized and stopped_at is not None else None,
        # an open run's manifest counts nothing yet (what the local sink writes at initialize)
        "channels": channels if finalized else {}, "flows": flow_counts if finalized else {}, "gaps": gaps,
        **({"events": events} if events is not None else {}), **extra,
    }
    missing = [g for g in gaps if g.get("cause") != "bridge_down"]
    if finalized:
        manifest["report"] = {
            "complete": not missing, "finalized_because": "complete" if not missing else "grace_expired",
            "readings": sum(c["points"] + (c["bad_quality"] if version == 1 else 0) for c in channels.values()),
            "bad_quality": sum(c["bad_quality"] for c in channels.values()),
            "chunks": sum(f["chunks"] for f in flow_counts.values()), "retries": 0,
            "clock": {"ntp_synchronized": True}}
        if version >= 2:
            totals: dict[str, int] = {}
            for c in channels.values():
                for quality, count in c["qualities"].items():
                    totals[quality] = totals.get(quality, 0) + count
            manifest["report"].update(qualities=dict(sorted(totals.items())),
                                      not_numeric=sum(c["not_numeric"] for c in channels.values()))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# ---------------------------------------------------------------- the store most tests use

GAN17 = "a1b2c3d4" + "0" * 23 + "1"
GAN18 = "a1b2ffff" + "0" * 23 + "2"
BAKE1 = "c0ffee00" + "0" * 23 + "3"
BAKE2 = "d00dfeed" + "0" * 23 + "4"
GAP = {"site": "chamber-a", "epoch": "e1e2e3e4e5e6", "from_seq": 120, "to_seq": 130,
       "cause": "not received within the grace period (300 s)"}


def gan17_flows() -> list[Flow]:
    """Two flows, three channels. The gauge (every 0.5 s, 25 polls: chunks of 10, 10 and a short 5)
    has p2 off for polls 8-21, so p2 is missing from chunk 1 entirely; the pyrometer (every 1 s)
    reports one 88880 and lost polls 6-8 (the manifest's gap)."""
    gauge = Flow("main_gauge", {"p1": "mbar", "p2": "mbar"})
    for i in range(25):
        t = START + 0.25 + 0.5 * i + 0.001 * (i % 3)
        gauge.polls.append((t, {"p1": 1.0e-6 * math.exp(-i / 7.0), "p2": None if 8 <= i <= 21 else 2.5e-3 / (i + 1)}))
    pyro = Flow("pyrometer", {"temperature": "°C"})
    for i in [*range(6), *range(9, 15)]:
        pyro.polls.append((START + 0.5 + i, {"temperature": None if i == 3 else 25.0 + 41.7 * i + 0.123}))
    return [gauge, pyro]


def small_flow(name: str, n: int, start: float, unit: str = "mbar") -> Flow:
    flow = Flow(name, {"p1": unit})
    flow.polls = [(start + i, {"p1": 1.0e-7 * (i + 1)}) for i in range(n)]
    return flow


def build_store(store: Path) -> dict[str, list[Flow]]:
    """Four runs: GaN-17 (finalized, one gap), GaN-18 (open), and two runs both named bakeout,
    the first of them started before the others. Returns data_id -> flows written."""
    runs = {GAN17: gan17_flows(), GAN18: [small_flow("main_gauge", 7, START + 10_000)],
            BAKE1: [small_flow("main_gauge", 5, START - 86_400)], BAKE2: [small_flow("main_gauge", 3, START + 20_000)]}
    write_run(store, GAN17, runs[GAN17], stream_name="GaN-17", physical_sample="S-1", tags=("GaN", "MBE"),
              exit_status="success", gaps=[GAP])
    write_run(store, GAN18, runs[GAN18], stream_name="GaN-18", started_at=START + 10_000, finalized=False)
    write_run(store, BAKE1, runs[BAKE1], stream_name="bakeout", started_at=START - 86_400, exit_status="abort")
    write_run(store, BAKE2, runs[BAKE2], stream_name="bakeout", started_at=START + 20_000)
    return runs


# ---------------------------------------------------------------- a run that resumed, with events

RESUMED = "e0e0e0e0" + "0" * 23 + "5"
DOWN = {"site": "chamber-a", "epoch": "e1e2e3e4e5e6", "cause": "bridge_down", "at_seq": 40,
        "from_time": START + 4.2, "to_time": START + 7.2}
EVENTS = [
    {"seq": 3, "time": START + 1.5, "text": "Ga shutter open", "tags": ["shutter"], "source": "cli"},
    {"seq": 55, "time": START + 8.5, "text": "ramp to 580 °C, $T$ stable", "tags": [], "source": "auto"},
]
WHY = {"start": {"expression": "main_gauge.p1 > 0.0", "values": {"main_gauge.p1": 1.0e-7}}, "stop": None}
#: the resumed run's instruments at its start and stop: the gauge controller was switched to Torr and the
#: pyrometer's emissivity turned mid-run; the pyrometer refused its identity queries at the stop
BASELINE = {
    "start": {
        "main_gauge": {"identity": {"vendor": "Pfeiffer Vacuum", "model": "TPG362", "serial": "44990000"},
                       "configuration": {"unit": "mbar", "gauge_1": "PKR"}, "t": START},
        "pyrometer": {"identity": {"vendor": "IMPAC", "model": "IGA 12"},
                      "configuration": {"unit": "degC", "emissivity": 0.7}, "t": START},
    },
    "stop": {
        "main_gauge": {"identity": {"vendor": "Pfeiffer Vacuum", "model": "TPG362", "serial": "44990000"},
                       "configuration": {"unit": "Torr", "gauge_1": "PKR"}, "t": START + 10},
        "pyrometer": {"identity": {"vendor": "IMPAC"}, "configuration": {"unit": "degC", "emissivity": 0.65},
                      "errors": {"AAna": "01na answered 'no'"}, "t": START + 10},
    },
}


def write_resumed(store: Path) -> dict[str, Any]:
    """An automatic run whose bridge was down for 3 s in the middle, with two events."""
    flow = Flow("main_gauge", {"p1": "mbar"})
    flow.polls = [(START + i, {"p1": 1.0e-7 * (i + 1)}) for i in range(10) if not 4 < i < 8]
    return write_run(store, RESUMED, [flow], stream_name="resumed", gaps=[DOWN], events=EVENTS, trigger="auto",
                     why=WHY, baseline=BASELINE)


# ---------------------------------------------------------------- a version 2 run: qualities kept, typed channels

GAN19 = "b2b2b2b2" + "0" * 23 + "7"


def gan19_flows() -> list[Flow]:
    """A gauge whose p2 is switched off for polls 5-12 and under range at 20-21, and whose p3 head was
    never there; a supply whose output is a bool, its mode an enum (one reply not understood), its fault
    word bits, a cycle counter an integer."""
    off = Bad("sensor_off", "gauge switched off")
    gauge = Flow("main_gauge", {"p1": "mbar", "p2": "mbar", "p3": "mbar"})
    for i in range(25):
        p2: Cell = off if 5 <= i <= 12 else Bad("under_range") if i in (20, 21) else 1.0e-3 / (i + 1)
        gauge.polls.append((START + 0.5 * i, {"p1": 1.0e-7 * (i + 1), "p2": p2, "p3": Bad("no_sensor")}))
    psu = Flow("heater_psu", {"output": "", "mode": "", "faults": "", "cycles": ""},
               types={"output": "bool", "mode": "enum", "faults": "bits", "cycles": "int"})
    for i in range(10):
        psu.polls.append((START + 0.25 + i, {
            "output": 3 <= i <= 6, "mode": "CC" if i == 5 else "CV" if i != 8 else Bad("invalid", "reply 'UR?'"),
            "faults": 5 if i == 4 else 0, "cycles": 100 + i}))
    return [gauge, psu]

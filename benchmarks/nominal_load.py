"""Bridge and uploader as real processes at the nominal load: CPU, RSS and its slope, end-to-end latency.

Nominal load (issue 4): 10 instruments x 3 channels at 10 Hz = 300 readings/s. The instruments
are serial text devices on ptys served by a child process (benchmarks/schedule_jitter.py's
``serve``); ``chamber-bridge poll`` and ``chamber-bridge upload`` run as their own processes
against a private Mosquitto, one run open for the whole measurement, the local store as sink.

Every ``--sample`` seconds it reads each process's CPU time and VmRSS from /proc. At the end it
stops the run and reports: CPU in % of one core and RSS (start of window, end, max) per process;
the RSS slope over the window by least squares (MB per hour; a leak shows as a steady slope,
start-up growth is left out by a warm-up); and the latency from each reading's timestamp to its
chunk being written in the store (the chunk file's mtime), p50 and p99, plus the pipeline's own
share (chunk written minus the chunk's last point). Prints figures, asserts nothing::

    .venv/bin/python -m benchmarks.nominal_load [--minutes 10] [--warm-up 30] [--sample 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]

from benchmarks.schedule_jitter import CHANNELS
from simulators.services.broker import MosquittoBroker

TICK = os.sysconf("SC_CLK_TCK")
INSTRUMENTS = 10
RATE = 10.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def config(broker: MosquittoBroker, ports: list[str], tmp: Path) -> Path:
    path = tmp / "nominal.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({
        "site": "nominal", "mqtt": {"host": broker.host, "port": broker.port},
        "bridge": {"state_dir": str(tmp / "bridge"), "instruments": [{
            "name": f"dev{n:02d}", "driver": "serial_ascii", "interval": 1 / RATE,
            "transport": {"kind": "serial", "port": port, "timeout": 0.5},
            "options": {"queries": [{"name": ch, "command": f"{ch.upper()}?", "parse": "regex",
                                     "regex": rf"{ch.upper()}=([-0-9.]+)"} for ch in CHANNELS]}}
            for n, port in enumerate(ports)]},
        "uploader": {"state_dir": str(tmp / "uploader"), "sink": {"kind": "local", "path": str(tmp / "store")}},
    }))
    return path


def cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "bridge", *args], stdout=out, stderr=subprocess.STDOUT)


def latencies(store: Path) -> tuple[list[float], list[float]]:
    per_reading, per_chunk = [], []
    for path in store.rglob("*.msgpack"):
        written = path.stat().st_mtime_ns / 1e9
        body = msgpack.unpackb(path.read_bytes())
        stamps = [t for column in body["channels"].values() for t in column["timestamps"]]
        if stamps:
            per_reading += [written - t for t in stamps]
            per_chunk.append(written - max(stamps))
    return per_reading, per_chunk


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="measured window")
    parser.add_argument("--warm-up", type=float, default=30.0, help="seconds before the window starts")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        sims = subprocess.Popen([sys.executable, "-m", "benchmarks.schedule_jitter", "--serve", "--instruments",
                                 str(INSTRUMENTS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert sims.stdin is not None and sims.stdout is not None
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            ports = [sims.stdout.readline().strip() for _ in range(INSTRUMENTS)]
            cfg = config(broker, ports, tmp)
            procs["uploader"] = cli("upload", str(cfg), log=tmp / "uploader.log")
            procs["bridge"] = cli("poll", str(cfg), log=tmp / "bridge.log")
            time.sleep(3)
            started = subprocess.run([sys.executable, "-m", "bridge", "start-run", str(cfg), "--name", "nominal"],
                                     capture_output=True, text=True, timeout=30)
            if started.returncode:
                raise SystemExit(f"start-run failed: {started.stderr}")
            time.sleep(args.warm_up)
            samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in procs}
            end = time.monotonic() + args.minutes * 60
            while True:
                now = time.monotonic()
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise SystemExit(f"{name} exited with {proc.returncode}: {(tmp / f'{name}.log').read_text()}")
                    samples[name].append((now, cpu_seconds(proc.pid), rss_mb(proc.pid)))
                if now >= end:
                    break
                time.sleep(min(args.sample, max(0.0, end - now)))
            subprocess.run([sys.executable, "-m", "bridge", "stop-run", str(cfg)], capture_output=True, timeout=30)
            store = tmp / "store"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                    json.loads(m.read_text()).get("finalized") for m in store.glob("*/manifest.json")):
                time.sleep(0.2)
            per_reading, per_chunk = latencies(store)
            report: dict[str, Any] = {}
            for name, rows in samples.items():
                (t0, c0, r0), (t1, c1, r1) = rows[0], rows[-1]
                report[name] = (100 * (c1 - c0) / (t1 - t0), r0, r1, max(r for _, _, r in rows),
                                slope([t for t, _, _ in rows], [r for _, _, r in rows]) * 3600)
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                proc.wait(timeout=30)
            sims.stdin.close()
            sims.wait(timeout=10)
            broker.kill()
    print(f"nominal load: {INSTRUMENTS} instruments x {len(CHANNELS)} channels at {RATE:g} Hz "
          f"({INSTRUMENTS * len(CHANNELS) * RATE:g} readings/s), {args.minutes:g} min window after "
          f"{args.warm_up:g} s warm-up ({platform.node()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')})")
    for name, (cpu, r0, r1, rmax, rslope) in report.items():
        print(f"  {name:<8} CPU {cpu:5.2f} % of one core | RSS {r0:5.1f} -> {r1:5.1f} MB (max {rmax:5.1f}), "
              f"slope {rslope:+.2f} MB/h")
    if per_reading:
        print(f"  reading -> chunk written: p50 {pct(per_reading, 50):.2f} s, p99 {pct(per_reading, 99):.2f} s "
              f"over {len(per_reading)} readings (100 points per chunk at 10 Hz: up to 10 s waiting to fill)")
        print(f"  chunk's last point -> written: p50 {pct(per_chunk, 50) * 1000:.0f} ms, "
              f"p99 {pct(per_chunk, 99) * 1000:.0f} ms over {len(per_chunk)} chunks")


if __name__ == "__main__":
    main()

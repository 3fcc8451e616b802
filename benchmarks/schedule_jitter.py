"""Poller schedule at the nominal load: 10 instruments x 3 channels at 10 Hz (issue 4).

Ten simulated serial text instruments (three queries each) on their own ptys, served by a child
process so that this process's CPU and memory are the poller's alone (plus the sink here, which
only counts). Each instrument is one bus, so ten bus threads run, as on a Pi with ten adapters.

After a warm-up, over a window of ``--seconds`` that starts and ends half-way between deadlines,
it reports:

* jitter: actual read start minus planned deadline (p50, p99, max), scheduled polls only;
* drift: how far each deadline lies from first deadline + k intervals (the grid must not slip),
  and the trend of lateness over the window (least squares, ms per hour);
* missed deadlines (the poller's own count) and readings vs. the expected
  ``seconds x rate x channels`` per instrument, counted by when they reached the sink (drift
  shows here as missing readings);
* CPU of this process in % of one core (``resource.getrusage``: user + system over wall time)
  and its maximum RSS.

Targets (issue 4): p99 at most 2 ms, 0 missed or extra, at most 2 % of one core, at most 60 MB.
Prints figures, asserts nothing::

    .venv/bin/python benchmarks/schedule_jitter.py [--seconds 60] [--instruments 10] [--rate 10]
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Run as a script from anywhere: the project root on the path, as for the other benchmarks.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHANNELS = ("a", "b", "c")
WARM_UP_POLLS = 10


def serve(instruments: int, stdin: IO[str], stdout: IO[str]) -> None:
    """Child process: ``instruments`` text devices on ptys; print their paths, serve until stdin closes."""
    from simulators.instruments.serial_ascii import TextDevice
    from simulators.serving import PtyServer

    queries = {f"{ch.upper()}?": f"{ch.upper()}={{{ch}:.4f}}" for ch in CHANNELS}
    with ExitStack() as stack:
        for n in range(instruments):
            device = TextDevice(queries, {ch: n + i / 10 for i, ch in enumerate(CHANNELS)})
            stdout.write(stack.enter_context(PtyServer(device)).port + "\n")
        stdout.flush()
        stdin.read()  # EOF: the parent is done (or gone)


@dataclass
class Window:
    start: float
    end: float

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(ports: list[str], seconds: float, rate: float) -> None:
    from bridge.config import InstrumentConfig
    from bridge.edge.polling.pollers import Pollers, ReadTiming
    from bridge.model import Reading

    interval = 1 / rate
    configs = [InstrumentConfig.model_validate({
        "name": f"dev{n:02d}", "driver": "serial_ascii", "interval": interval,
        "transport": {"kind": "serial", "port": port, "timeout": 0.5},
        "options": {"queries": [{"name": ch, "command": f"{ch.upper()}?", "parse": "regex",
                                 "regex": rf"{ch.upper()}=([-0-9.]+)"} for ch in CHANNELS]},
    }) for n, port in enumerate(ports)]

    lock = threading.Lock()
    arrivals: list[tuple[str, int, float]] = []  # instrument, readings, monotonic time at the sink
    turns: list[ReadTiming] = []

    def sink(readings: list[Reading]) -> None:
        now = time.monotonic()
        with lock:
            arrivals.append((readings[0].instrument, len(readings), now))

    def observe(timing: ReadTiming) -> None:
        with lock:
            turns.append(timing)

    pollers = Pollers(configs, sink, observer=observe)
    pollers.start()
    try:
        while True:  # each instrument's first turn is planned on its grid (their phases differ)
            with lock:
                phases = {t.instrument: t.deadline for t in turns if t.kind == "connect"}
            if len(phases) == len(configs):
                break
            time.sleep(0.01)
        # Per instrument, a window from half-way between two deadlines: a poll is in or out of
        # it whatever its lateness; the jitter and the CPU are taken over the window of them all.
        starts = {name: at + (WARM_UP_POLLS + 0.5) * interval for name, at in phases.items()}
        windows = {name: Window(start, start + seconds) for name, start in starts.items()}
        window = Window(min(w.start for w in windows.values()), max(w.end for w in windows.values()))
        time.sleep(max(0.0, window.start - time.monotonic()))
        usage_start, wall_start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        missed_start = sum(s.missed_deadlines for s in pollers.status())
        time.sleep(max(0.0, window.end - time.monotonic()))
        usage_end, wall_end = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        missed = sum(s.missed_deadlines for s in pollers.status()) - missed_start
        failures = sum(s.failures for s in pollers.status())
        time.sleep(interval)  # let the last polls of the window reach the sink
    finally:
        pollers.stop()

    with lock:
        lateness = [t.lateness * 1000 for t in turns if t.kind == "poll" and t.deadline in window]
        in_window = [t for t in turns if t.kind == "poll" and t.deadline < window.end]
    # drift: the grid itself (deadline k against the first deadline + k intervals) and the trend
    # of lateness over the window (a schedule that slips shows a steady slope)
    grid_error = 0.0
    for name in {t.instrument for t in in_window}:
        deadlines = sorted(t.deadline for t in in_window if t.instrument == name)
        grid_error = max(grid_error, *(abs(d - (deadlines[0] + k * interval)) for k, d in enumerate(deadlines)))
    polls = [(t.started, t.lateness * 1000) for t in in_window if t.kind == "poll" and t.deadline in window]
    mean_t = sum(x for x, _ in polls) / len(polls)
    mean_l = sum(y for _, y in polls) / len(polls)
    trend = sum((x - mean_t) * (y - mean_l) for x, y in polls) / max(1e-12, sum((x - mean_t) ** 2 for x, _ in polls))
    with lock:
        readings = Counter[str]()
        for name, count, at in arrivals:
            if at in windows[name]:
                readings[name] += count
    expected = round(seconds * rate) * len(CHANNELS)
    missing = sum(max(0, expected - readings[c.name]) for c in configs)
    extra = sum(max(0, readings[c.name] - expected) for c in configs)
    cpu = (usage_end.ru_utime - usage_start.ru_utime + usage_end.ru_stime - usage_start.ru_stime)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{len(configs)} instruments x {len(CHANNELS)} channels at {rate:g} Hz, each on its own pty bus, "
          f"{seconds:g} s window after {WARM_UP_POLLS} warm-up polls")
    print(f"jitter (read start - deadline): p50 {percentile(lateness, 50):.3f} ms, "
          f"p99 {percentile(lateness, 99):.3f} ms, max {max(lateness):.3f} ms over {len(lateness)} polls "
          "(target p99 <= 2 ms)")
    print(f"drift: deadlines off their grid by at most {grid_error * 1e6:.1f} us; lateness trend "
          f"{trend * 3600:+.3f} ms per hour")
    print(f"missed deadlines {missed}, failed polls {failures}; readings {sum(readings.values())} of "
          f"{expected * len(configs)} expected: {missing} missing, {extra} extra (target 0 and 0)")
    print(f"CPU {100 * cpu / (wall_end - wall_start):.2f} % of one core (target <= 2 %), "
          f"max RSS {rss_mb:.1f} MB (target <= 60 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    parser.add_argument("--instruments", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="polls per second per instrument")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve:
        serve(args.instruments, sys.stdin, sys.stdout)
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--instruments", str(args.instruments)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        ports = [child.stdout.readline().strip() for _ in range(args.instruments)]
        if not all(ports):
            raise SystemExit("the simulator process did not start")
        measure(ports, args.seconds, args.rate)
    finally:
        child.stdin.close()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()

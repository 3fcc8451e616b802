"""Bytes the outbox writes to disk per reading, group commit against one transaction per reading; append rate.

An SD card wears by the write and guarantees only 500-2,000 random 4 KiB writes per second
(docs/design.md section 12), so the figure that matters is what the kernel sends to storage per reading:
``write_bytes`` of /proc/self/io (every thread of this process, counted when a page is
dirtied), read around N appends and the commits that make them durable. ``wchar`` (bytes
passed to write/pwrite) is printed beside it. Three ways of writing the same readings:

- group commit at full speed: appends as fast as one thread can, the committer batches;
- group commit at the nominal load of issue 4 (10 instruments x 3 channels at 10 Hz, 300/s),
  paced, so each commit holds what arrived in ``commit_interval`` (about 30 rows);
- one transaction per reading: ``append`` then ``flush`` each time.

It also reports the append rate (appends/s, and appends/s until the last one is committed);
target (issue 4 outbox brief): at least 50,000 appends/s with group commit.

    .venv/bin/python benchmarks/outbox_disk_bytes.py [--readings 200000] [--dir DIR]

``--dir`` must be on a real disk (write_bytes of tmpfs is 0); the default is a temporary
directory beside this file.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.edge.outbox import Outbox
from bridge.model import Quality, Reading
from bridge.wire.contract import reading_body

NOMINAL_RATE = 300.0  # 10 instruments x 3 channels x 10 Hz


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {key: int(value) for key, value in (line.split(": ") for line in f)}


@dataclass
class Measured:
    label: str
    readings: int
    seconds: float
    appending: float
    write_bytes: int
    wchar: int

    def row(self) -> str:
        return (f"{self.label:<34} {self.readings:>8} {self.write_bytes / self.readings:>11.0f} "
                f"{self.wchar / self.readings:>11.0f} {self.readings / self.appending:>12,.0f} "
                f"{self.readings / self.seconds:>12,.0f}")


HEADER = (f"{'writing':<34} {'readings':>8} {'write_bytes':>11} {'wchar':>11} {'appends/s':>12} {'durable/s':>12}\n"
          f"{'':<34} {'':>8} {'per reading':>11} {'per reading':>11} {'':>12} {'(to commit)':>12}")


def _body(n: int) -> dict[str, object]:
    """A realistic reading: one gauge channel, value and stamp changing."""
    return reading_body(Reading(f"gauge_{n % 10}", f"p{n % 3 + 1}", 1.0e-7 * (1 + n % 97), Quality.OK,
                                1_763_700_000.0 + n / NOMINAL_RATE, "mbar"))


#: made before timing, so the append rate is the outbox's, not the cost of building readings
BODIES = [_body(n) for n in range(3000)]


def body(n: int) -> dict[str, object]:
    return BODIES[n % len(BODIES)]


@contextmanager
def fresh_outbox(directory: Path, label: str) -> Iterator[Outbox]:
    path = directory / f"{label.replace(' ', '_')}.sqlite"
    for stale in directory.glob(path.name + "*"):
        stale.unlink()
    box = Outbox(path)
    try:
        box.append("reading", body(0))  # create pages and WAL before measuring
        box.flush()
        yield box
    finally:
        box.close()
        check = sqlite3.connect(path)
        (verdict,) = check.execute("PRAGMA integrity_check").fetchone()
        check.close()
        assert verdict == "ok", verdict


def measure(directory: Path, label: str, readings: int, write: Callable[[Outbox, int], None]) -> Measured:
    with fresh_outbox(directory, label) as box:
        before = io_counters()
        start = time.perf_counter()
        for n in range(1, readings + 1):
            write(box, n)
        appended = time.perf_counter()
        box.flush()
        done = time.perf_counter()
        after = io_counters()
    return Measured(label, readings, done - start, appended - start, after["write_bytes"] - before["write_bytes"],
                    after["wchar"] - before["wchar"])


def group_commit(box: Outbox, n: int) -> None:
    box.append("reading", body(n))


def one_transaction_each(box: Outbox, n: int) -> None:
    box.append("reading", body(n))
    box.flush()


def paced(rate: float) -> Callable[[Outbox, int], None]:
    """Appends at ``rate`` per second on a drift-free schedule, the way the pollers produce them."""
    start: list[float] = []

    def write(box: Outbox, n: int) -> None:
        if not start:
            start.append(time.monotonic())
        delay = start[0] + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        box.append("reading", body(n))

    return write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000, help="readings for the full-speed group commit")
    parser.add_argument("--per-transaction", type=int, default=2_000, help="readings for one transaction each")
    parser.add_argument("--nominal-seconds", type=float, default=5.0, help="seconds at the nominal 300 readings/s")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (a real disk)")
    args = parser.parse_args()

    print(f"outbox disk bytes and append rate; {platform.machine()}, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}; WAL, synchronous=FULL, commit every <=0.1 s or <=500 rows")
    base = args.dir or Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="outbox-bench-", dir=base) as tmp:
        directory = Path(tmp)
        results = [
            measure(directory, "group commit, full speed", args.readings, group_commit),
            measure(directory, "group commit, 300/s (nominal)", int(args.nominal_seconds * NOMINAL_RATE),
                    paced(NOMINAL_RATE)),
            measure(directory, "one transaction per reading", args.per_transaction, one_transaction_each),
        ]
    print(HEADER)
    for result in results:
        print(result.row())
    full, nominal, single = results
    print(f"\ngroup commit writes {single.write_bytes / single.readings / (full.write_bytes / full.readings):.0f}x "
          f"(full speed) and {single.write_bytes / single.readings / (nominal.write_bytes / nominal.readings):.0f}x "
          f"(nominal) less than one transaction per reading")
    rate = full.readings / full.appending
    print(f"append rate with group commit: {rate:,.0f}/s (target >= 50,000/s: {'met' if rate >= 50_000 else 'MISSED'})")


if __name__ == "__main__":
    main()

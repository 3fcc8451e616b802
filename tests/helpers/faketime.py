"""A wall clock that a test steps while processes run: libfaketime (Debian package ``faketime``).

:class:`SteppedClock` writes the offset libfaketime applies to ``CLOCK_REALTIME`` into a file
that every process started with :meth:`SteppedClock.env` re-reads each second; writing it again
(atomically, by rename, or a process may read it half-written) steps their wall clock. The
monotonic clock is left alone, as a real clock step (NTP, an operator, a Pi without a real-time
clock booting at 1970) leaves it alone. ``tests/helpers/faketime_shim`` works around a
libfaketime bug that would otherwise break ``time.sleep`` in those processes.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

SHIM = Path(__file__).resolve().parent / "faketime_shim"
MISSING = ("libfaketime is not installed: run scripts/test.sh, which installs the Debian package faketime "
           "(apt-get install faketime)")


def libfaketime() -> str:
    """The multi-threaded libfaketime; fails the test (never skips it) when the package is missing."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
                   + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.fail(MISSING)
    return found[0]


class SteppedClock:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "offset"
        self.offset = 0
        self.set(0)

    def set(self, offset_s: int) -> None:
        """From now on (within a second) the processes' wall clock runs ``offset_s`` from the real one."""
        self.offset = offset_s
        scratch = self.path.with_suffix(".new")
        scratch.write_text(f"{offset_s:+d}\n")
        os.replace(scratch, self.path)

    def env(self) -> dict[str, str]:
        """The environment of a process whose wall clock this steps."""
        python_path = os.pathsep.join(p for p in (str(SHIM), os.environ.get("PYTHONPATH", "")) if p)
        return {"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": python_path}

"""Loaded by Python at start-up in processes the clock-jump test runs under libfaketime (row 19).

libfaketime 0.9.10 (Debian 12) with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` mistranslates
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``, which ``time.sleep`` uses since Python 3.11,
and the call fails with EINVAL (libfaketime issue 426). Faking the monotonic clock instead would
make it jump with the wall clock, which a real clock step never does. So, in those processes only,
``time.sleep`` waits on a lock (``sem_clockwait``, which libfaketime leaves alone) for the same
time. Nothing else changes.
"""

import os
import threading
import time

if "faketime" in os.environ.get("LD_PRELOAD", ""):
    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        if seconds > 0:
            threading.Event().wait(seconds)

    time.sleep = _sleep

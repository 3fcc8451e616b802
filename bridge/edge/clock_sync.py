"""Is the system clock NTP-synchronised? A Pi has no real-time clock; timestamps depend on it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

#: systemd-timesyncd touches this file once it has synchronised
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def ntp_synchronized() -> bool | None:
    """True or False as systemd reports it; None when this system cannot tell."""
    timedatectl = shutil.which("timedatectl")
    if timedatectl is not None:
        try:
            result = subprocess.run([timedatectl, "show", "--property=NTPSynchronized", "--value"],
                                    capture_output=True, text=True, timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0 and result.stdout.strip() in ("yes", "no"):
            return result.stdout.strip() == "yes"
    if TIMESYNC_FLAG.parent.exists():
        return TIMESYNC_FLAG.exists()
    return None

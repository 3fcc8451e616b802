"""Named crash points: a process SIGKILLs itself at a chosen point, so tests can prove recovery.

Off unless the environment variable ``CHAMBER_BRIDGE_CRASH_AT`` is set, to ``NAME`` (crash the
first time NAME is reached) or ``NAME:N`` (the N-th time). SIGKILL rather than an exception:
nothing is flushed, no ``finally`` runs, exactly as when the power goes or the OOM killer
strikes. The names in use are listed in :data:`POINTS`, so a misspelt name fails loudly instead
of never crashing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Final

ENV: Final = "CHAMBER_BRIDGE_CRASH_AT"

POINTS: Final = frozenset({
    # uploader: receiving (docs/design.md section 3)
    "spool.before_commit", "spool.after_commit", "spool.after_ack",
    # uploader: delivering to the sink
    "upload.before_push", "upload.after_push", "finalize.before_sink", "finalize.after_sink",
    # bridge: around the outbox commit
    "outbox.before_commit", "outbox.after_commit",
})


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS:
        known = ", ".join(sorted(POINTS))
        raise SystemExit(f"chamber-bridge: error: {ENV}={value!r}: unknown crash point (known: {known})")
    return name, int(count or 1)


_armed = _parse(os.environ.get(ENV))
_hits = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process here if ``CHAMBER_BRIDGE_CRASH_AT`` names this point (and its count is reached)."""
    global _hits
    if _armed is None or _armed[0] != name:
        return
    with _lock:
        _hits += 1
        if _hits < _armed[1]:
            return
    print(f"crash point {name} reached: SIGKILL", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

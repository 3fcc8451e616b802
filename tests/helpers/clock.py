"""A settable stand-in for ``time.monotonic``, for simulators and models tested on a fake clock."""

from __future__ import annotations


class FakeClock:
    """Call it for the time; set :attr:`now` or :meth:`advance` it, and nothing moves otherwise."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

"""What the pty and TCP servers share: a waker, a connection's tick bookkeeping, a guarded call, a base class.

Threading: each server runs one daemon thread per connection (plus one accept thread for TCP).
Only that thread reads, ticks the device and closes descriptors; other threads (tests, a chamber
model) may call ``Link.send`` and device knobs at any time, so the device must lock its own state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from simulators.serving.link import ByteDevice, Link, Writer

log = logging.getLogger("simulators.serving")

#: How long a server thread may take to notice a stop request; ``stop()`` waits this long.
JOIN_TIMEOUT = 0.5


class Waker:
    """A self-pipe so that another thread can interrupt a server thread's ``poll``."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wfd, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.rfd, 512):
                pass

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Session:
    """Tick and pump bookkeeping for one connected device."""

    def __init__(self, device: ByteDevice, link: Link, tick: float) -> None:
        self.device = device
        self.link = link
        self.tick = tick
        self.next_tick = time.monotonic()

    def service(self, now: float) -> None:
        if now >= self.next_tick:
            guard(self.device.tick, now)
            self.next_tick = now + self.tick
        self.link.pump(now)

    def timeout(self, now: float) -> float:
        """Seconds until something is due (a tick or a queued piece)."""
        due = self.link.next_due()
        # A piece already due is stuck behind a full transport: retry on the next tick rather
        # than spin.
        wake_at = self.next_tick if due is None or due <= now else min(self.next_tick, due)
        return max(0.0, wake_at - now)


def guard(call: Callable[..., None], *args: object) -> None:
    """A buggy device must not kill the server thread: log and keep serving."""
    try:
        call(*args)
    except Exception:
        log.exception("simulated device raised in %s", getattr(call, "__name__", call))


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class ServerBase:
    """What both servers share: the link faults, a thread with a waker, the ``with`` statement."""

    def __init__(self, *, split: bool, delay: float, tick: float) -> None:
        self.tick = tick
        self._split = split
        self._delay = delay
        self._waker: Waker | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_not_started(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")

    def _start_serving(self, target: Callable[[], None], name: str) -> None:
        self._waker = Waker()
        self._thread = start_thread(target, name)

    def _close_waker(self) -> None:
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    def _new_link(self, write: Writer) -> Link:
        return Link(write, split=self._split, delay=self._delay)

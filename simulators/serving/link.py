"""What a simulated byte-stream instrument talks through: the :class:`ByteDevice` protocol and its :class:`Link`.

A simulated instrument is a :class:`ByteDevice`: a pure state machine that is told when a host
connects, gets the host's bytes, is ticked so that it can produce time-driven output (streams),
and answers through a :class:`Link`. The servers (:mod:`simulators.serving.pty`,
:mod:`simulators.serving.tcp`) own the file descriptors and threads, so a protocol module never
touches a socket and can be unit-tested byte for byte with a :class:`MemoryLink` and a fake clock.

Transport faults that every instrument shares live on the :class:`Link` (replies split into small
pieces, replies held back); protocol faults (garbage, silence, NAKs) live in the device.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("simulators.serving")

#: Default tick period: fine enough for 100 ms streams, coarse enough to cost nothing.
TICK = 0.01

# Writers return how many bytes the transport took (0 when it would block) and raise OSError
# when the peer is gone.
Writer = Callable[[bytes], int]
Clock = Callable[[], float]


class ByteDevice(Protocol):
    """What a server drives. All four calls come from the server thread of one connection."""

    def connected(self, link: Link) -> None:
        """A host is now attached; everything the device says goes through ``link``."""

    def received(self, data: bytes) -> None:
        """Bytes from the host, cut wherever the transport cut them (never assume whole lines)."""

    def tick(self, now: float) -> None:
        """Called every ``TICK`` or so with ``time.monotonic()``; for streams and timed output."""

    def disconnected(self) -> None:
        """The host is gone (closed the port, dropped, unplugged).

        The connection's link is already closed when this is called, so a device shared by
        several connections (one factory result reused) can tell whether the link it talks
        through now belongs to a newer, live connection and keep it.
        """


@dataclass
class _Piece:
    due: float
    data: bytes


class Link:
    """The device's way out: queues replies and lets them leave when the fault knobs allow.

    ``split`` (cut every message into 1-3 byte pieces a few ms apart) reproduces the TCP
    serial servers and USB adapters that deliver a reply across many reads; ``delay`` holds each
    message back, for drivers whose timeouts need proving. Both are plain attributes and may be
    flipped while the server runs. Message order is always kept: a later message never overtakes
    an earlier, delayed one.

    ``send`` is thread-safe and writes whatever is already due at once; the server thread calls
    :meth:`pump` to write pieces that fall due later. A write error marks the link closed (the
    server then ends the session) instead of raising into whoever happened to call ``send``.
    """

    def __init__(
        self,
        write: Writer,
        *,
        split: bool = False,
        delay: float = 0.0,
        clock: Clock = time.monotonic,
        seed: int | None = None,
        max_backlog: int = 65536,
    ) -> None:
        self.split = split
        self.delay = delay
        #: Piece sizes (inclusive range, bytes) and gaps between pieces (seconds) when splitting.
        self.split_sizes: tuple[int, int] = (1, 3)
        self.split_gap: tuple[float, float] = (0.002, 0.006)
        self._write = write
        self._clock = clock
        self._rng = random.Random(seed)
        # A host that never reads must not make the simulator grow without bound; beyond this
        # the oldest output is dropped, as it would be on a serial line nobody listens to.
        self._max_backlog = max_backlog
        self._queue: deque[_Piece] = deque()
        self._queued = 0
        self._tail = float("-inf")
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Bytes accepted by :meth:`send` but not yet handed to the transport."""
        with self._lock:
            return self._queued

    def send(self, data: bytes, *, split: bool = False, delay: float = 0.0) -> None:
        """Queue one message; ``split``/``delay`` add to the link-wide knobs for this message."""
        if not data:
            return
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            due = max(now + self.delay + delay, self._tail)
            pieces = self._cut(data, due) if split or self.split else [_Piece(due, data)]
            self._queue.extend(pieces)
            self._queued += len(data)
            self._tail = pieces[-1].due
            self._trim()
        self.pump(now)

    def _cut(self, data: bytes, due: float) -> list[_Piece]:
        lo, hi = self.split_sizes
        gap_lo, gap_hi = self.split_gap
        pieces = []
        pos = 0
        while pos < len(data):
            size = self._rng.randint(lo, hi)
            pieces.append(_Piece(due, data[pos : pos + size]))
            pos += size
            due += self._rng.uniform(gap_lo, gap_hi)
        return pieces

    def _trim(self) -> None:
        while self._queued > self._max_backlog and len(self._queue) > 1:
            self._queued -= len(self._queue.popleft().data)

    def next_due(self) -> float | None:
        """When the next queued piece may leave, or None when nothing is queued."""
        with self._lock:
            return self._queue[0].due if self._queue else None

    def pump(self, now: float | None = None) -> None:
        """Hand every piece that is due to the transport (in order); keep the rest."""
        with self._lock:
            if now is None:
                now = self._clock()
            while self._queue and not self._closed and self._queue[0].due <= now:
                piece = self._queue[0]
                try:
                    taken = self._write(piece.data)
                except OSError as exc:
                    log.debug("link write failed: %s", exc)
                    self._close_locked()
                    return
                self._queued -= taken
                if taken < len(piece.data):
                    # Transport full (host not reading): retry on the next pump.
                    piece.data = piece.data[taken:]
                    return
                self._queue.popleft()

    def close(self) -> None:
        """Drop everything queued; later sends are ignored."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._closed = True
        self._queue.clear()
        self._queued = 0


class MemoryLink(Link):
    """A link into a buffer, for byte-exact unit tests of protocol state machines.

    With the default knobs, output appears in :attr:`output` synchronously inside ``send``;
    with ``split``/``delay`` and a fake ``clock``, call :meth:`pump` after advancing the clock.
    """

    def __init__(
        self,
        *,
        split: bool = False,
        delay: float = 0.0,
        clock: Clock = time.monotonic,
        seed: int | None = 0,
    ) -> None:
        self.output = bytearray()
        #: Every write the transport saw, to check how a reply was cut.
        self.writes: list[bytes] = []
        super().__init__(self._collect, split=split, delay=delay, clock=clock, seed=seed)

    def _collect(self, data: bytes) -> int:
        self.output += data
        self.writes.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        """Everything written so far, and forget it."""
        with self._lock:
            data = bytes(self.output)
            self.output.clear()
            self.writes.clear()
            return data

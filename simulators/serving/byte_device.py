"""What every byte-stream instrument simulator shares (TPG, MKS 937B, IMPAC, text device, SCPI PSU).

:class:`SimulatedByteDevice` is a :class:`~simulators.serving.ByteDevice` that keeps the link it
was connected with, logs the conversation, buffers the host's input and cuts it into lines, and
carries the transport faults every instrument has: :attr:`~SimulatedByteDevice.silent`,
:attr:`~SimulatedByteDevice.garbage`, :attr:`~SimulatedByteDevice.garbage_at_connect`,
:attr:`~SimulatedByteDevice.split_replies` and :attr:`~SimulatedByteDevice.reply_delay`. A protocol
module subclasses it and implements :meth:`~SimulatedByteDevice._heard` (what to do with the host's
bytes), answering through :meth:`~SimulatedByteDevice._reply`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Literal

from simulators.serving.link import Clock, Link

#: ``log`` keeps at most this many entries (the CLI may serve for days).
LOG_LIMIT = 10_000

#: What :meth:`SimulatedByteDevice._lines` does with a line that outgrows its limit.
Runaway = Literal["cut", "restart", "tail"]


class SimulatedByteDevice:
    """Base of the byte-stream simulators: link, conversation log, input buffer and fault knobs.

    All state is guarded by one re-entrant lock, since tests and a chamber model flip knobs from
    other threads while a server thread feeds the device. ``clock`` and ``seed`` give subclasses a
    clock (:attr:`_clock`) and a random generator (:attr:`_rng`).

    Hooks for subclasses: :meth:`_heard` (the host's bytes, already logged; required),
    :meth:`_on_connect` / :meth:`_on_disconnect` (protocol state around a connection),
    :meth:`_distort` (protocol-specific damage to replies), :meth:`tick` (timed output).
    """

    def __init__(self, *, clock: Clock = time.monotonic, seed: int | None = None) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.RLock()

        # ---- fault knobs: plain attributes, flip them at any time ----
        #: Ignore all input and say nothing (dead instrument, wrong baud rate, wrong port).
        self.silent = False
        #: Bytes put in front of the next reply, once (line noise, a glitch at turnaround).
        self.garbage = b""
        #: Bytes sent whenever a host connects (noise from a USB adapter or a power glitch).
        self.garbage_at_connect = b""
        #: Let the link cut every message into 1-3 byte pieces a few ms apart.
        self.split_replies = False
        #: Seconds before each reply goes out (streams and echoes are not delayed).
        self.reply_delay = 0.0

        #: The conversation, device's view: ("rx", bytes from host) / ("tx", bytes to host).
        self.log: list[tuple[str, bytes]] = []
        #: Every reading answered, in order, once :meth:`record_served` switched it on (off by
        #: default: the CLI may serve for days): (channel, status, value as sent). The fault
        #: matrix's checker compares what a run stored with what was actually served.
        self.served: list[tuple[int, int, float]] | None = None

        self._link: Link | None = None
        self._buffer = bytearray()

    # ================================================================== ByteDevice

    def connected(self, link: Link) -> None:
        with self._lock:
            self._link = link
            self._buffer.clear()
            if self.garbage_at_connect and not self.silent:
                self._send(self.garbage_at_connect)
            self._on_connect()

    def disconnected(self) -> None:
        with self._lock:
            if self._link is not None and not self._link.closed:
                return  # an older connection of a shared simulator ended; ours is alive
            self._link = None
            self._buffer.clear()
            self._on_disconnect()

    def received(self, data: bytes) -> None:
        with self._lock:
            self._record("rx", data)
            self._heard(data)

    def tick(self, now: float) -> None:
        """Nothing is time-driven unless a subclass says so: the device only speaks when asked."""

    # ================================================================== for tests

    def record_served(self) -> list[tuple[int, int, float]]:
        """Start keeping :attr:`served` (empty now) and return it."""
        with self._lock:
            self.served = []
            return self.served

    def sent(self) -> bytes:
        """Everything sent to the host so far, concatenated (from :attr:`log`)."""
        with self._lock:
            return b"".join(data for direction, data in self.log if direction == "tx")

    # ================================================================== hooks

    def _heard(self, data: bytes) -> None:
        """Bytes from the host (already in :attr:`log`, lock held), cut wherever the transport cut them."""
        raise NotImplementedError

    def _on_connect(self) -> None:
        """A host connected (after the garbage at connect, lock held)."""

    def _on_disconnect(self) -> None:
        """The host is gone and no newer connection took over (lock held)."""

    def _note_served(self, channel: int, status: int, value: float) -> None:
        """A reading goes out (lock held): kept in :attr:`served` if a test asked for it."""
        if self.served is not None:
            self.served.append((channel, status, value))

    def _distort(self, data: bytes) -> bytes:
        """Protocol-specific damage to a reply (truncation, a lost terminator, ...); none here."""
        return data

    # ================================================================== input and output

    def _lines(self, data: bytes, end: bytes, *, limit: int, skip: bytes = b"",
               runaway: Runaway = "cut") -> Iterator[bytes]:
        """Buffer ``data`` and yield every line it completes, without ``end`` (empty ones too).

        Bytes in ``skip`` never enter a line. A host sending more than ``limit`` bytes without
        ``end`` is talking nonsense; ``runaway`` says what is kept of such a line: ``"cut"`` its
        first ``limit`` bytes, ``"restart"`` nothing (the line starts again with the next byte),
        ``"tail"`` its last ``limit`` bytes once ``data`` has been taken in. ``"cut"`` and
        ``"restart"`` need a one-byte ``end``.
        """
        buffer = self._buffer
        for byte in data:
            if byte in skip:
                continue
            buffer.append(byte)
            if buffer.endswith(end):
                line = bytes(buffer[: -len(end)])
                buffer.clear()
                yield line
            elif len(buffer) > limit and runaway != "tail":
                if runaway == "cut":
                    buffer.pop()
                else:
                    buffer.clear()
        if runaway == "tail" and len(buffer) > limit:
            del buffer[:-limit]

    def _reply(self, data: bytes, *, delay: float = 0.0) -> None:
        """Send a reply: :meth:`_distort`-ed, one-shot garbage in front, ``reply_delay`` + ``delay`` late."""
        data = self._distort(data)
        if self.garbage:
            data = self.garbage + data
            self.garbage = b""
        self._send(data, delay=self.reply_delay + delay)

    def _send(self, data: bytes, *, delay: float = 0.0) -> None:
        if self._link is None or not data:
            return
        self._record("tx", data)
        self._link.send(data, split=self.split_replies, delay=delay)

    def _record(self, direction: str, data: bytes) -> None:
        self.log.append((direction, data))
        if len(self.log) > LOG_LIMIT:
            del self.log[: LOG_LIMIT // 2]

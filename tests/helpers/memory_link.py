"""A byte device on a :class:`~simulators.serving.MemoryLink`: bytes in, exact bytes out."""

from __future__ import annotations

from simulators.serving import ByteDevice, Clock, MemoryLink


def attach(device: ByteDevice, clock: Clock | None = None) -> MemoryLink:
    """A host attached to ``device`` through a memory link (on ``clock``, if given)."""
    link = MemoryLink() if clock is None else MemoryLink(clock=clock)
    device.connected(link)
    return link


def talk(device: ByteDevice, link: MemoryLink, data: bytes) -> bytes:
    """Send ``data`` to the device; what it answered at once."""
    device.received(data)
    return link.take()

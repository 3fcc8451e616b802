"""Several devices on one RS-485 line: every device hears every byte, only the addressed answers.

That is how a real two-wire bus behaves, so a driver that reads two gauges or pyrometers on one
adapter is tested against exactly what it would meet: the other device's silence, and no help
from the line in telling replies apart. Each device decides for itself whether a frame is
addressed to it (its own protocol's address field) and stays silent otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from simulators.serving.link import ByteDevice, Link


class SharedLine:
    """A :class:`~simulators.serving.ByteDevice` made of several devices sharing one link."""

    def __init__(self, devices: Sequence[ByteDevice]) -> None:
        if not devices:
            raise ValueError("a line needs at least one device")
        self.devices = list(devices)

    def connected(self, link: Link) -> None:
        for device in self.devices:
            device.connected(link)

    def received(self, data: bytes) -> None:
        for device in self.devices:
            device.received(data)

    def tick(self, now: float) -> None:
        for device in self.devices:
            device.tick(now)

    def disconnected(self) -> None:
        for device in self.devices:
            device.disconnected()

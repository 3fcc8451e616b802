"""What the driver tests share: one poll, readings by channel, a fault that fails a poll, a pulled cable."""

from __future__ import annotations

import pytest

from bridge.edge.instrument import Instrument
from bridge.errors import TransportDisconnected, TransportTimeout
from bridge.model import Reading
from bridge.transports.base import reopen
from tests.helpers.served import ServedLink


def by_channel(readings: list[Reading]) -> dict[str, Reading]:
    return {r.channel: r for r in readings}


def values(readings: list[Reading]) -> dict[str, float | None]:
    return {r.channel: r.value for r in readings}


def read_and_close(inst: Instrument) -> list[Reading]:
    """One poll of a freshly connected instrument, closed after it whatever happens."""
    try:
        return inst.read()
    finally:
        inst.close()


def fails_then_recovers(inst: Instrument, device: object, error: type[Exception], match: str,
                        **fault: object) -> list[Reading]:
    """Set the simulator's ``fault`` knobs: the next poll must raise ``error`` matching ``match``.
    Then the knobs go back to what they were, and the readings of the poll after are returned."""
    normal = {knob: getattr(device, knob) for knob in fault}
    for knob, value in fault.items():
        setattr(device, knob, value)
    with pytest.raises(error, match=match):
        inst.read()
    for knob, value in normal.items():
        setattr(device, knob, value)
    return inst.read()


def unplug_fails(inst: Instrument, link: ServedLink, attempts: int = 3) -> None:
    """A poll works; once ``link`` is unplugged, one of the next ``attempts`` polls fails as a
    disconnect or a timeout (buffered bytes may still answer the first)."""
    inst.read()
    link.unplug()
    with pytest.raises((TransportDisconnected, TransportTimeout)):
        for _ in range(attempts):
            inst.read()


def reconnect(inst: Instrument) -> None:
    """What the poller does after a failure: reopen the transport and connect the driver again."""
    reopen(inst.transport)
    inst.driver.connect()

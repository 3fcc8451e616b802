"""Example third-party driver: found through the ``chamber_bridge.drivers`` entry point.

``LoopbackEcho`` writes a number and reads it back, so over pyserial's ``loop://`` it proves
the whole path (config, registry, transport, channel table, reading) without hardware.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from bridge.drivers.base import Channel, Driver, DriverOptions
from bridge.model import Measurement
from bridge.transports.serial import SerialTransport


class EchoOptions(DriverOptions):
    value: float = Field(default=42.5)


class LoopbackEcho(Driver[SerialTransport, EchoOptions]):
    transports = ("serial",)
    Options = EchoOptions
    summary = "example plug-in: echoes a number over a loop:// port"

    @classmethod
    def channel_table(cls, options: EchoOptions) -> Sequence[Channel[LoopbackEcho]]:
        return [Channel("echo", "arb", lambda self: self.echo(), "the configured value, read back")]

    def echo(self) -> Measurement:
        self.transport.write(f"{self.options.value}\n".encode())
        return Measurement(float(self.transport.read_until(b"\n")), units="arb")

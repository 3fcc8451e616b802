"""Serving simulated instruments over real transports: pty pairs, TCP, a pymodbus server.

A byte-stream instrument is a :class:`ByteDevice` (usually a :class:`SimulatedByteDevice`) that
answers through a :class:`Link`; :class:`PtyServer` serves one on a pseudo-terminal that pyserial
opens like a real port, :class:`TcpServer` on a TCP port (``socket://``, a LAN instrument or a
serial device server), and :class:`SharedLine` puts several on one RS-485 line. A Modbus
instrument is a :class:`~simulators.serving.register_device.RegisterDevice` served by
:class:`~simulators.serving.modbus_server.DeviceServer` (TCP, or RTU over a
:class:`~simulators.serving.null_modem.NullModem`).

The byte-stream names are exported here: they are what a third-party driver's tests use
(docs/third-party-drivers.md). The Modbus side is imported from its modules, so a byte-stream
test does not load pymodbus' server.
"""

from simulators.serving.byte_device import SimulatedByteDevice
from simulators.serving.link import TICK, ByteDevice, Clock, Link, MemoryLink
from simulators.serving.pty import PtyServer
from simulators.serving.rs485 import SharedLine
from simulators.serving.tcp import TcpServer

__all__ = ["TICK", "ByteDevice", "Clock", "Link", "MemoryLink", "PtyServer", "SharedLine", "SimulatedByteDevice",
           "TcpServer"]

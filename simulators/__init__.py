"""Instrument simulators that speak each instrument's real wire protocol over real transports.

They exist so that drivers, the bridge and the demo can be exercised end to end without lab
hardware, including the ugly parts (streams at power-up, split replies, status fillers, silence,
disconnects) that a friendly mock would hide. ``bridge`` never imports this package; tests and the
``chamber-bridge simulate`` and ``demo`` commands do. It is its own distribution,
``chamber-bridge-simulators`` (``simulators/pyproject.toml``), so a Pi installation does not carry it.

Layout:

- :mod:`simulators.serving`: carrying bytes to a simulated device (pty pairs, TCP, an RS-485
  line of several devices, a pymodbus server and a pty null modem for Modbus RTU), and the base
  classes every byte-stream and register device builds on;
- :mod:`simulators.instruments`: one protocol state machine per instrument, named after its driver;
- :mod:`simulators.chamber`: the chamber model and the whole simulated MBE chamber it couples;
- :mod:`simulators.services`: MQTT brokers and the Atomscale API emulator;
- :mod:`simulators.demo`: ``chamber-bridge demo``;
- :mod:`simulators.cli`: ``chamber-bridge simulate`` (also ``python -m simulators``).
"""

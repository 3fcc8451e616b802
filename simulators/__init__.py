"""Instrument simulators that speak each instrument's real wire protocol over real transports.

They exist so that drivers, the bridge and the demo can be exercised end to end without lab
hardware, including the ugly parts (streams at power-up, split replies, status fillers, silence,
disconnects) that a friendly mock would hide. ``bridge`` never imports this package; tests and the
``chamber-bridge simulate`` command do.

Layout: :mod:`simulators.serving` carries bytes (pty pairs, TCP) for any byte-stream device;
:mod:`simulators.byte_device` holds what every byte-stream simulator shares (link, log, line
splitting, transport faults), :mod:`simulators.gauges` the gauge controllers' pressure channels;
one module per instrument holds the protocol state machine (e.g. :mod:`simulators.pfeiffer_tpg`);
:mod:`simulators.cli` runs them standalone, each ``*_cli`` module on :mod:`simulators.cli_common`.
"""

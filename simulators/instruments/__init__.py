"""One module per instrument protocol, named after the driver it answers (``pfeiffer_tpg``, ``mks_937b``, ...).

Each is a protocol state machine on :mod:`simulators.serving`: the byte-stream instruments are
:class:`~simulators.serving.byte_device.SimulatedByteDevice` s (the gauge controllers share
:mod:`simulators.instruments.gauges`), the Modbus ones
:class:`~simulators.serving.register_device.RegisterDevice` s. :mod:`.serial_ascii` is the generic
text instrument the ``serial_ascii`` and ``scpi`` drivers read; ``pyvisa_sim_psu.yaml`` describes a
SCPI supply for pyvisa-sim, where a stateless dialogue suffices.
"""

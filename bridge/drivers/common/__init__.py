"""Machinery shared by several drivers, so that a driver's folder holds only that driver.

* ``serial_session``: the request/response discipline of the serial drivers (resync, stale input);
* ``gauge_controller``: the base of the multi-channel gauge controllers (``pfeiffer_tpg``, ``mks_937b``);
* ``visa_session``: the query dialogue over VISA with resync (``scpi``, ``scpi_psu``);
* ``text_codec``: text replies in, numbers out (``scpi``, ``serial_ascii``, ``scpi_psu``);
* ``query_table``: the config's query table and the driver skeleton of ``scpi`` and ``serial_ascii``;
* ``modbus_codec``: register decoding and read planning (``modbus``, ``eurotherm``, the simulators);
* ``modbus_blocks``: block reads with per-span fallback, and the Modbus driver base (``modbus``, ``eurotherm``);
* ``baseline``: an instrument's identity and configuration, each query asked on its own (every driver).
"""

"""Instrument drivers: one folder per registered driver name (a pure codec, a thin driver class,
a README), ``common/`` for the machinery several drivers share, ``base`` and ``registry``."""

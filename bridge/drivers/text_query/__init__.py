"""Text-query instruments: ``codec`` (pure reply parsing), ``session`` (the VISA dialogue, also
used by ``scpi_psu``) and ``driver`` (the ``scpi`` and ``serial_ascii`` drivers)."""

from bridge.drivers.text_query.driver import (
    Query,
    QueryTableOptions,
    ScpiOptions,
    ScpiText,
    SerialAscii,
    SerialAsciiOptions,
)

__all__ = ["Query", "QueryTableOptions", "ScpiOptions", "ScpiText", "SerialAscii", "SerialAsciiOptions"]

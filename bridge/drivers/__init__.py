"""Instrument drivers: protocol codecs (bytes in, values out) plus a thin class per instrument."""

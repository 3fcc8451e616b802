"""The local run store read back: list, show, export and plot runs (``chamber-bridge runs``).

The contract (paths, the manifest's and the chunks' schemas) is :mod:`bridge.store.layout`,
shared with the writer. Only the reader is imported here. The CSV/Parquet export and the plot
live in their own modules and import pyarrow and matplotlib inside their functions, so the Pi
(and ``chamber-bridge --help``) never load the lab-server extra.
"""

from bridge.store.layout import MANIFEST_VERSION, StoreDamaged, StoreLayoutError
from bridge.store.reader import (
    ChannelSummary,
    Event,
    FlowSummary,
    Manifest,
    MissingExtra,
    RunData,
    RunLookupError,
    RunStore,
    Series,
    StoreCorrupt,
    StoreError,
    load_run,
    read_manifest,
)

__all__ = [
    "MANIFEST_VERSION",
    "ChannelSummary",
    "Event",
    "FlowSummary",
    "Manifest",
    "MissingExtra",
    "RunData",
    "RunLookupError",
    "RunStore",
    "Series",
    "StoreCorrupt",
    "StoreDamaged",
    "StoreError",
    "StoreLayoutError",
    "load_run",
    "read_manifest",
]

"""What the Atomscale tests share: the official SDK's streaming client, sink configs, streams, chunks.

The SDK (``atomscale`` 0.21.10) is the reference for the wire contract. Its wheel's Python package
pulls numpy, pandas, matplotlib and more, far too heavy for CI, but the streaming client is a
Rust extension (``atomscale/streaming/rheed_stream.*.so``) that imports none of them. So
scripts/test.sh installs the wheel with ``--no-deps`` and :func:`load_sdk` loads that extension
by its file: ``find_spec("atomscale")`` locates a top-level package without running its
``__init__`` (which would import the missing dependencies).
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bridge.config import AtomscaleSinkConfig
from bridge.uploader.sinks.base import ChunkBody, StreamInfo
from simulators.services.atomscale import RemoteControl
from tests.helpers.cli import simulate

SDK_VERSION = "0.21.10"
SDK_MISSING = (f"the official Atomscale SDK (atomscale=={SDK_VERSION}) is not installed: run scripts/test.sh, "
               f"or .venv/bin/pip install --no-deps atomscale=={SDK_VERSION}")


def load_sdk() -> ModuleType:
    """The SDK's ``rheed_stream`` extension (``TimeseriesStreamer``); fails the test if it is missing."""
    if "rheed_stream" in sys.modules:
        return sys.modules["rheed_stream"]
    spec = importlib.util.find_spec("atomscale")
    if spec is None or spec.origin is None:
        pytest.fail(SDK_MISSING)
    version = importlib.metadata.version("atomscale")
    if version != SDK_VERSION:
        pytest.fail(f"atomscale {version} is installed; the contract is pinned to {SDK_VERSION}. {SDK_MISSING}")
    found = sorted((Path(spec.origin).parent / "streaming").glob("rheed_stream*.so"))
    if not found:
        pytest.fail(f"no rheed_stream extension in the installed atomscale package. {SDK_MISSING}")
    loader = importlib.machinery.ExtensionFileLoader("rheed_stream", str(found[0]))
    ext = importlib.util.spec_from_file_location("rheed_stream", found[0], loader=loader)
    assert ext is not None
    module = importlib.util.module_from_spec(ext)
    loader.exec_module(module)
    sys.modules["rheed_stream"] = module
    return module


def sink_config(endpoint: str, key_file: Path, **options: Any) -> AtomscaleSinkConfig:
    """The sink's config; a plain-http endpoint (the emulator on loopback) gets ``allow_insecure_http``."""
    return AtomscaleSinkConfig.model_validate({"kind": "atomscale", "endpoint": endpoint, "api_key_file": key_file,
                                               "allow_insecure_http": endpoint.startswith("http://"), **options})


def stream_info(run_id: str = "0" * 32, **overrides: Any) -> StreamInfo:
    fields: dict[str, Any] = {
        "run_id": run_id, "site": "chamber-a", "stream_name": "GaN-17", "physical_sample": "S-1",
        "synth_source_id": "3", "project_id": "proj-1", "tags": ("GaN", "growth"), "points_per_chunk": 3,
        "started_at": 1763700000.0,
    }
    fields.update(overrides)
    return StreamInfo(**fields)


def chunk_channels(index: int, points: int = 3, *, per_chunk: int = 3, t0: float = 1763700000.0
                   ) -> dict[str, dict[str, Any]]:
    """Chunk ``index`` of a flow polled every 0.5 s, ``per_chunk`` points a chunk (the last may hold
    fewer), as the chunker makes it: two channels, the second missing its first (bad) point."""
    times = [t0 + 0.5 * (index * per_chunk + i) for i in range(points)]
    return {
        "main_gauge/p1": {"timestamps": times, "values": [1e-6 * (1 + i) for i in range(points)], "units": "mbar"},
        "main_gauge/p2": {"timestamps": times[1:], "values": [2e-7 * (1 + i) for i in range(points - 1)],
                          "units": "mbar"},
    }


def chunk_body(data_id: str, index: int, **options: Any) -> ChunkBody:
    return {"data_id": data_id, "chunk_index": index, "channels": chunk_channels(index, **options)}


@dataclass
class RemoteEmulator:
    """An emulator in its own process (``chamber-bridge simulate atomscale``), driven over HTTP."""

    url: str
    control: RemoteControl


@contextmanager
def emulator_process(*keys: str) -> Iterator[RemoteEmulator]:
    """A separate process is what the SDK needs: it holds the GIL while it waits for an answer,
    so an emulator thread in the test's own process would never get to answer it."""
    args = [arg for key in keys for arg in ("--key", key)]
    with simulate("atomscale", *args, timeout=10) as emulator:
        yield RemoteEmulator(emulator.where, RemoteControl(emulator.where))

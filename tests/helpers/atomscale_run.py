"""The uploader against the Atomscale API emulator: the config, the uploader with fast retries, the verdict.

Shared by tests/system/test_uploader_atomscale.py and the fault matrix's target rows
(tests/faults/test_target_faults.py): the bridge runs in the test's process with its log
recorded, the uploader pushes to the emulator (simulators/services/atomscale/), and
:func:`assert_emulator_holds_run` checks that the emulator holds exactly the run's readings, each
once, in one finalized stream, with no chunk stored twice under different content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.config import parse_config
from bridge.uploader.service import UploaderService, UploaderSettings
from bridge.uploader.sinks.atomscale import AtomscaleSink
from simulators.services.atomscale import AtomscaleEmulator
from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.uploader import chamber_config
from tests.system.test_uploader import PPC

KEY = "key-one"
SETTINGS = UploaderSettings(status_interval=0.3, backoff_initial=0.05, backoff_cap=0.5)


#: the sink's own retries, shortened for tests (its defaults suit a lab server)
FAST_SINK: dict[str, float] = {"timeout": 0.5, "connect_timeout": 0.5, "call_budget": 1.0, "backoff_initial": 0.05,
                               "backoff_cap": 0.3}


def atomscale_config(mosquitto: MosquittoBroker, gauges: Any, tmp_path: Path, emulator: AtomscaleEmulator,
                     endpoint: str | None = None) -> dict[str, Any]:
    """Both sides' config with the atomscale sink; ``endpoint`` reaches the emulator another way (a proxy)."""
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    return chamber_config(mosquitto, gauges, tmp_path, points_per_chunk=PPC, sink={
        "kind": "atomscale", "endpoint": endpoint or emulator.url, "api_key_file": str(key_file),
        "allow_insecure_http": True})  # the emulator serves plain http on loopback


def start_uploader(raw: dict[str, Any], settings: UploaderSettings = SETTINGS,
                   sink_options: dict[str, Any] | None = None) -> UploaderService:
    """The uploader with the atomscale sink: fast retries unless ``sink_options`` says otherwise
    (``{}``: the sink's defaults)."""
    cfg = parse_config(raw)
    assert cfg.uploader.sink.kind == "atomscale"
    sink = AtomscaleSink(cfg.uploader.sink, **(FAST_SINK if sink_options is None else sink_options))
    service = UploaderService(cfg, sink=sink, settings=settings)
    service.start()
    return service


def the_stream(emulator: AtomscaleEmulator, name: str) -> Any:
    """The one stream of the run that holds data (a lost initialize answer may leave an empty twin)."""
    streams = [s for s in emulator.streams() if s.stream_name == name and emulator.chunk_keys(s.data_id)]
    assert len(streams) == 1, f"{len(streams)} streams of {name} hold data"
    return streams[0]


def assert_emulator_holds_run(emulator: AtomscaleEmulator, name: str, readings: list[dict[str, Any]]) -> None:
    stream = the_stream(emulator, name)
    assert stream.finalized
    assert emulator.duplicates_stored() == 0
    for channel in emulator.channels(stream.data_id):
        flow, short = channel.split("/", 1)
        logged = [r for r in readings if r["i"] == flow and r["c"] == short and r["q"] == "ok"]
        assert emulator.points(stream.data_id, channel) == ([r["t"] for r in logged], [r["v"] for r in logged]), \
            f"{channel}: the emulator's points differ from what the bridge logged"
    assert {f"{r['i']}/{r['c']}" for r in readings if r["q"] == "ok"} == set(emulator.channels(stream.data_id))


def finalized_stream(emulator: AtomscaleEmulator, name: str) -> bool:
    return any(s.stream_name == name and s.finalized and emulator.chunk_keys(s.data_id) for s in emulator.streams())



"""What the uploader asks of a sink (the local store or the Atomscale API), and how a sink fails.

The uploader keeps every chunk in its spool until the sink confirms it, so a sink only has to
say clearly whether a call worked. Every call must be safe to repeat with the same arguments:
after a crash the uploader resends the first unconfirmed chunk (byte-identical) and may repeat
a finalize whose confirmation it never recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bridge.errors import BridgeError


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One run as a stream: the ``run_start`` metadata plus what the uploader adds."""

    run_id: str
    site: str
    stream_name: str
    physical_sample: str | None
    synth_source_id: str | None
    project_id: str | None
    tags: tuple[str, ...]
    points_per_chunk: int
    #: Unix seconds of the run_start marker (the bridge's clock)
    started_at: float


#: one chunk as the Atomscale API's push_multi body: {"data_id", "chunk_index", "channels": {...}}
ChunkBody = dict[str, Any]


class SinkError(BridgeError):
    """A sink call did not succeed; the data stays in the spool and the call is retried later."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        #: seconds the target asked us to wait (Retry-After), if it said
        self.retry_after = retry_after
        #: HTTP status, if there was a response
        self.status = status


class SinkUnavailable(SinkError):
    """Transient: network errors, timeouts, 5xx, 408/409/425/429. Retry with backoff."""


class SinkRejected(SinkError):
    """The target refused the request (401, 403, 404, 422, ...): an alarm for a person.

    The data is kept and the call retried slowly, so that fixing the cause (rotating the API
    key, say) lets the backlog drain without a restart.
    """


class RunRejected(SinkRejected):
    """The target refuses this run's data, not the uploader as a whole (a name it cannot store, say).

    Only that run is set aside (and retried slowly); every other run goes on.
    """


class Sink(Protocol):
    """A place finalized runs go to. ``kind`` is the config's ``uploader.sink.kind``."""

    kind: str

    def initialize(self, stream: StreamInfo) -> str:
        """Create the stream and return its ``data_id``."""
        ...

    def push_chunk(self, data_id: str, flow: str, body: ChunkBody) -> None:
        """Store one chunk (``body["chunk_index"]`` of ``flow``); return only once it is stored."""
        ...

    def finalize(self, data_id: str, manifest: dict[str, Any]) -> None:
        """Close the stream; ``manifest`` carries the metadata and the completeness report."""
        ...

    def close(self) -> None:
        ...

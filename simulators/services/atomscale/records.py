"""What the emulator stores and logs: streams, chunks, tracking samples, requests; and an API answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """One request as the emulator saw it. The API key's value is never kept."""

    seq: int
    #: ``time.monotonic()`` when the request line and headers had arrived
    at: float
    method: str
    path: str
    query: str
    #: header names in lower case; ``x-api-key`` is left out (see ``api_key_present``)
    headers: dict[str, str]
    api_key_present: bool
    #: the parsed JSON body, or None (no body, or not JSON)
    body: Any
    #: the body's top-level keys in the order sent, when it is a JSON object
    body_keys: tuple[str, ...] | None
    #: the status answered, or None when the connection was dropped instead
    status: int | None = None
    #: the fault applied to this request, if any
    fault: str | None = None
    #: ``time.monotonic()`` just before the answer was sent (or the connection dropped)
    answered_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EmulatedStream:
    """A stream as the server holds it."""

    data_id: str
    processed_data_id: str
    stream_name: str | None
    synth_source_id: int | None
    points_per_chunk: int
    project_id: str | None
    created_at: float
    finalized: bool = False
    finalize_calls: int = 0
    finalized_at: float | None = None
    tag_ids: list[str] = field(default_factory=list)
    physical_sample_id: str | None = None
    #: chunk requests that arrived after the first finalize
    chunks_after_finalize: int = 0


@dataclass(frozen=True)
class StoredChunk:
    """One stored version of one channel's chunk."""

    timestamps: tuple[float, ...]
    values: tuple[float, ...]
    units: str | None


@dataclass
class TrackingConfig:
    """A project's tracking samples, as ``/configuration/tracking_samples`` sets them."""

    tracking_physical_sample_ids: list[str] = field(default_factory=list)
    active_tracking_physical_sample_id: str | None = None


class ApiError(Exception):
    """Answer the request with ``status`` and ``{"detail": detail}``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass
class Answer:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


ChunkKey = tuple[str, str, int]

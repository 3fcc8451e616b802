"""The Atomscale API's state and endpoints, in memory: what answers a request that got past the faults and the key.

:class:`EmulatedApi` holds samples, tags, streams, chunks and projects' tracking samples, routes a
request to its endpoint (:meth:`EmulatedApi.route`), and answers the queries tests make about what
was stored. It knows nothing of HTTP, keys or faults (:mod:`simulators.services.atomscale.emulator`).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import unquote

from simulators.services.atomscale.bodies import channel_chunk, json_object, need_post, same_name, text
from simulators.services.atomscale.records import (
    Answer,
    ApiError,
    ChunkKey,
    EmulatedStream,
    StoredChunk,
    TrackingConfig,
)

_STREAM_PREFIX = "/tool-state/stream/"
_FINALIZE_SUFFIX = "/finalize"
_PROJECT_PREFIX = "/projects/"
_TRACKING_SUFFIX = "/configuration/tracking_samples"


class EmulatedApi:
    """The emulated API's state, behind one re-entrant lock: server threads and tests may call at once."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.RLock()
        self._id_rng = random.Random(seed ^ 0x5EED)
        self._streams: dict[str, EmulatedStream] = {}
        self._samples: dict[str, str] = {}  # id -> name
        self._tags: dict[str, str] = {}  # id -> name
        self._projects: dict[str, TrackingConfig] = {}
        self._chunks: dict[ChunkKey, list[StoredChunk]] = {}
        self.repeats = 0
        self.conflicts = 0

    # ------------------------------------------------------------------ what the organisation already has

    def add_physical_sample(self, name: str) -> str:
        """A sample that already exists in the organisation; returns its id."""
        with self._lock:
            sample_id = self._new_id()
            self._samples[sample_id] = name
            return sample_id

    def add_tag(self, name: str) -> str:
        """A tag that already exists in the organisation; returns its id."""
        with self._lock:
            tag_id = self._new_id()
            self._tags[tag_id] = name
            return tag_id

    # ------------------------------------------------------------------ queries for tests

    def streams(self) -> list[EmulatedStream]:
        with self._lock:
            return [EmulatedStream(**{**asdict(s), "tag_ids": list(s.tag_ids)}) for s in self._streams.values()]

    def stream(self, data_id: str) -> EmulatedStream:
        with self._lock:
            s = self._streams[data_id]
            return EmulatedStream(**{**asdict(s), "tag_ids": list(s.tag_ids)})

    def physical_samples(self) -> dict[str, str]:
        """id -> name"""
        with self._lock:
            return dict(self._samples)

    def tags(self) -> dict[str, str]:
        """id -> name"""
        with self._lock:
            return dict(self._tags)

    def tracking(self, project_id: str) -> TrackingConfig | None:
        with self._lock:
            config = self._projects.get(project_id)
            if config is None:
                return None
            return TrackingConfig(list(config.tracking_physical_sample_ids), config.active_tracking_physical_sample_id)

    def chunk_keys(self, data_id: str | None = None) -> list[ChunkKey]:
        """Every stored (data_id, channel, chunk_index), sorted."""
        with self._lock:
            return sorted(k for k in self._chunks if data_id is None or k[0] == data_id)

    def chunk_versions(self, data_id: str, channel: str, chunk_index: int) -> list[StoredChunk]:
        """The versions stored at one key: one, or more after a conflict."""
        with self._lock:
            return list(self._chunks.get((data_id, channel, chunk_index), []))

    def channels(self, data_id: str) -> list[str]:
        with self._lock:
            return sorted({k[1] for k in self._chunks if k[0] == data_id})

    def points(self, data_id: str, channel: str) -> tuple[list[float], list[float]]:
        """One channel's stored timestamps and values, chunks in chunk_index order (every version)."""
        timestamps: list[float] = []
        values: list[float] = []
        with self._lock:
            for key in sorted(k for k in self._chunks if k[0] == data_id and k[1] == channel):
                for version in self._chunks[key]:
                    timestamps.extend(version.timestamps)
                    values.extend(version.values)
        return timestamps, values

    def units(self, data_id: str, channel: str) -> set[str | None]:
        with self._lock:
            return {v.units for k, versions in self._chunks.items() if k[:2] == (data_id, channel) for v in versions}

    def duplicates_stored(self, data_id: str | None = None) -> int:
        """How many (data_id, channel, timestamp) are stored more than once, across all chunk keys."""
        seen: dict[tuple[str, str, float], int] = {}
        with self._lock:
            for (stream, channel, _), versions in self._chunks.items():
                if data_id is not None and stream != data_id:
                    continue
                for version in versions:
                    for t in version.timestamps:
                        seen[(stream, channel, t)] = seen.get((stream, channel, t), 0) + 1
        return sum(1 for n in seen.values() if n > 1)

    # ------------------------------------------------------------------ endpoints (server threads, lock held)

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def route(self, method: str, path: str, body: Any) -> Answer:
        """Answer one authorized API request; ApiError for a bad one."""
        if path == "/physical_samples/":
            return self._samples_endpoint(method, body)
        if path == "/tags/":
            return self._tags_endpoint(method, body)
        need_post(method)
        if path == "/tool-state/stream/initialize":
            return self._initialize(body)
        if path == "/tags/data-items/":
            return self._attach_tags(body)
        if path == "/data_entries/physical_sample":
            return self._link_sample(body)
        if path == "/tool-state/stream/chunk":
            return self._chunk_single(body)
        if path == "/tool-state/stream/chunk/multi":
            return self._chunk_multi(body)
        if path.startswith(_STREAM_PREFIX) and path.endswith(_FINALIZE_SUFFIX):
            data_id = unquote(path[len(_STREAM_PREFIX):-len(_FINALIZE_SUFFIX)])
            if data_id and "/" not in data_id:
                return self._finalize(data_id)
        if path.startswith(_PROJECT_PREFIX) and path.endswith(_TRACKING_SUFFIX):
            project_id = unquote(path[len(_PROJECT_PREFIX):-len(_TRACKING_SUFFIX)])
            if project_id and "/" not in project_id:
                return self._tracking(project_id, body)
        raise ApiError(404, "Not Found")

    def _samples_endpoint(self, method: str, body: Any) -> Answer:
        if method == "GET":
            return Answer(200, [{"id": i, "name": n} for i, n in self._samples.items()])
        need_post(method)
        name = text(json_object(body), "name").strip()
        if not name:
            raise ApiError(422, "name must not be empty")
        for sample_id, existing in self._samples.items():
            if same_name(existing.strip(), name):
                raise ApiError(409, {"physical_sample_id": sample_id})
        sample_id = self._new_id()
        self._samples[sample_id] = name
        return Answer(201, {"id": sample_id, "name": name})

    def _tags_endpoint(self, method: str, body: Any) -> Answer:
        if method == "GET":
            return Answer(200, [{"id": i, "name": n} for i, n in self._tags.items()])
        need_post(method)
        name = text(json_object(body), "name").strip()
        if not name:
            raise ApiError(422, "name must not be empty")
        if any(same_name(existing, name) for existing in self._tags.values()):
            raise ApiError(400, f"a tag named {name!r} already exists")
        tag_id = self._new_id()
        self._tags[tag_id] = name
        return Answer(201, {"id": tag_id, "name": name})

    def _initialize(self, body: Any) -> Answer:
        data = json_object(body)
        stream_name = data.get("stream_name")
        if stream_name is not None and not isinstance(stream_name, str):
            raise ApiError(422, "stream_name must be a string or null")
        synth = data.get("synth_source_id")
        if synth is not None and (isinstance(synth, bool) or not isinstance(synth, int)):
            raise ApiError(422, "synth_source_id must be an integer")
        ppc = data.get("points_per_chunk")
        if isinstance(ppc, bool) or not isinstance(ppc, int) or ppc <= 0:
            raise ApiError(422, "points_per_chunk must be a positive integer")
        project_id = data.get("project_id")
        if project_id is not None and not isinstance(project_id, str):
            raise ApiError(422, "project_id must be a string or null")
        stream = EmulatedStream(data_id=self._new_id(), processed_data_id=self._new_id(), stream_name=stream_name,
                                synth_source_id=synth, points_per_chunk=ppc, project_id=project_id,
                                created_at=time.time())
        self._streams[stream.data_id] = stream
        return Answer(200, {"data_id": stream.data_id, "processed_data_id": stream.processed_data_id})

    def _streams_named(self, data: Mapping[str, Any]) -> list[EmulatedStream]:
        ids = data.get("data_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(422, "data_ids must be a non-empty list of strings")
        missing = [i for i in ids if i not in self._streams]
        if missing:
            raise ApiError(404, f"unknown data ids: {missing}")
        return [self._streams[i] for i in ids]

    def _attach_tags(self, body: Any) -> Answer:
        data = json_object(body)
        streams = self._streams_named(data)
        tag_ids = data.get("tag_ids")
        if not isinstance(tag_ids, list) or not all(isinstance(t, str) for t in tag_ids):
            raise ApiError(422, "tag_ids must be a list of strings")
        missing = [t for t in tag_ids if t not in self._tags]
        if missing:
            raise ApiError(404, f"unknown tag ids: {missing}")
        for stream in streams:
            stream.tag_ids.extend(t for t in tag_ids if t not in stream.tag_ids)
        return Answer(200, {"ok": True})

    def _link_sample(self, body: Any) -> Answer:
        data = json_object(body)
        streams = self._streams_named(data)
        sample_id = text(data, "physical_sample_id")
        if sample_id not in self._samples:
            raise ApiError(404, "unknown physical sample")
        for stream in streams:
            stream.physical_sample_id = sample_id
        return Answer(200, {"ok": True})

    def _tracking(self, project_id: str, body: Any) -> Answer:
        data = json_object(body)
        sample_id = text(data, "physical_sample_id")
        if sample_id not in self._samples:
            raise ApiError(404, "unknown physical sample")
        set_active = data.get("set_active", False)
        if not isinstance(set_active, bool):
            raise ApiError(422, "set_active must be a boolean")
        config = self._projects.setdefault(project_id, TrackingConfig())
        if sample_id not in config.tracking_physical_sample_ids:
            config.tracking_physical_sample_ids.append(sample_id)
        if set_active:
            config.active_tracking_physical_sample_id = sample_id
        return Answer(200, asdict(config))

    def _stream_for_chunk(self, data: Mapping[str, Any]) -> tuple[EmulatedStream, int]:
        data_id = text(data, "data_id")
        stream = self._streams.get(data_id)
        if stream is None:
            raise ApiError(404, f"unknown data id {data_id!r}")
        index = data.get("chunk_index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ApiError(422, "chunk_index must be a non-negative integer")
        return stream, index

    def _chunk_single(self, body: Any) -> Answer:
        data = json_object(body)
        stream, index = self._stream_for_chunk(data)
        name = text(data, "channel_name")
        chunk = channel_chunk(name, data)
        self._store(stream, index, {name: chunk})
        return Answer(200, {"ok": True})

    def _chunk_multi(self, body: Any) -> Answer:
        data = json_object(body)
        stream, index = self._stream_for_chunk(data)
        channels = data.get("channels")
        if not isinstance(channels, dict) or not channels:
            raise ApiError(422, "channels must be a non-empty object")
        chunks = {str(name): channel_chunk(str(name), json_object(channel)) for name, channel in channels.items()}
        self._store(stream, index, chunks)
        return Answer(200, {"ok": True})

    def _store(self, stream: EmulatedStream, index: int, chunks: Mapping[str, StoredChunk]) -> None:
        if stream.finalized:
            stream.chunks_after_finalize += 1
        for name, chunk in chunks.items():
            versions = self._chunks.setdefault((stream.data_id, name, index), [])
            if chunk in versions:
                self.repeats += 1
                continue
            if versions:
                self.conflicts += 1
            versions.append(chunk)

    def _finalize(self, data_id: str) -> Answer:
        stream = self._streams.get(data_id)
        if stream is None:
            raise ApiError(404, f"unknown data id {data_id!r}")
        stream.finalize_calls += 1
        if not stream.finalized:
            stream.finalized = True
            stream.finalized_at = time.time()
        return Answer(200, {"data_id": data_id, "finalized": True})

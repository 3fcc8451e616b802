"""The local store, the uploader's embedded default sink: one folder per run (DESIGN.md section 5, a contract).

```
STORE/<data_id>/manifest.json
STORE/<data_id>/chunks/<flow>/<chunk_index:06d>.msgpack
```

A chunk file is the msgpack of exactly the body the Atomscale API would receive for
``push_multi``. Every file is written atomically (temporary file, fsync, rename, fsync of the
folder), so a reader or a crash never sees half a chunk, and a chunk rewritten after a crash
replaces an identical one. ``data_id`` is the run id: initializing twice gives the same folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bridge.publish.codec import pack
from bridge.uploader.sinks.base import ChunkBody, SinkRejected, SinkUnavailable, StreamInfo


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that it holds either the old or the new content, durably."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """Create ``path`` and make its entry durable in its parent (a new folder is lost on power loss otherwise)."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    _fsync_dir(path.parent)


class LocalSink:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._known_dirs: set[Path] = set()

    def _dir(self, path: Path) -> Path:
        if path not in self._known_dirs:
            _ensure_dir(path)
            self._known_dirs.add(path)
        return path

    def _guard(self, what: str, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except FileNotFoundError as exc:
            self._known_dirs.clear()  # the store was moved or removed under us: recreate on retry
            raise SinkUnavailable(f"local store {self.root}: {what}: {exc}") from exc
        except PermissionError as exc:
            raise SinkRejected(f"local store {self.root}: {what}: {exc}") from exc
        except OSError as exc:  # disk full, I/O error: transient from where we stand
            raise SinkUnavailable(f"local store {self.root}: {what}: {exc}") from exc

    def initialize(self, stream: StreamInfo) -> str:
        data_id = stream.run_id
        manifest = {
            "v": 1, "data_id": data_id, "stream_name": stream.stream_name, "site": stream.site,
            "run_id": stream.run_id, "physical_sample": stream.physical_sample,
            "synth_source_id": stream.synth_source_id, "project_id": stream.project_id, "tags": list(stream.tags),
            "points_per_chunk": stream.points_per_chunk, "started_at": stream.started_at, "stopped_at": None,
            "exit_status": None, "finalized": False, "finalized_at": None, "channels": {}, "flows": {}, "gaps": [],
        }
        run_dir = self.root / data_id

        def create() -> None:
            # inside the guard: the check itself can fail (a store the uploader may not search)
            if (run_dir / "manifest.json").exists():
                return  # initialized before a crash; never overwrite (it may be finalized already)
            self._dir(run_dir / "chunks")
            write_atomically(run_dir / "manifest.json", _json(manifest))

        self._guard(f"initialize {data_id}", create)
        return data_id

    def push_chunk(self, data_id: str, flow: str, body: ChunkBody) -> None:
        def write() -> None:
            folder = self._dir(self.root / data_id / "chunks" / flow)
            write_atomically(folder / f"{body['chunk_index']:06d}.msgpack", pack(body))

        self._guard(f"chunk {body['chunk_index']} of {flow} in {data_id}", write)

    def finalize(self, data_id: str, manifest: dict[str, Any]) -> None:
        self._guard(f"finalize {data_id}", write_atomically, self.root / data_id / "manifest.json", _json(manifest))

    def close(self) -> None:
        pass


def _json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode()

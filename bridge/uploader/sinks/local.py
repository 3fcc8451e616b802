"""The local store, the uploader's embedded default sink: one folder per run (docs/design.md section 5, a contract).

```
STORE/<data_id>/manifest.json
STORE/<data_id>/chunks/<flow>/<chunk_index:06d>.msgpack
```

A chunk file is the msgpack of the chunk the uploader cut (store version 2, docs/store.md): the
body the Atomscale API would receive for ``push_multi``, plus every reading whose quality is not
ok (no value, its quality code) and the values' types. Every file is written atomically
(temporary file, fsync, rename, fsync of the folder), so a reader or a crash never sees half a
chunk, and a chunk rewritten after a crash replaces an identical one. ``data_id`` is the run id:
initializing twice gives the same folder.

Every path is built by :mod:`bridge.store.layout`, which refuses a run id, flow or chunk index
that is not a plain name or number and any path a symlink would lead out of the store: such a
call is a :class:`SinkRejected` naming the component, and nothing is written anywhere.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from bridge.names import printable
from bridge.store import layout
from bridge.uploader.sinks.base import ChunkBody, RunRejected, SinkRejected, SinkUnavailable, StreamInfo
from bridge.wire.contract import pack


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that it holds either the old or the new content, durably."""
    tmp = path.with_name(f".{path.name}.tmp")
    # O_NOFOLLOW: a symlink planted as the temporary file must not be written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
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
        except layout.StoreLayoutError as exc:  # a hostile or broken name: a person must look, retrying won't help
            raise RunRejected(f"local store {self.root}: {what}: refused: {exc}") from exc
        except FileNotFoundError as exc:
            self._known_dirs.clear()  # the store was moved or removed under us: recreate on retry
            raise SinkUnavailable(f"local store {self.root}: {what}: {exc}") from exc
        except PermissionError as exc:
            raise SinkRejected(f"local store {self.root}: {what}: {exc}") from exc
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # disk full, I/O error: transient from where we stand
                raise SinkUnavailable(f"local store {self.root}: {what}: {exc}") from exc
            # a symlink planted where a temporary file goes (O_NOFOLLOW refused it): a person must look
            raise RunRejected(f"local store {self.root}: {what}: refused a symbolic link: {exc}") from exc

    def initialize(self, stream: StreamInfo) -> str:
        data_id = stream.run_id
        manifest = {
            "v": layout.MANIFEST_VERSION, "data_id": data_id, "stream_name": stream.stream_name, "site": stream.site,
            "run_id": stream.run_id, "physical_sample": stream.physical_sample,
            "synth_source_id": stream.synth_source_id, "project_id": stream.project_id, "tags": list(stream.tags),
            "points_per_chunk": stream.points_per_chunk, "started_at": stream.started_at, "stopped_at": None,
            "exit_status": None, "finalized": False, "finalized_at": None, "channels": {}, "flows": {}, "gaps": [],
        }

        def create() -> None:
            # inside the guard: the paths are checked and the check can fail (a store the
            # uploader may not search)
            path = layout.manifest_path(self.root, data_id)
            if path.exists():
                return  # initialized before a crash; never overwrite (it may be finalized already)
            self._dir(layout.chunks_dir(self.root, data_id))
            write_atomically(path, _json(manifest))

        self._guard(f"initialize {_shown(data_id)}", create)
        return data_id

    def push_chunk(self, data_id: str, flow: str, body: ChunkBody) -> None:
        index = body.get("chunk_index")

        def write() -> None:
            path = layout.chunk_path(self.root, data_id, flow, index)
            self._dir(path.parent)
            write_atomically(path, pack(body))

        self._guard(f"chunk {_shown(index)} of {_shown(flow)} in {_shown(data_id)}", write)

    def finalize(self, data_id: str, manifest: dict[str, Any]) -> None:
        def write() -> None:
            write_atomically(layout.manifest_path(self.root, data_id), _json(manifest))

        self._guard(f"finalize {_shown(data_id)}", write)

    def close(self) -> None:
        pass


def _shown(value: object) -> str:
    """A component as a log line may show it: escaped, cut (it may be what was refused)."""
    return printable(value, 80)


def _json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode()

"""Growth runs: start and stop markers written into the ordered log (DESIGN.md section 4).

A marker is an outbox entry like any reading, so it has a seq and the uploader knows exactly
which readings belong to the run. The open run is persisted with its marker in one
transaction; a bridge that died with a run open closes it with ``abort`` when it starts again,
so no stream is left open forever.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from bridge.publish import codec
from bridge.publish.outbox import Outbox

log = logging.getLogger("bridge.runs")

EXIT_STATUSES = ("success", "abort", "fail")
START_FIELDS = ("stream_name", "physical_sample", "synth_source_id", "project_id", "tags")


class Runs:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._lock = threading.Lock()

    @property
    def current(self) -> dict[str, Any] | None:
        return self.outbox.open_run

    def recover(self) -> None:
        """Close a run a crash left open: its stream must end, marked as aborted."""
        if self.current is not None:
            run_id = self.current.get("run_id")
            seq = self._stop("abort", "the bridge restarted while the run was open")
            log.warning("run %s was left open by a crash or power cut: closed as abort (seq %s)", run_id, seq)

    def start(self, params: dict[str, Any]) -> tuple[bool, str, int | None]:
        name = params.get("stream_name")
        if not isinstance(name, str) or not name.strip():
            return False, "start_run needs a stream_name", None
        with self._lock:
            if self.current is not None:
                return False, f"run {self.current['run_id']} ({self.current['stream_name']}) is still open", None
            body: dict[str, Any] = {key: params.get(key) for key in START_FIELDS}
            body["tags"] = list(params.get("tags") or [])
            body["run_id"] = str(params.get("run_id") or uuid.uuid4().hex)
            seq = self.outbox.append_marker("run_start", body, open_run=body)
        log.info("run %s (%s) started at seq %d", body["run_id"], name, seq)
        return True, f"run {body['run_id']} started", seq

    def stop(self, params: dict[str, Any]) -> tuple[bool, str, int | None]:
        status = params.get("exit_status", "success")
        if status not in EXIT_STATUSES:
            return False, f"exit status must be one of {', '.join(EXIT_STATUSES)}, not {status!r}", None
        with self._lock:
            if self.current is None:
                return False, "no run is open", None
            run_id = self.current["run_id"]
            seq = self._stop(status, params.get("reason"))
        log.info("run %s stopped (%s) at seq %d", run_id, status, seq)
        return True, f"run {run_id} stopped ({status})", seq

    def _stop(self, status: str, reason: Any) -> int:
        run = self.current or {}
        last = self.outbox.flush()
        body = {"run_id": run.get("run_id"), "exit_status": status, "last_seq": last,
                **({"reason": reason} if reason else {})}
        return self.outbox.append_marker("run_stop", body, open_run=None)

    def handle(self, command: codec.Command) -> tuple[bool, str, int | None]:
        if command.action == "start_run":
            return self.start(command.params)
        if command.action == "stop_run":
            return self.stop(command.params)
        return False, f"unknown action {command.action!r}", None

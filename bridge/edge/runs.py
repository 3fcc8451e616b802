"""Growth runs: start and stop markers written into the ordered log (docs/design.md section 4).

A marker is an outbox entry like any reading, so it has a seq and the uploader knows exactly
which readings belong to the run. The open run is persisted with its marker in one
transaction; a bridge that died with a run open closes it with ``abort`` when it starts again,
so no stream is left open forever.

Run ids are the bridge's alone (:func:`bridge.names.new_run_id`): a run id becomes a folder of
the store and an id at the API, so one taken from a command (``../../../x``) could write
anywhere. Commands carry names and metadata only, checked by the wire contract
(:func:`bridge.wire.contract.command_params`) before they get here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.edge.outbox import Outbox
from bridge.names import new_run_id, printable
from bridge.wire import contract

log = logging.getLogger("bridge.edge.runs")

#: what every request answers: whether the marker was logged, one line for the operator, its seq
Outcome = tuple[bool, str, int | None]


class Runs:
    def __init__(self, outbox: Outbox, *, auto_configured: bool = False) -> None:
        self.outbox = outbox
        self._lock = threading.Lock()
        #: whether ``bridge.runs.auto`` is configured
        self.auto_configured = auto_configured
        self._auto_switch = True

    @property
    def auto_enabled(self) -> bool:
        """Whether the automatic trigger may open and close runs: configured, and not switched off."""
        return self.auto_configured and self._auto_switch

    def set_auto(self, enabled: bool) -> Outcome:
        """Switch the automatic trigger on or off (``chamber-bridge auto on|off``)."""
        if not self.auto_configured:
            return False, "no automatic runs are configured (bridge.runs.auto)", None
        self._auto_switch = enabled
        return True, f"automatic runs {'on' if enabled else 'off'}", None

    def annotate(self, text: str, tags: Sequence[str] = (), source: str = "cli") -> Outcome:
        """An event of the open run (a trigger's, an operator's): logged by this process."""
        run = self.current
        log.info("event (%s)%s: %s%s", source, f" in run {printable(run.get('run_id'), 80)}" if run else "",
                 printable(text, 300), f" [{', '.join(tags)}]" if tags else "")
        return True, "event logged", None

    @property
    def current(self) -> dict[str, Any] | None:
        return self.outbox.open_run

    def recover(self) -> None:
        """Close a run a crash left open: its stream must end, marked as aborted."""
        if self.current is not None:
            run_id = self.current.get("run_id")
            seq = self._stop(contract.StopRun("abort", "the bridge restarted while the run was open"))
            log.warning("run %s was left open by a crash or power cut: closed as abort (seq %s)",
                        printable(run_id, 80), seq)

    def start(self, params: contract.StartRun | Mapping[str, Any], *, trigger: str = "manual",
              why: Mapping[str, Any] | None = None, pre_roll_from: int | None = None) -> Outcome:
        """Open a run under a fresh run id; a mapping is checked as a command's params first.

        An automatic run's marker also carries ``trigger``, ``why`` (the expression and the values
        that made it true) and ``pre_roll_from`` (the first seq of its pre-roll, docs/payload.md).
        Any open run, manual or automatic, refuses a start.
        """
        try:
            start = params if isinstance(params, contract.StartRun) else contract.command_params("start_run", params)
        except contract.CommandError as exc:
            return False, exc.reason, None
        assert isinstance(start, contract.StartRun)
        with self._lock:
            current = self.current
            if current is not None:
                return False, (f"run {printable(current.get('run_id'), 80)} "
                               f"({printable(current.get('stream_name'), 80)}) is still open"), None
            if trigger not in contract.TRIGGERS:
                return False, f"trigger must be one of {', '.join(contract.TRIGGERS)}", None
            run_id = new_run_id()
            body: dict[str, Any] = {**contract.params_map(start), "run_id": run_id}
            if trigger != "manual":
                body["trigger"] = trigger
            if why is not None:
                body["why"] = contract.why_body(why)
            if pre_roll_from is not None:
                body["pre_roll_from"] = pre_roll_from
            seq = self.outbox.append_marker("run_start", body, open_run={
                **body, "trigger": trigger, "started_at": time.time()})
        log.info("run %s (%s) started at seq %d (%s)", run_id, printable(start.stream_name), seq, trigger)
        return True, f"run {run_id} started", seq

    def stop(self, params: contract.StopRun | Mapping[str, Any], *, why: Mapping[str, Any] | None = None,
             if_trigger: str | None = None) -> Outcome:
        """Close the open run (manual or automatic); a mapping is checked as a command's params first.

        ``if_trigger`` closes it only if it was opened that way: an automatic stop condition must
        never close a run an operator started by hand, even one started a moment ago.
        """
        try:
            stop = params if isinstance(params, contract.StopRun) else contract.command_params("stop_run", params)
        except contract.CommandError as exc:
            return False, exc.reason, None
        assert isinstance(stop, contract.StopRun)
        with self._lock:
            current = self.current
            if current is None:
                return False, "no run is open", None
            run_id = printable(current.get("run_id"), 80)
            if if_trigger is not None and current.get("trigger", "manual") != if_trigger:
                opened = current.get("trigger", "manual")
                return False, f"run {run_id} was opened {opened}, not {if_trigger}: left open", None
            seq = self._stop(stop, why)
        log.info("run %s stopped (%s) at seq %d", run_id, stop.exit_status, seq)
        return True, f"run {run_id} stopped ({stop.exit_status})", seq

    def _stop(self, stop: contract.StopRun, why: Mapping[str, Any] | None = None) -> int:
        run = self.current or {}
        last = self.outbox.flush()
        body = {"run_id": run.get("run_id"), "exit_status": stop.exit_status, "last_seq": last,
                **({"reason": stop.reason} if stop.reason else {}),
                **({"why": contract.why_body(why)} if why is not None else {})}
        return self.outbox.append_marker("run_stop", body, open_run=None)

    def handle(self, command: contract.Command) -> Outcome:
        """A command from the broker, its params already checked by :func:`contract.decode_command`."""
        if isinstance(command.params, contract.StartRun):
            return self.start(command.params)
        return self.stop(command.params)


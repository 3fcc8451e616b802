"""``chamber-bridge health``: is the uploader (or a site's bridge) up, judged by its retained status?

Both services publish a retained JSON status (docs/payload.md) every few seconds while they run,
and ``offline`` on a clean stop or, through the broker's last will, when their connection dies.
So one subscription answers the question a container healthcheck or a monitoring probe asks:

- ``online`` and younger than ``max_age``: healthy (exit 0);
- ``offline``: the service stopped or lost the broker (exit 1);
- ``online`` but older than ``max_age``: the service is hung, or it lost the broker and its will
  has not fired yet (exit 1);
- no status, no broker, a refused login or subscription: exit 1, saying which.

The age is the probe's clock minus the ``time`` in the status: run the probe on the machine the
service runs on (the Docker healthcheck does), or keep both clocks NTP-synchronised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bridge.config import Config
from bridge.names import printable
from bridge.wire import contract
from bridge.wire.request import fetch_retained
from bridge.wire.topics import Topics, uploader_status

Role = Literal["uploader", "bridge"]
ROLES: tuple[Role, ...] = ("uploader", "bridge")
DEFAULT_MAX_AGE = 30.0
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    #: one line saying why (``online: ...``, ``offline: ...``, ``stale: ...``)
    message: str


def status_topic(config: Config, role: Role) -> str:
    """The retained status topic of the uploader, or of the config's site's bridge."""
    if role == "uploader":
        return uploader_status(config.mqtt.topic_prefix)
    return Topics(config.mqtt.topic_prefix, config.site).status


def describe(config: Config, role: Role) -> str:
    return "the uploader" if role == "uploader" else f"the bridge of site {config.site}"


def check_health(config: Config, role: Role = "uploader", *, max_age: float = DEFAULT_MAX_AGE,
                 timeout: float = DEFAULT_TIMEOUT, now: Callable[[], float] = time.time) -> Health:
    """Fetch the retained status and judge it; :class:`~bridge.wire.request.NoAnswer` if there is none to judge."""
    topic = status_topic(config, role)
    payload = fetch_retained(config.mqtt, topic, timeout, describe(config, role))
    return judge(payload, describe(config, role), topic, max_age=max_age, now=now())


def judge(payload: bytes, who: str, topic: str, *, max_age: float, now: float) -> Health:
    """Healthy if the status says ``online`` and is at most ``max_age`` seconds old."""
    try:
        status = contract.decode_status(payload, f"status on {topic}")
    except contract.BadMessage as exc:
        return Health(False, f"unreadable {exc}")
    state, stamp = status.get("state"), status.get("time")
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return Health(False, f"unreadable status on {topic}: no 'time'")
    age = now - float(stamp)
    if state == "offline":
        return Health(False, f"offline: {who} went offline {_ago(age)} ({topic})")
    if state != "online":
        return Health(False, f"unknown state {state!r} on {topic}")
    if age > max_age:
        return Health(False, f"stale: {who} last reported {_ago(age)} (max {max_age:g} s): it is hung, "
                             f"or it lost the broker and its last will has not fired yet")
    details = _details(status)
    skew = f"; its clock is {-age:.0f} s ahead of this one" if age < -max_age else ""
    return Health(True, f"online: {who}, status {max(age, 0.0):.1f} s old{details}{skew}")


def _ago(age: float) -> str:
    return f"{age:.0f} s ago" if age >= 0 else f"{-age:.0f} s in the future (clocks differ)"


def _details(status: dict[str, Any]) -> str:
    """What an operator looks at next: queue depths, alarms, unavailable instruments, clock sync."""
    parts: list[str] = []
    alarms: list[str] = []
    spool = status.get("spool")
    if isinstance(spool, dict):
        parts.append(f"spool depth {spool.get('depth')}")
        if spool.get("alarm"):
            alarms.append("spool full (intake paused)")
    runs_open = status.get("runs_open")
    if isinstance(runs_open, list):
        parts.append(f"{len(runs_open)} runs open")
    sinks = status.get("sinks")
    if isinstance(sinks, dict):
        for kind, sink in sinks.items():
            if isinstance(sink, dict):
                parts.append(f"{kind} backlog {sink.get('backlog')}")
                if sink.get("alarm"):
                    alarms.append(f"{kind} sink: {sink.get('last_error')}")
                if sink.get("warning"):
                    alarms.append(f"{kind} sink: {sink.get('warning')}")
    for failed in status.get("runs_failed") or ():
        if isinstance(failed, dict):
            alarms.append(f"run {failed.get('run_id')} set aside: {failed.get('reason')}")
    for failed in status.get("sources_failed") or ():
        if isinstance(failed, dict):
            alarms.append(f"site {failed.get('site')} epoch {failed.get('epoch')} set aside: {failed.get('reason')}")
    bad = status.get("bad_messages")
    if isinstance(bad, dict) and bad:
        counts = {site: reasons for site, reasons in bad.items() if isinstance(reasons, dict)}
        parts.append(f"{sum(n for r in counts.values() for n in r.values() if isinstance(n, int))} messages "
                     f"quarantined")
        alarms.extend(f"site {site} replayed run ids {reasons['run_id_reused']} times"
                      for site, reasons in counts.items() if reasons.get("run_id_reused"))
    outbox = status.get("outbox")
    if isinstance(outbox, dict):
        parts.append(f"outbox depth {outbox.get('depth')}")
        if outbox.get("overflow"):
            alarms.append("outbox overflow (readings refused)")
    instruments = status.get("instruments")
    if isinstance(instruments, list):
        down = [str(i.get("name")) for i in instruments if isinstance(i, dict) and not i.get("available")]
        parts.append(f"{len(instruments) - len(down)}/{len(instruments)} instruments available")
        if down:
            alarms.append(f"unavailable: {', '.join(down)}")
    clock = status.get("clock")
    if isinstance(clock, dict) and "ntp_synchronized" in clock:
        synced = {True: "synchronized", False: "NOT synchronized"}.get(clock["ntp_synchronized"], "unknown")
        parts.append(f"ntp {synced}")
    text = f"; {', '.join(parts)}" if parts else ""
    # a status is anybody's JSON on the broker: printed escaped
    return printable(text + (f"; ALARM: {'; '.join(alarms)}" if alarms else ""), 2000)

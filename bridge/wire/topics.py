"""The MQTT topic names of docs/design.md section 9, built in one place.

A misspelt topic fails silently in MQTT (a publish to a topic nobody subscribes to is simply
dropped), so every component takes its names from here rather than formatting its own.
"""

from __future__ import annotations

from dataclasses import dataclass


def _check_levels(value: str, what: str, *, slashes: bool) -> None:
    """Refuse names that would turn a topic into a wildcard or split it into other levels."""
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"topic {what} {value!r} must be non-empty and must not start, end or double a '/'")
    bad = [c for c in ("+", "#", "\0", *(() if slashes else ("/",))) if c in value]
    if bad:
        raise ValueError(f"topic {what} {value!r} must not contain {' or '.join(map(repr, bad))}")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one site (one bridge); ``prefix`` may have several levels (``lab/mbe``)."""

    prefix: str
    site: str

    def __post_init__(self) -> None:
        _check_levels(self.prefix, "prefix", slashes=True)
        _check_levels(self.site, "site", slashes=False)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}"

    @property
    def data(self) -> str:
        """Batches of log entries, QoS1 (bridge -> uploader)."""
        return f"{self.base}/data"

    @property
    def status(self) -> str:
        """Retained bridge status; ``offline`` is also the last will."""
        return f"{self.base}/status"

    @property
    def command(self) -> str:
        """start_run / stop_run requests (CLI -> bridge)."""
        return f"{self.base}/command"

    @property
    def command_reply(self) -> str:
        """Answers to commands (bridge -> CLI); not matched by a subscription to ``command``."""
        return f"{self.base}/command/reply"

    @property
    def ack(self) -> str:
        """Highest contiguous seq committed by the uploader (uploader -> bridge)."""
        return f"{self.base}/ack"

    @property
    def run(self) -> str:
        """Retained state of the open run, for dashboards."""
        return f"{self.base}/run"


def uploader_status(prefix: str) -> str:
    """The uploader's retained status topic: one uploader serves every site under ``prefix``."""
    _check_levels(prefix, "prefix", slashes=True)
    return f"{prefix}/uploader/status"


def site_level(topic: str, prefix: str, suffix: str) -> str:
    """The ``{site}`` level of ``{prefix}/{site}/{suffix}`` as it arrived (unchecked: see bridge.names).

    The uploader takes a message's site from here, never from its payload: the broker's ACL
    ties a topic to the bridge allowed to publish on it (docs/security.md).
    """
    head, tail = f"{prefix}/", f"/{suffix}"
    if not (topic.startswith(head) and topic.endswith(tail)) or len(topic) <= len(head) + len(tail):
        raise ValueError(f"topic {topic!r} is not {prefix}/{{site}}/{suffix}")
    return topic[len(head):-len(tail)]

"""The emulator's switchable failures (the kinds are listed in :mod:`simulators.services.atomscale`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from simulators.services.atomscale.records import Answer

FAULT_KINDS = ("http_5xx", "reset", "slow", "rate_limit", "unauthorized", "forbidden", "lost_response", "drip",
               "huge_body")
#: the body ``huge_body`` sends by default
HUGE_BODY = 100_000_000
HUGE_PREFIX = b'{"pad":"'
HUGE_SUFFIX = b'"}'


@dataclass
class Fault:
    """One switchable failure; the kinds are listed in :mod:`simulators.services.atomscale`."""

    kind: str
    #: applies to the next ``count`` matching requests (this many remain)
    count: int | None = None
    #: or to each matching request with this probability
    probability: float | None = None
    #: only paths starting with this (e.g. ``/tool-state/stream/chunk``)
    path_prefix: str | None = None
    #: the status of ``http_5xx``
    status: int = 503
    #: seconds a ``slow`` request waits; seconds between two bytes of a ``drip`` answer
    delay: float = 1.0
    #: bytes of a ``huge_body`` answer
    size: int = HUGE_BODY
    #: the ``Retry-After`` of ``rate_limit``, in seconds
    retry_after: float = 1.0
    #: send ``Retry-After`` as an HTTP date instead of seconds
    retry_after_date: bool = False
    #: how many requests this fault has hit so far
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.count is not None and self.probability is not None:
            raise ValueError("a fault has a count or a probability, not both")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        if self.kind == "http_5xx" and not 500 <= self.status <= 599:
            raise ValueError("http_5xx needs a 5xx status")
        if self.delay < 0 or self.retry_after < 0:
            raise ValueError("delay and retry_after must be >= 0")
        if self.size < len(HUGE_PREFIX) + len(HUGE_SUFFIX):
            raise ValueError(f"size must be >= {len(HUGE_PREFIX) + len(HUGE_SUFFIX)}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """A fault from the admin endpoint's JSON (the same field names)."""
        known = {name for name in cls.__dataclass_fields__ if name != "hits"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        return cls(**dict(data))


def fault_answer(fault: Fault) -> Answer:
    """What an answering fault (http_5xx, rate_limit, unauthorized, forbidden) says instead of the API."""
    if fault.kind == "http_5xx":
        return Answer(fault.status, {"detail": HTTPStatus(fault.status).phrase})
    if fault.kind == "rate_limit":
        retry_after = (formatdate(time.time() + fault.retry_after, usegmt=True) if fault.retry_after_date
                       else f"{fault.retry_after:g}")
        return Answer(429, {"detail": "Too Many Requests"}, {"Retry-After": retry_after})
    if fault.kind == "forbidden":
        return Answer(403, {"detail": "not enough permissions"})
    return Answer(401, {"detail": "missing or invalid API key"})

"""The sink's pure parts: Retry-After, tag names as the SDK cleans them, the instrument id."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from bridge.uploader.sinks.atomscale import _clean_tags, _synth_source_id, parse_retry_after
from bridge.uploader.sinks.base import SinkRejected


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0), (" 3 ", 3.0), ("0", 0.0), ("1.5", 1.5), ("-4", 0.0),
    (None, None), ("", None), ("soon", None), ("nan", None), ("inf", None),
])
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = 1_763_700_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0, "a date past is now"
    assert parse_retry_after("Wed, 32 Foo 2015 07:28:00 GMT", now=now) is None


def test_tags_are_trimmed_and_deduplicated_like_the_sdk() -> None:
    assert _clean_tags(("GaN", " gan ", "", "  ", "growth", "GROWTH", "Ünïcode", "ünïcode")) == \
           ["GaN", "growth", "Ünïcode", "ünïcode"]  # the SDK folds ASCII letters only


def test_the_instrument_id_is_sent_as_an_integer() -> None:
    assert _synth_source_id("3") == 3
    assert _synth_source_id(" 42 ") == 42
    assert _synth_source_id(None) is None
    assert _synth_source_id(" ") is None
    with pytest.raises(SinkRejected, match="integer"):
        _synth_source_id("MBE-1")

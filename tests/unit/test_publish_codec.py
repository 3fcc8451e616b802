"""The payload schema (docs/payload.md) and the topic names: exact shapes, strict decoding, named errors."""

from __future__ import annotations

import contextlib
import json
import random
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from bridge.errors import ProtocolError
from bridge.model import Quality, Reading
from bridge.publish import codec
from bridge.publish.codec import LogEntry
from bridge.publish.topics import Topics, uploader_status

DOCS = Path(__file__).resolve().parents[2] / "docs" / "payload.md"

GAUGE = Reading("main_gauge", "p1", 1.2345678901234e-7, Quality.OK, 1_763_700_000.123456, "mbar")
OFF = Reading("main_gauge", "p2", None, Quality.SENSOR_OFF, 1_763_700_000.5, "mbar", "gauge switched off")


def entries() -> list[LogEntry]:
    return [
        LogEntry(41, "run_start", 1_763_700_000.0, {"run_id": "r1", "stream_name": "GaN-17", "tags": ["a"]}),
        LogEntry(42, "reading", GAUGE.timestamp, codec.reading_body(GAUGE)),
        LogEntry(43, "reading", OFF.timestamp, codec.reading_body(OFF)),
        LogEntry(44, "run_stop", 1_763_700_001.0, {"run_id": "r1", "exit_status": "success", "last_seq": 43}),
    ]


def without_ellipsis(raw: dict[str, Any]) -> dict[str, Any]:
    """``...`` marks a key a test wants gone."""
    return {k: v for k, v in raw.items() if v is not ...}


def packed(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj)
    return data


# ---------------------------------------------------------------- readings


def test_reading_body_uses_the_compact_keys_and_omits_an_empty_detail() -> None:
    assert codec.reading_body(GAUGE) == {"i": "main_gauge", "c": "p1", "v": GAUGE.value, "q": "ok",
                                         "t": GAUGE.timestamp, "u": "mbar"}
    assert codec.reading_body(OFF)["d"] == "gauge switched off"
    assert codec.reading_body(OFF)["v"] is None


@pytest.mark.parametrize("reading", [GAUGE, OFF], ids=["value", "status"])
def test_readings_round_trip_bit_for_bit_through_msgpack(reading: Reading) -> None:
    body = codec.unpack_body(codec.pack(codec.reading_body(reading)))
    assert codec.reading_from_body(body) == reading


def test_an_integer_value_from_another_writer_reads_as_a_float() -> None:
    reading = codec.reading_from_body({**codec.reading_body(GAUGE), "v": 3})
    assert reading.value == 3.0 and isinstance(reading.value, float)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"i": ...}, "reading: missing key 'i'"),
        ({"q": "fine"}, "reading main_gauge/p1: unknown quality 'fine'"),
        ({"v": None}, "reading main_gauge/p1: a value of quality ok needs a number"),
        ({"v": True}, "reading main_gauge/p1: key 'v' must be a number or nil, got True"),
        ({"t": "noon"}, "reading main_gauge/p1: key 't' must be a number, got 'noon'"),
        ({"d": 5}, "reading main_gauge/p1: key 'd' must be a string, got 5"),
    ],
)
def test_bad_reading_bodies_name_what_is_wrong(change: dict[str, Any], message: str) -> None:
    body = without_ellipsis({**codec.reading_body(GAUGE), **change})
    with pytest.raises(ProtocolError) as info:
        codec.reading_from_body(body)
    assert str(info.value) == message


# ---------------------------------------------------------------- batches


def test_batch_layout_is_the_documented_one() -> None:
    raw = msgpack.unpackb(codec.encode_batch("chamber-a", "e" * 32, entries()[:2]))
    assert raw == {"v": 1, "site": "chamber-a", "epoch": "e" * 32, "entries": [
        [41, "run_start", 1_763_700_000.0, entries()[0].body],
        [42, "reading", GAUGE.timestamp, codec.reading_body(GAUGE)],
    ]}


def test_batches_round_trip_in_seq_order() -> None:
    batch = codec.decode_batch(codec.encode_batch("chamber-a", "ab12", entries()))
    assert (batch.site, batch.epoch) == ("chamber-a", "ab12")
    assert list(batch.entries) == entries()
    assert [codec.reading_from_body(e.body) for e in batch.entries if e.kind == "reading"] == [GAUGE, OFF]


def test_unknown_keys_are_ignored_so_optional_keys_need_no_new_version() -> None:
    raw = msgpack.unpackb(codec.encode_batch("chamber-a", "ab12", entries()[1:2]))
    raw["compressed"] = False
    raw["entries"][0][3]["x"] = "new optional key"
    batch = codec.decode_batch(packed(raw))
    assert codec.reading_from_body(batch.entries[0].body) == GAUGE


def _batch_with(**change: Any) -> bytes:
    raw: dict[str, Any] = {"v": 1, "site": "s", "epoch": "e", "entries": [[1, "reading", 1.0, {}]]}
    raw.update(change)
    return packed(without_ellipsis(raw))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_batch_with(v=2), "batch: payload version 2 is not supported (this codec reads 1)"),
        (_batch_with(v=...), "batch: missing key 'v'"),
        (_batch_with(v="1"), "batch: key 'v' must be an integer, got '1'"),
        (_batch_with(site=...), "batch: missing key 'site'"),
        (_batch_with(epoch=...), "batch: missing key 'epoch'"),
        (_batch_with(entries=...), "batch: missing key 'entries'"),
        (_batch_with(entries={}), "batch: key 'entries' must be an array, got {}"),
        (_batch_with(entries=[[1, "reading", 1.0]]),
         "batch entry 0: expected [seq, kind, time, body], got [1, 'reading', 1.0]"),
        (_batch_with(entries=[[1, "reading", 1.0, {}], [0, "reading", 1.0, {}]]),
         "batch entry 1: key 'seq' must be an integer >= 1, got 0"),
        (_batch_with(entries=[[True, "reading", 1.0, {}]]),
         "batch entry 0: key 'seq' must be an integer >= 1, got True"),
        (_batch_with(entries=[[1, "sample", 1.0, {}]]),
         "batch entry 0: kind 'sample' is not one of reading, run_start, run_stop"),
        (_batch_with(entries=[[1, "reading", None, {}]]), "batch entry 0: key 'time' must be a number, got None"),
        (_batch_with(entries=[[1, "reading", 1.0, []]]), "batch entry 0: key 'body' must be a map, got []"),
        (packed([1, 2]), "batch: expected a map, got list"),
    ],
)
def test_bad_batches_name_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.decode_batch(data)
    assert str(info.value) == message


def test_garbage_and_truncated_batches_raise_protocol_errors_only() -> None:
    """Whatever arrives on the topic, a decoder raises ProtocolError, never KeyError/TypeError/..."""
    good = codec.encode_batch("chamber-a", "ab12", entries())
    rng = random.Random(4)
    samples = [good[:n] for n in range(len(good))] + [rng.randbytes(rng.randrange(1, 80)) for _ in range(2000)]
    samples += [bytes(b ^ (1 << rng.randrange(8)) if i == k else b for i, b in enumerate(good))
                for k in range(len(good))]
    for data in samples:
        for decode in (codec.decode_batch, codec.decode_ack, codec.decode_command, codec.decode_reply):
            with contextlib.suppress(ProtocolError):
                decode(data)


def test_a_msgpack_error_quotes_the_start_of_the_payload() -> None:
    with pytest.raises(ProtocolError, match=r"^batch: not valid msgpack \(.*\): b'\\xc1"):
        codec.decode_batch(b"\xc1\x00")


# ---------------------------------------------------------------- acks, commands, replies


def test_acks_round_trip_and_are_checked() -> None:
    assert codec.decode_ack(codec.encode_ack("ab12", 1234)) == codec.Ack("ab12", 1234)
    assert msgpack.unpackb(codec.encode_ack("ab12", 0)) == {"v": 1, "epoch": "ab12", "seq": 0}
    with pytest.raises(ProtocolError, match=r"^ack: key 'seq' must be an integer >= 0, got -1$"):
        codec.decode_ack(packed({"v": 1, "epoch": "ab12", "seq": -1}))
    with pytest.raises(ProtocolError, match=r"^ack: missing key 'epoch'$"):
        codec.decode_ack(packed({"v": 1, "seq": 3}))


def test_commands_round_trip_and_unknown_actions_are_refused() -> None:
    params = {"stream_name": "GaN-17", "tags": ["a", "b"], "project_id": None}
    data = codec.encode_command("req-1", "start_run", params)
    assert codec.decode_command(data) == codec.Command("req-1", "start_run", params)
    with pytest.raises(ProtocolError, match=r"^command req-1: action 'reboot' is not one of start_run, stop_run$"):
        codec.decode_command(packed({"v": 1, "request_id": "req-1", "action": "reboot", "params": {}}))
    with pytest.raises(ValueError, match="reboot"):
        codec.encode_command("req-1", "reboot", {})  # type: ignore[arg-type]


@pytest.mark.parametrize("seq", [None, 57])
def test_replies_round_trip(seq: int | None) -> None:
    data = codec.encode_reply("req-1", seq is not None, "run r1 started", seq)
    assert codec.decode_reply(data) == codec.Reply("req-1", seq is not None, "run r1 started", seq)


def test_a_reply_needs_every_key() -> None:
    with pytest.raises(ProtocolError, match=r"^reply req-1: missing key 'seq'$"):
        codec.decode_reply(packed({"v": 1, "request_id": "req-1", "ok": True, "message": ""}))
    with pytest.raises(ProtocolError, match=r"^reply req-1: key 'ok' must be a boolean, got 1$"):
        codec.decode_reply(packed({"v": 1, "request_id": "req-1", "ok": 1, "message": "", "seq": None}))


# ---------------------------------------------------------------- the document


def _doc_examples() -> dict[str, Any]:
    """Examples in docs/payload.md: a ```json block right after a ``<!-- example: NAME -->`` line."""
    found = re.findall(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", DOCS.read_text(), re.S)
    return {name: json.loads(text) for name, text in found}


def test_the_documented_examples_decode_with_this_codec() -> None:
    examples = _doc_examples()
    assert set(examples) >= {"batch", "ack", "command", "reply"}
    batch = codec.decode_batch(packed(examples["batch"]))
    assert {e.kind for e in batch.entries} == {"reading", "run_start", "run_stop"}
    for entry in batch.entries:
        if entry.kind == "reading":
            codec.reading_from_body(entry.body)
    codec.decode_ack(packed(examples["ack"]))
    codec.decode_command(packed(examples["command"]))
    codec.decode_reply(packed(examples["reply"]))
    assert all(example["v"] == codec.SCHEMA_VERSION for example in examples.values())


# ---------------------------------------------------------------- topics


def test_topics_of_a_site() -> None:
    t = Topics("lab/mbe", "chamber-a")
    assert (t.data, t.status, t.command, t.command_reply, t.ack, t.run) == (
        "lab/mbe/chamber-a/data", "lab/mbe/chamber-a/status", "lab/mbe/chamber-a/command",
        "lab/mbe/chamber-a/command/reply", "lab/mbe/chamber-a/ack", "lab/mbe/chamber-a/run")
    assert uploader_status("lab/mbe") == "lab/mbe/uploader/status"


@pytest.mark.parametrize(("prefix", "site"), [("lab", "a/b"), ("lab", "+"), ("lab/#", "a"), ("", "a"), ("lab/", "a"),
                                              ("lab", "")])
def test_names_that_would_change_the_topic_tree_are_refused(prefix: str, site: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        Topics(prefix, site)


def test_a_batch_from_stored_bodies_is_byte_identical() -> None:
    from bridge.publish import codec as c

    entries = [
        c.LogEntry(7, "reading", 1795250000.25, {"i": "g", "c": "p1", "v": 1.5e-7, "q": "ok", "t": 1795250000.2,
                                                 "u": "mbar"}),
        c.LogEntry(8, "run_start", 1795250001.0, {"run_id": "r1", "stream_name": "GaAs", "tags": ["a"]}),
        c.LogEntry(9, "reading", 1795250002.5, {"i": "g", "c": "p1", "v": None, "q": "sensor_off", "t": 1.0,
                                                "u": "mbar", "d": "off"}),
    ]
    stored = [(e.seq, e.kind, e.time, c.pack(e.body)) for e in entries]
    assert c.encode_stored_batch("site-a", "ep", stored) == c.encode_batch("site-a", "ep", entries)
    assert c.decode_batch(c.encode_stored_batch("site-a", "ep", stored)).entries == tuple(entries)
    assert c.decode_batch(c.encode_stored_batch("site-a", "ep", [])).entries == ()

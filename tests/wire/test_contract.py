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
from bridge.model import Quality, Reading, ValueType
from bridge.wire import contract
from bridge.wire.contract import LogEntry
from bridge.wire.topics import Topics, uploader_status

DOCS = Path(__file__).resolve().parents[2] / "docs" / "payload.md"

GAUGE = Reading("main_gauge", "p1", 1.2345678901234e-7, Quality.OK, 1_763_700_000.123456, "mbar")
OFF = Reading("main_gauge", "p2", None, Quality.SENSOR_OFF, 1_763_700_000.5, "mbar", "gauge switched off")


RUN = "3921b9fd" * 4


def entries() -> list[LogEntry]:
    return [
        LogEntry(41, "run_start", 1_763_700_000.0, {"run_id": RUN, "stream_name": "GaN-17", "physical_sample": None,
                                                    "synth_source_id": None, "project_id": None, "tags": ["a"]}),
        LogEntry(42, "reading", GAUGE.timestamp, contract.reading_body(GAUGE)),
        LogEntry(43, "reading", OFF.timestamp, contract.reading_body(OFF)),
        LogEntry(44, "run_stop", 1_763_700_001.0, {"run_id": RUN, "exit_status": "success", "last_seq": 43}),
    ]


def without_ellipsis(raw: dict[str, Any]) -> dict[str, Any]:
    """``...`` marks a key a test wants gone."""
    return {k: v for k, v in raw.items() if v is not ...}


def packed(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj)
    return data


# ---------------------------------------------------------------- readings


def test_reading_body_uses_the_compact_keys_and_omits_an_empty_detail() -> None:
    assert contract.reading_body(GAUGE) == {"i": "main_gauge", "c": "p1", "v": GAUGE.value, "q": "ok",
                                         "t": GAUGE.timestamp, "u": "mbar"}
    assert contract.reading_body(OFF)["d"] == "gauge switched off"
    assert contract.reading_body(OFF)["v"] is None


@pytest.mark.parametrize("reading", [GAUGE, OFF], ids=["value", "status"])
def test_readings_round_trip_bit_for_bit_through_msgpack(reading: Reading) -> None:
    body = contract.unpack_body(contract.pack(contract.reading_body(reading)))
    assert contract.reading_from_body(body) == reading


TYPED = [
    Reading("psu", "output_1", True, Quality.OK, 1_763_700_000.25, "", type=ValueType.BOOL),
    Reading("cell", "status", 33, Quality.OK, 1_763_700_000.5, "", "alarm 1, sensor break", ValueType.BITS),
    Reading("plc", "count", -(2**53), Quality.OK, 1_763_700_000.75, "", type=ValueType.INT),
    Reading("psu", "mode", "CC", Quality.OK, 1_763_700_001.0, "", type=ValueType.ENUM),
    Reading("dev", "recipe", "GaN buffer 2", Quality.OK, 1_763_700_001.25, "", type=ValueType.STRING),
    Reading("psu", "mode", None, Quality.INVALID, 1_763_700_001.5, "", "not in the map", ValueType.ENUM),
]


@pytest.mark.parametrize("reading", TYPED, ids=[f"{r.type}-{r.quality}" for r in TYPED])
def test_typed_readings_carry_their_type_and_round_trip_through_a_batch(reading: Reading) -> None:
    body = contract.reading_body(reading)
    assert body["y"] == reading.type.value
    batch = contract.decode_batch(contract.encode_batch("s", "e", [LogEntry(9, "reading", reading.timestamp, body)]),
                                  "s")
    assert batch.refused == ()
    (entry,) = batch.entries
    back = contract.reading_from_body(entry.body)
    assert back == reading
    assert type(back.value) is type(reading.value)


def test_a_float_reading_carries_no_type_field() -> None:
    """The nominal reading stays as small as before: ``y`` only for the other types."""
    assert "y" not in contract.reading_body(GAUGE)
    assert len(contract.pack(contract.reading_body(GAUGE))) == len(contract.pack(
        {"i": "main_gauge", "c": "p1", "v": GAUGE.value, "q": "ok", "t": GAUGE.timestamp, "u": "mbar"}))


def test_a_typed_reading_is_checked_even_when_its_labels_were_seen_before() -> None:
    """The fast path for known labels must not let a type through unchecked."""
    good = _reading()
    contract.decode_batch(_batch_with(entries=[[1, "reading", T, good]]), "s")  # the labels are known now
    batch = contract.decode_batch(_batch_with(entries=[[2, "reading", T, {**good, "y": "string"}]]), "s")
    assert [r.reason for r in batch.refused] == ["bad_reading"]


def test_an_integer_value_from_another_writer_reads_as_a_float() -> None:
    reading = contract.reading_from_body({**contract.reading_body(GAUGE), "v": 3})
    assert reading.value == 3.0 and isinstance(reading.value, float)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"i": ...}, "reading: missing key 'i'"),
        ({"q": "fine"}, "reading main_gauge/p1: unknown quality 'fine'"),
        ({"v": None}, "reading main_gauge/p1: a value of quality ok needs a value"),
        ({"v": True}, "reading main_gauge/p1: a reading of type float cannot carry True"),
        ({"v": "7"}, "reading main_gauge/p1: a reading of type float cannot carry '7'"),
        ({"y": "complex"}, "reading main_gauge/p1: type (y) 'complex' is not one of float, int, bool, enum, string, "
                           "bits"),
        ({"y": "bool", "v": 1.0}, "reading main_gauge/p1: a reading of type bool cannot carry 1.0"),
        ({"y": "int", "v": 2**53 + 1}, f"reading main_gauge/p1: a reading of type int cannot carry {2**53 + 1}"),
        ({"t": "noon"}, "reading main_gauge/p1: key 't' must be a number, got 'noon'"),
        ({"d": 5}, "reading main_gauge/p1: key 'd' must be a string, got 5"),
    ],
)
def test_bad_reading_bodies_name_what_is_wrong(change: dict[str, Any], message: str) -> None:
    body = without_ellipsis({**contract.reading_body(GAUGE), **change})
    with pytest.raises(ProtocolError) as info:
        contract.reading_from_body(body)
    assert str(info.value) == message


# ---------------------------------------------------------------- batches


def test_batch_layout_is_the_documented_one() -> None:
    raw = msgpack.unpackb(contract.encode_batch("chamber-a", "e" * 32, entries()[:2]))
    assert raw == {"v": 1, "site": "chamber-a", "epoch": "e" * 32, "entries": [
        [41, "run_start", 1_763_700_000.0, entries()[0].body],
        [42, "reading", GAUGE.timestamp, contract.reading_body(GAUGE)],
    ]}


def test_batches_round_trip_in_seq_order() -> None:
    batch = contract.decode_batch(contract.encode_batch("chamber-a", "ab12", entries()), "chamber-a")
    assert (batch.site, batch.epoch, batch.refused) == ("chamber-a", "ab12", ())
    assert list(batch.entries) == entries()
    assert [contract.reading_from_body(e.body) for e in batch.entries if e.kind == "reading"] == [GAUGE, OFF]


def test_unknown_keys_are_ignored_so_optional_keys_need_no_new_version() -> None:
    raw = msgpack.unpackb(contract.encode_batch("chamber-a", "ab12", entries()[1:2]))
    raw["compressed"] = False
    raw["entries"][0][3]["x"] = "new optional key"
    batch = contract.decode_batch(packed(raw), "chamber-a")
    assert contract.reading_from_body(batch.entries[0].body) == GAUGE


def test_unknown_marker_keys_are_dropped_so_metadata_stays_bounded() -> None:
    raw = msgpack.unpackb(contract.encode_batch("chamber-a", "ab12", entries()[:1]))
    raw["entries"][0][3]["blob"] = b"x" * 100_000
    (start,) = contract.decode_batch(packed(raw), "chamber-a").entries
    assert start.body == entries()[0].body


def _batch_with(**change: Any) -> bytes:
    raw: dict[str, Any] = {"v": 1, "site": "s", "epoch": "e", "entries": [[1, "reading", 1.0, {}]]}
    raw.update(change)
    return packed(without_ellipsis(raw))


@pytest.mark.parametrize(
    ("data", "reason", "message"),
    [
        (_batch_with(v=2), "bad_envelope", "batch: payload version 2 is not supported (this codec reads 1)"),
        (_batch_with(v=...), "bad_envelope", "batch: missing key 'v'"),
        (_batch_with(v="1"), "bad_envelope", "batch: key 'v' must be an integer, got '1'"),
        (_batch_with(site=...), "bad_envelope", "batch: missing key 'site'"),
        (_batch_with(epoch=...), "bad_envelope", "batch: missing key 'epoch'"),
        (_batch_with(entries=...), "bad_envelope", "batch: missing key 'entries'"),
        (_batch_with(entries={}), "bad_envelope", "batch: key 'entries' must be an array, got {}"),
        (packed([1, 2]), "bad_envelope", "batch: expected a map, got list"),
        (_batch_with(site="other"), "site_mismatch", "batch on the topic of site 's' says it is from 'other'"),
        (_batch_with(epoch="../x"), "bad_epoch", "batch: epoch '../x' is not a valid name"),
        (_batch_with(entries=[[]] * (contract.MAX_BATCH_ENTRIES + 1)), "too_large",
         f"batch: {contract.MAX_BATCH_ENTRIES + 1} entries; at most {contract.MAX_BATCH_ENTRIES} are accepted"),
        (b"\xc1\x00", "not_msgpack", None),
    ],
)
def test_bad_batches_are_refused_whole_naming_why(data: bytes, reason: str, message: str | None) -> None:
    with pytest.raises(contract.BadMessage) as info:
        contract.decode_batch(data, "s")
    assert info.value.reason == reason
    if message is not None:
        assert str(info.value) == message


def test_an_oversized_message_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(contract.BadMessage, match="at most") as info:
        contract.decode_batch(b"\x00" * (contract.MAX_MESSAGE_BYTES + 1), "s")
    assert info.value.reason == "too_large"


def _reading(**change: Any) -> dict[str, Any]:
    return without_ellipsis({**contract.reading_body(GAUGE), **change})


T = 1_763_700_000.0


@pytest.mark.parametrize(
    ("entry", "seq", "reason", "fragment"),
    [
        ([1, "reading", 1.0], None, "bad_entry", "expected [seq, kind, time, body]"),
        ([0, "reading", T, _reading()], None, "bad_seq", "seq must be an integer 1..2**63-1, got 0"),
        ([True, "reading", T, _reading()], None, "bad_seq", "got True"),
        ([2**63, "reading", T, _reading()], None, "bad_seq", "got 9223372036854775808"),
        ([5, "sample", T, {}], 5, "bad_kind",
         "kind 'sample' is not one of reading, run_start, run_stop, run_resume, event"),
        ([5, "reading", None, _reading()], 5, "bad_time", "got None"),
        ([5, "reading", float("nan"), _reading()], 5, "bad_time", "got nan"),
        ([5, "reading", 1e300, _reading()], 5, "bad_time", "got 1e+300"),
        ([5, "reading", T, []], 5, "bad_entry", "body must be a map"),
        ([5, "reading", T, _reading(i=["x"])], 5, "bad_reading", "instrument (i)"),
        ([5, "reading", T, _reading(i="../..")], 5, "bad_reading", "instrument (i)"),
        ([5, "reading", T, _reading(c="p1\x1b[31m")], 5, "bad_reading", "\\x1b"),
        ([5, "reading", T, _reading(u="mbar\n")], 5, "bad_reading", "units (u)"),
        ([5, "reading", T, _reading(q="fine")], 5, "bad_reading", "quality (q) 'fine'"),
        ([5, "reading", T, _reading(v=None)], 5, "bad_reading", "needs a finite number"),
        ([5, "reading", T, _reading(v=float("inf"))], 5, "bad_reading", "needs a finite number"),
        ([5, "reading", T, _reading(q="sensor_off")], 5, "bad_reading", "must not carry a value"),
        ([5, "reading", T, _reading(t=float("nan"))], 5, "bad_reading", "timestamp (t)"),
        ([5, "reading", T, _reading(p=-1.0)], 5, "bad_reading", "poll mark (p)"),
        ([5, "reading", T, _reading(d="x" * 501)], 5, "bad_reading", "detail (d)"),
        ([5, "reading", T, _reading(y="colour")], 5, "bad_reading", "type (y) 'colour' is not one of"),
        ([5, "reading", T, _reading(y=None)], 5, "bad_reading", "type (y) None"),
        ([5, "reading", T, _reading(y="bool", v=1.0)], 5, "bad_reading",
         "type bool and quality ok needs true or false"),
        ([5, "reading", T, _reading(y="int", v=2.0)], 5, "bad_reading", "an integer within +-2**53"),
        ([5, "reading", T, _reading(y="int", v=True)], 5, "bad_reading", "an integer within +-2**53"),
        ([5, "reading", T, _reading(y="int", v=-(2**53) - 1)], 5, "bad_reading", "an integer within +-2**53"),
        ([5, "reading", T, _reading(y="bits", v=-1)], 5, "bad_reading", "an integer within 0..2**53"),
        ([5, "reading", T, _reading(y="enum", v="x" * 257)], 5, "bad_reading", "at most 256 characters"),
        ([5, "reading", T, _reading(y="string", v="run\x1b[2J")], 5, "bad_reading", "printable text"),
        ([5, "reading", T, _reading(y="string", v=3.5)], 5, "bad_reading", "printable text"),
        ([5, "reading", T, _reading(y="bool", q="sensor_off", v=False)], 5, "bad_reading", "must not carry a value"),
        ([5, "run_start", T, {"stream_name": "x"}], 5, "bad_run_start", "run_id must be 32 lowercase hex"),
        ([5, "run_start", T, {"run_id": "../../../x", "stream_name": "x"}], 5, "bad_run_start", "run_id"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x" * 5000}], 5, "bad_run_start", "5000 characters"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "a\nb"}], 5, "bad_run_start", "control characters"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "tags": 5}], 5, "bad_run_start", "list of strings"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "physical_sample": b"\x00"}], 5,
         "bad_run_start", "must be a string"),
        ([5, "run_stop", T, {"run_id": RUN, "exit_status": "great"}], 5, "bad_run_stop", "exit_status"),
        ([5, "run_stop", T, {"run_id": RUN, "exit_status": "abort", "last_seq": -3}], 5, "bad_run_stop", "last_seq"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "trigger": "timer"}], 5, "bad_run_start",
         "trigger must be one of manual, auto, got 'timer'"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "pre_roll_from": 5}], 5, "bad_run_start",
         "pre_roll_from (5) must be a seq before the marker's own (5)"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "pre_roll_from": 0}], 5, "bad_run_start",
         "pre_roll_from must be an integer 1..2**63-1, got 0"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "why": "because"}], 5, "bad_run_start",
         "why must be a map with expression and values"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "why": {"expression": "a.b > 1",
                                                                         "values": {"a.b": "hot"}}}],
         5, "bad_run_start", "why.values[a.b] must be a finite number, got 'hot'"),
        ([5, "run_start", T, {"run_id": RUN, "stream_name": "x", "why": {"expression": "a.b > 1",
                                                                         "values": {f"a.c{n}": 1 for n in range(65)}}}],
         5, "bad_run_start", "65 values; at most 64 are allowed"),
        ([5, "run_stop", T, {"run_id": RUN, "exit_status": "success", "why": {"expression": "a\x1b[2J"}}], 5,
         "bad_run_stop", "control characters"),
        ([5, "run_resume", T, {"run_id": RUN, "down_from": T}], 5, "bad_run_resume", "down_to must be Unix seconds"),
        ([5, "run_resume", T, {"run_id": "x", "down_from": T, "down_to": T}], 5, "bad_run_resume", "run_id"),
        ([5, "run_resume", T, {"run_id": RUN, "down_from": float("nan"), "down_to": T}], 5, "bad_run_resume",
         "down_from"),
        ([5, "event", T, {"text": "", "source": "cli"}], 5, "bad_event", "text must not be empty"),
        ([5, "event", T, {"text": "x" * 1001, "source": "cli"}], 5, "bad_event", "at most 1000"),
        ([5, "event", T, {"text": "ok", "source": "../cli"}], 5, "bad_event", "source must be 1-64 characters"),
        ([5, "event", T, {"text": "ok", "source": "cli", "run_id": "../x"}], 5, "bad_event", "run_id"),
        ([5, "event", T, {"text": "ok", "source": "cli", "tags": [1]}], 5, "bad_event", "tags[0] must be a string"),
    ],
)
def test_a_bad_entry_is_refused_alone_and_the_others_are_kept(entry: list[Any], seq: int | None, reason: str,
                                                               fragment: str) -> None:
    good = [7, "reading", T, _reading()]
    batch = contract.decode_batch(_batch_with(entries=[entry, good]), "s")
    assert [e.seq for e in batch.entries] == [7]
    (refused,) = batch.refused
    assert (refused.seq, refused.reason) == (seq, reason)
    assert fragment in refused.detail
    assert "\n" not in refused.detail and "\x1b" not in refused.detail


def test_garbage_and_truncated_batches_raise_protocol_errors_only() -> None:
    """Whatever arrives on the topic, a decoder raises ProtocolError, never KeyError/TypeError/..."""
    good = contract.encode_batch("chamber-a", "ab12", entries())
    rng = random.Random(4)
    samples = [good[:n] for n in range(len(good))] + [rng.randbytes(rng.randrange(1, 80)) for _ in range(2000)]
    samples += [bytes(b ^ (1 << rng.randrange(8)) if i == k else b for i, b in enumerate(good))
                for k in range(len(good))]
    for data in samples:
        for decode in (lambda d: contract.decode_batch(d, "chamber-a"), contract.decode_ack, contract.decode_command,
                       contract.decode_reply):
            with contextlib.suppress(ProtocolError):
                decode(data)


def test_a_msgpack_error_quotes_the_start_of_the_payload() -> None:
    with pytest.raises(ProtocolError, match=r"^batch: not valid msgpack \(.*\): b'\\xc1"):
        contract.decode_batch(b"\xc1\x00", "s")


# ---------------------------------------------------------------- acks, commands, replies


def test_acks_round_trip_and_are_checked() -> None:
    assert contract.decode_ack(contract.encode_ack("ab12", 1234)) == contract.Ack("ab12", 1234)
    assert msgpack.unpackb(contract.encode_ack("ab12", 0)) == {"v": 1, "epoch": "ab12", "seq": 0}
    with pytest.raises(ProtocolError, match=r"^ack: key 'seq' must be an integer >= 0, got -1$"):
        contract.decode_ack(packed({"v": 1, "epoch": "ab12", "seq": -1}))
    with pytest.raises(ProtocolError, match=r"^ack: missing key 'epoch'$"):
        contract.decode_ack(packed({"v": 1, "seq": 3}))


def test_commands_round_trip_and_unknown_actions_are_refused() -> None:
    params = {"stream_name": "GaN-17", "tags": ["a", "b"], "project_id": None}
    data = contract.encode_command("req-1", "start_run", params)
    expected = contract.Command("req-1", "start_run", contract.StartRun("GaN-17", tags=("a", "b")))
    assert contract.decode_command(data) == expected
    assert msgpack.unpackb(data)["params"] == {"stream_name": "GaN-17", "physical_sample": None,
                                               "synth_source_id": None, "project_id": None, "tags": ["a", "b"]}
    stop = contract.decode_command(contract.encode_command("req-2", "stop_run", {}))
    assert stop == contract.Command("req-2", "stop_run", contract.StopRun("success"))
    with pytest.raises(ProtocolError, match=r"^command req-1: action 'reboot' is not one of start_run, stop_run, "
                                            r"annotate, auto, next_run$"):
        contract.decode_command(packed({"v": 1, "request_id": "req-1", "action": "reboot", "params": {}}))
    with pytest.raises(ValueError, match="reboot"):
        contract.encode_command("req-1", "reboot", {})  # type: ignore[arg-type]


def command(action: str = "start_run", **params: Any) -> bytes:
    return packed({"v": 1, "request_id": "req-1", "action": action, "params": params})


@pytest.mark.parametrize(("data", "reason"), [
    (command(stream_name="x", run_id="../../../x"),
     "start_run: params must not carry a run_id; the bridge chooses the run id itself"),
    (command(stream_name="x", run_id="0" * 32),
     "start_run: params must not carry a run_id; the bridge chooses the run id itself"),
    (command(), "start_run needs a stream_name"),
    (command(stream_name=""), "start_run: stream_name must not be empty"),
    (command(stream_name="a" * 5000), "start_run: stream_name is 5000 characters long; at most 200 are allowed"),
    (command(stream_name="a\nb"), "start_run: stream_name must not contain control characters (found '\\n')"),
    (command(stream_name="\x1b[31mred"), "start_run: stream_name must not contain control characters (found '\\x1b')"),
    (command(stream_name=5), "start_run: stream_name must be a string, got int"),
    (command(stream_name="x", physical_sample="S\u202e1"),
     "start_run: physical_sample must not contain control characters (found '\\u202e')"),
    (command(stream_name="x", project_id=["p"]), "start_run: project_id must be a string, got list"),
    (command(stream_name="x", tags=5), "start_run: tags must be a list of strings, got int"),
    (command(stream_name="x", tags=["ok", 5]), "start_run: tags[1] must be a string, got int"),
    (command(stream_name="x", tags=[str(n) for n in range(33)]), "start_run: tags: 33 tags; at most 32 are allowed"),
    (command(stream_name="x", duration=5),
     "start_run: unknown param 'duration' (accepted: stream_name, physical_sample, synth_source_id, project_id, "
     "tags)"),
    (command("stop_run", exit_status="done"), "stop_run: exit_status must be one of success, abort, fail, got 'done'"),
    (command("stop_run", exit_status="fail\x1b[2J"),
     "stop_run: exit_status must be one of success, abort, fail, got 'fail\\x1b[2J'"),
    (command("stop_run", exit_status=None), "stop_run: exit_status must be one of success, abort, fail, got None"),
    (command("stop_run", reason="x" * 201), "stop_run: reason is 201 characters long; at most 200 are allowed"),
    (command("stop_run", run_id="0" * 32), "stop_run: unknown param 'run_id' (accepted: exit_status, reason)"),
    (command("annotate"), "annotate needs a text"),
    (command("annotate", text="a\nb"), "annotate: text must not contain control characters (found '\\n')"),
    (command("annotate", text="x" * 1001), "annotate: text is 1001 characters long; at most 1000 are allowed"),
    (command("annotate", text="x", tags="shutter"), "annotate: tags must be a list of strings, got str"),
    (command("annotate", text="x", source="rule"), "annotate: unknown param 'source' (accepted: text, tags)"),
    (command("auto"), "auto: enabled must be true or false, got None"),
    (command("auto", enabled="on"), "auto: enabled must be true or false, got 'on'"),
    (command("next_run", run_id="0" * 32),
     "next_run: params must not carry a run_id; the bridge chooses the run id itself"),
    (command("next_run", stream_name="a\x1b"), "next_run: stream_name must not contain control characters "
                                                "(found '\\x1b')"),
    (command("next_run", trigger="auto"), "next_run: unknown param 'trigger' (accepted: stream_name, "
                                          "physical_sample, synth_source_id, project_id, tags)"),
    (packed({"v": 1, "request_id": "req-1", "action": "stop_run", "params": 5}),
     "stop_run: params must be a map, got int"),
    (packed({"v": 1, "request_id": "req-1", "action": "stop_run"}), "missing key 'params'"),
    (packed({"v": 2, "request_id": "req-1", "action": "stop_run", "params": {}}),
     "payload version 2 is not supported (this codec reads 1)"),
])
def test_bad_command_params_are_refused_with_one_line_that_keeps_the_request_id(data: bytes, reason: str) -> None:
    with pytest.raises(contract.CommandError) as caught:
        contract.decode_command(data)
    assert caught.value.request_id == "req-1", "a refusal the bridge can address must be answerable"
    assert caught.value.reason == reason
    assert str(caught.value) == f"command req-1: {reason}"
    assert caught.value.reason.isprintable()


@pytest.mark.parametrize("data", [
    b"\xc1", packed([1, 2]), packed({"v": 1, "action": "stop_run", "params": {}}),
    packed({"v": 1, "request_id": 7, "action": "stop_run", "params": {}}),
    packed({"v": 1, "request_id": "r\n1", "action": "stop_run", "params": {}}),
    packed({"v": 1, "request_id": "r" * 65, "action": "stop_run", "params": {}}),
    packed({"v": 1, "request_id": "req-1", "pad": "x" * 20_000}),
])
def test_a_command_without_a_readable_request_id_is_refused_without_one(data: bytes) -> None:
    with pytest.raises(contract.CommandError) as caught:
        contract.decode_command(data)
    assert caught.value.request_id is None
    assert str(caught.value).startswith("command: ") and str(caught.value).isprintable()


def test_senders_check_params_before_sending() -> None:
    with pytest.raises(contract.CommandError, match="run_id"):
        contract.encode_command("req-1", "start_run", {"stream_name": "x", "run_id": "0" * 32})
    with pytest.raises(contract.CommandError, match="control characters"):
        contract.encode_command("req-1", "start_run", {"stream_name": "x\n"})
    with pytest.raises(ValueError, match="StopRun params do not go with the action start_run"):
        contract.encode_command("req-1", "start_run", contract.StopRun())
    data = contract.encode_command("req-1", "stop_run", contract.StopRun("abort", "power cut"))
    assert contract.decode_command(data).params == contract.StopRun("abort", "power cut")


def test_the_run_commands_round_trip() -> None:
    cases: list[tuple[Any, dict[str, Any], Any]] = [
        ("annotate", {"text": "Ga shutter open", "tags": ["shutter"]}, contract.Annotate("Ga shutter open",
                                                                                           ("shutter",))),
        ("auto", {"enabled": False}, contract.SetAuto(False)),
        ("next_run", {"physical_sample": "S-17", "tags": ["GaAs"]}, contract.NextRun(physical_sample="S-17",
                                                                                      tags=("GaAs",))),
        ("next_run", {}, contract.NextRun()),
    ]
    for action, params, expected in cases:
        command = contract.decode_command(contract.encode_command("req-1", action, params))
        assert (command.action, command.params) == (action, expected)
        assert contract.decode_command(contract.encode_command("req-1", action, expected)).params == expected
    assert contract.NextRun().empty and not contract.NextRun(project_id="p").empty
    with pytest.raises(ValueError, match="SetAuto params do not go with the action annotate"):
        contract.encode_command("req-1", "annotate", contract.SetAuto(True))


def test_the_new_markers_and_events_round_trip_and_keep_only_known_keys() -> None:
    why = {"expression": "cell_ga.pv > 500.0 && pyrometer.temperature > 300.0",
           "values": {"cell_ga.pv": 512.5, "pyrometer.temperature": 301}}
    good = [
        [10, "run_start", T, {"run_id": RUN, "stream_name": "auto-1", "tags": ["auto"], "trigger": "auto",
                              "why": why, "pre_roll_from": 3, "extra": "dropped"}],
        [11, "event", T, {"text": "Ga shutter open", "tags": ["shutter"], "source": "cli", "run_id": RUN, "x": 1}],
        [12, "run_resume", T, {"run_id": RUN, "down_from": T - 3, "down_to": T, "x": 1}],
        [13, "run_stop", T, {"run_id": RUN, "exit_status": "success", "last_seq": 12, "why": why}],
    ]
    batch = contract.decode_batch(_batch_with(entries=good), "s")
    assert batch.refused == ()
    start, event, resume, stop = (e.body for e in batch.entries)
    assert start == {"run_id": RUN, "stream_name": "auto-1", "physical_sample": None, "synth_source_id": None,
                     "project_id": None, "tags": ["auto"], "trigger": "auto", "why": why, "pre_roll_from": 3}
    assert event == {"text": "Ga shutter open", "tags": ["shutter"], "source": "cli", "run_id": RUN}
    assert resume == {"run_id": RUN, "down_from": T - 3, "down_to": T}
    assert stop["why"] == why


def test_baseline_entries_round_trip_keeping_only_known_keys() -> None:
    snapshot = {"identity": {"vendor": "Pfeiffer Vacuum", "serial": "44990000"},
                "configuration": {"unit": "mbar", "emissivity": 0.7, "exposure_code": 3, "use_ieee": True},
                "errors": {"SN?": "SN? refused with NAK160"}, "t": T, "extra": "dropped"}
    good = [[20, "baseline", T, {"when": "start", "run_id": RUN, "instruments": {"gauge": snapshot}, "x": 1}],
            [21, "baseline", T, {"when": "connect", "run_id": None,
                                 "instruments": {"pyro": {"identity": {}, "configuration": {},
                                                          "error": "unavailable: no reply"}}}]]
    batch = contract.decode_batch(_batch_with(entries=good), "s")
    assert batch.refused == ()
    start, connect = (e.body for e in batch.entries)
    assert start == {"when": "start", "run_id": RUN, "instruments": {"gauge": {
        "identity": snapshot["identity"], "configuration": snapshot["configuration"], "errors": snapshot["errors"],
        "t": T}}}
    assert connect["instruments"]["pyro"]["error"] == "unavailable: no reply"
    assert {"baseline"} <= contract.MARKERS


@pytest.mark.parametrize(("body", "message"), [
    ({"when": "later", "run_id": RUN, "instruments": {}}, "when must be one of connect, start, stop"),
    ({"when": "stop", "run_id": None, "instruments": {}}, "a baseline read at a run's stop names its run_id"),
    ({"when": "start", "run_id": "../x", "instruments": {}}, "run_id must be 32 lowercase hex digits"),
    ({"when": "start", "run_id": RUN, "instruments": []}, "instruments must be a map"),
    ({"when": "start", "run_id": RUN, "instruments": {"a/b": {}}}, "instrument must be 1-64 characters"),
    ({"when": "start", "run_id": RUN, "instruments": {"g": {"identity": {"serial": "x\x1b[2J"}}}},
     "must not contain control characters"),
    ({"when": "start", "run_id": RUN, "instruments": {"g": {"configuration": {"e": float("nan")}}}},
     "must be a finite number"),
    ({"when": "start", "run_id": RUN, "instruments": {"g": {"configuration": {"bad key": 1}}}},
     "configuration key must be 1-64 characters"),
    ({"when": "start", "run_id": RUN, "instruments": {"g": {"configuration": {"n": [1, 2]}}}},
     "must be a string"),
    ({"when": "start", "run_id": RUN, "instruments": {f"i{n}": {} for n in range(257)}}, "at most 256"),
    ({"when": "start", "run_id": RUN, "instruments": {"g": {"identity": {f"k{n}": "v" for n in range(129)}}}},
     "at most 128"),
])
def test_a_bad_baseline_is_refused_alone_naming_the_problem(body: dict[str, Any], message: str) -> None:
    batch = contract.decode_batch(_batch_with(entries=[[30, "baseline", T, body], [31, "event", T, {
        "text": "kept", "tags": [], "source": "cli", "run_id": None}]]), "s")
    assert [e.seq for e in batch.entries] == [31]
    (refused,) = batch.refused
    assert (refused.seq, refused.reason) == (30, "bad_baseline") and message in refused.detail


@pytest.mark.parametrize("seq", [None, 57])
def test_replies_round_trip(seq: int | None) -> None:
    data = contract.encode_reply("req-1", seq is not None, "run r1 started", seq)
    assert contract.decode_reply(data) == contract.Reply("req-1", seq is not None, "run r1 started", seq)


def test_a_reply_needs_every_key() -> None:
    with pytest.raises(ProtocolError, match=r"^reply req-1: missing key 'seq'$"):
        contract.decode_reply(packed({"v": 1, "request_id": "req-1", "ok": True, "message": ""}))
    with pytest.raises(ProtocolError, match=r"^reply req-1: key 'ok' must be a boolean, got 1$"):
        contract.decode_reply(packed({"v": 1, "request_id": "req-1", "ok": 1, "message": "", "seq": None}))


# ---------------------------------------------------------------- the document


def _doc_examples() -> dict[str, Any]:
    """Examples in docs/payload.md: a ```json block right after a ``<!-- example: NAME -->`` line."""
    found = re.findall(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", DOCS.read_text(), re.S)
    return {name: json.loads(text) for name, text in found}


def test_the_documented_examples_decode_with_this_codec() -> None:
    examples = _doc_examples()
    assert set(examples) >= {"batch", "ack", "command", "reply"}
    batch = contract.decode_batch(packed(examples["batch"]), examples["batch"]["site"])
    assert batch.refused == ()
    assert {e.kind for e in batch.entries} == {"reading", "run_start", "run_stop", "run_resume", "event", "baseline"}
    for entry in batch.entries:
        if entry.kind == "reading":
            contract.reading_from_body(entry.body)
    contract.decode_ack(packed(examples["ack"]))
    for name in ("command", "command_annotate", "command_auto", "command_next_run"):
        contract.decode_command(packed(examples[name]))
    contract.decode_reply(packed(examples["reply"]))
    assert all(example["v"] == contract.SCHEMA_VERSION for example in examples.values())


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
    from bridge.wire import contract as c

    entries = [
        c.LogEntry(7, "reading", 1795250000.25, {"i": "g", "c": "p1", "v": 1.5e-7, "q": "ok", "t": 1795250000.2,
                                                 "u": "mbar"}),
        c.LogEntry(8, "run_start", 1795250001.0, {"run_id": RUN, "stream_name": "GaAs", "physical_sample": None,
                                                  "synth_source_id": None, "project_id": None, "tags": ["a"]}),
        c.LogEntry(9, "reading", 1795250002.5, {"i": "g", "c": "p1", "v": None, "q": "sensor_off",
                                                "t": 1795250002.4, "u": "mbar", "d": "off"}),
    ]
    stored = [(e.seq, e.kind, e.time, c.pack(e.body)) for e in entries]
    assert c.encode_stored_batch("site-a", "ep", stored) == c.encode_batch("site-a", "ep", entries)
    assert c.decode_batch(c.encode_stored_batch("site-a", "ep", stored), "site-a").entries == tuple(entries)
    assert c.decode_batch(c.encode_stored_batch("site-a", "ep", []), "site-a").entries == ()

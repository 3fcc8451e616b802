"""The chunker as pure logic: where points start, where chunks are cut, the chunk body and the push_multi body.

docs/design.md section 5.
"""

from __future__ import annotations

import json

import msgpack  # type: ignore[import-untyped]
import pytest

from bridge.uploader.chunker import ChunkReading, CutChunk, FlowCutter, channel_name, chunk_body, numeric_body
from bridge.wire.contract import pack

T0 = 1_763_700_000.0

#: one flow's readings in seq order: (seq, channel, timestamp); a poll of two channels every second
Feed = list[tuple[int, str, float]]


def polls(n: int, channels: tuple[str, ...] = ("p1", "p2"), first_seq: int = 1, seq_step: int = 1) -> Feed:
    """``n`` polls of ``channels``; ``seq_step`` > 1 leaves room for other flows' readings between them."""
    feed: Feed = []
    seq = first_seq
    for k in range(n):
        for channel in channels:
            feed.append((seq, channel, T0 + k))
            seq += seq_step
    return feed


def cut_all(feed: Feed, ppc: int, cutter: FlowCutter | None = None, finish: bool = True) -> list[CutChunk]:
    cutter = cutter if cutter is not None else FlowCutter("gauge")
    cuts = [c for seq, channel, t in feed if (c := cutter.add(seq, channel, t, ppc)) is not None]
    if finish and (last := cutter.finish()) is not None:
        cuts.append(last)
    return cuts


# ---------------------------------------------------------------- points


def test_a_new_point_starts_when_the_timestamp_changes() -> None:
    cutter = FlowCutter("gauge")
    cutter.add(1, "p1", T0, 100)
    cutter.add(2, "p2", T0, 100)
    assert (cutter.total_points, cutter.point_channels) == (1, ["p1", "p2"])
    cutter.add(3, "p1", T0 + 0.5, 100)
    assert (cutter.total_points, cutter.point_time, cutter.point_channels) == (2, T0 + 0.5, ["p1"])
    # a channel missing from a poll (its read failed) does not merge two polls: the time tells them apart
    cutter.add(4, "p2", T0 + 1.0, 100)
    assert (cutter.total_points, cutter.point_channels) == (3, ["p2"])


def test_a_repeated_channel_with_the_same_timestamp_starts_a_new_point() -> None:
    """Two polls that share a timestamp (a coarse clock) are still two points."""
    cutter = FlowCutter("gauge")
    for seq, channel in enumerate(["p1", "p2", "p1", "p2", "p1"], start=1):
        cutter.add(seq, channel, T0, 100)
    assert cutter.total_points == 3
    assert cutter.point_channels == ["p1"]


# ---------------------------------------------------------------- chunks


@pytest.mark.parametrize("ppc", [1, 2, 3, 7, 10, 11])
def test_chunk_k_holds_points_k_ppc_to_k_plus_1_ppc_minus_1(ppc: int) -> None:
    n = 10
    feed = polls(n, first_seq=5, seq_step=3)  # seqs 5, 8, 11, ...: other flows' readings in between
    point_seqs = [(feed[2 * k][0], feed[2 * k + 1][0]) for k in range(n)]  # (first, last) seq of point k
    cuts = cut_all(feed, ppc)
    expected = []
    for index, first in enumerate(range(0, n, ppc)):
        last = min(first + ppc, n) - 1
        expected.append(CutChunk("gauge", index, point_seqs[first][0], point_seqs[last][1], last - first + 1))
    assert cuts == expected
    assert sum(c.points for c in cuts) == n


def test_the_last_chunk_is_shorter_and_only_cut_at_finish() -> None:
    cutter = FlowCutter("gauge")
    feed = polls(7)  # 7 points, seqs 1..14
    cuts = cut_all(feed, 3, cutter, finish=False)
    assert cuts == [CutChunk("gauge", 0, 1, 6, 3), CutChunk("gauge", 1, 7, 12, 3)]
    assert cutter.finish() == CutChunk("gauge", 2, 13, 14, 1)
    assert cutter.finish() is None  # nothing left: finishing twice cuts nothing more
    assert FlowCutter("gauge").finish() is None  # a flow without a point has no chunk


def test_a_run_that_ends_on_a_full_chunk_has_no_empty_last_chunk() -> None:
    cuts = cut_all(polls(6), 3)
    assert [(c.chunk_index, c.points) for c in cuts] == [(0, 3), (1, 3)]


def test_a_chunk_is_not_cut_until_the_next_point_starts() -> None:
    """The poll's later channels may still be arriving; only the next poll's first reading closes the chunk."""
    cutter = FlowCutter("gauge")
    assert cutter.add(1, "p1", T0, 2) is None
    assert cutter.add(2, "p2", T0, 2) is None
    assert cutter.add(3, "p1", T0 + 1, 2) is None  # chunk 0 now holds its 2 points ...
    assert cutter.add(4, "p2", T0 + 1, 2) is None  # ... and still takes this poll's second channel
    assert cutter.add(5, "p3", T0 + 1, 2) is None  # ... and a third
    assert cutter.add(6, "p1", T0 + 2, 2) == CutChunk("gauge", 0, 1, 5, 2)
    assert (cutter.chunk_index, cutter.first_seq, cutter.points_in_chunk) == (1, 6, 1)


def test_a_cut_is_triggered_by_a_repeated_channel_as_well_as_by_a_new_time() -> None:
    cutter = FlowCutter("gauge")
    cutter.add(1, "p1", T0, 1)
    assert cutter.add(2, "p1", T0, 1) == CutChunk("gauge", 0, 1, 1, 1)


@pytest.mark.parametrize("split", range(0, 23))
def test_a_cutter_saved_as_json_anywhere_cuts_exactly_as_one_that_never_stopped(split: int) -> None:
    """The ledger saves the cutter in its transaction; a crash resumes from that JSON, mid-chunk or mid-poll."""
    feed = [*polls(7, channels=("p1", "p2", "p3")), (22, "p1", T0 + 7.25)]  # ends on a half poll
    uninterrupted = cut_all(feed, 3)
    first = FlowCutter("gauge")
    before = cut_all(feed[:split], 3, first, finish=False)
    saved = json.loads(json.dumps(first.to_json()))
    resumed = FlowCutter.from_json(saved)
    assert resumed == first
    assert before + cut_all(feed[split:], 3, resumed) == uninterrupted


def test_to_json_is_plain_json_of_every_field() -> None:
    cutter = FlowCutter("gauge")
    cut_all(polls(4), 3, cutter, finish=False)
    assert cutter.to_json() == {"flow": "gauge", "chunk_index": 1, "first_seq": 7, "last_seq": 8, "points_in_chunk": 1,
                                "point_time": T0 + 3, "point_channels": ["p1", "p2"], "total_points": 4,
                                "stats": {"p1": [4, 0, 1, "", False], "p2": [4, 0, 1, "", False]},
                                "chunk_channels": ["p1", "p2"], "qualities": {}, "types": {}, "types_changed": [],
                                "not_numeric": {}, "first_units": {"p1": "", "p2": ""}}


def test_a_cutter_saved_before_qualities_and_types_were_counted_still_loads() -> None:
    """An uploader upgraded in the middle of a run reads the cutter the older one saved."""
    old = {"flow": "gauge", "chunk_index": 0, "first_seq": 1, "last_seq": 2, "points_in_chunk": 1,
           "point_time": T0, "point_channels": ["p1", "p2"], "total_points": 1,
           "stats": {"p1": [1, 0, 0, "mbar", False], "p2": [0, 1, 0, None, False]}, "chunk_channels": ["p1"]}
    cutter = FlowCutter.from_json(old)
    cutter.add(3, "p2", T0 + 1, 100, "sensor_off", "mbar")
    assert cutter.stats["p2"] == [0, 2, 0, None, False]
    assert cutter.qualities == {"p2": {"sensor_off": 1}}
    assert cutter.first_units == {}  # not known for channels seen before the upgrade
    assert json.loads(json.dumps(cutter.to_json())) == cutter.to_json()


# ---------------------------------------------------------------- the counts for the completeness report


def test_the_cutter_counts_good_and_bad_readings_and_the_chunks_each_channel_is_in() -> None:
    """What the manifest reports per channel: ok and other readings (per quality), the chunks it is in
    (every chunk it has a reading in: the store keeps readings of every quality)."""
    cutter = FlowCutter("gauge")
    off = {1, 3, 4, 5}  # p2 is off in poll 1 and in all of chunk 1 (polls 3-5 at ppc 3)
    off_all = set(range(8))  # p3 never has a good reading
    for k in range(8):
        seq = 3 * k + 1
        cutter.add(seq, "p1", T0 + k, 3, "ok", "mbar")
        cutter.add(seq + 1, "p2", T0 + k, 3, "sensor_off" if k in off else "ok", "mbar")
        cutter.add(seq + 2, "p3", T0 + k, 3, "no_sensor" if k in off_all else "ok", "mbar")
    cutter.finish()
    assert cutter.stats == {"p1": [8, 0, 3, "mbar", False], "p2": [4, 4, 3, "mbar", False],
                            "p3": [0, 8, 3, None, False]}
    assert cutter.qualities == {"p2": {"sensor_off": 4}, "p3": {"no_sensor": 8}}
    assert (cutter.total_points, cutter.chunk_index) == (8, 3)


def test_a_channel_off_for_a_whole_chunk_is_still_counted_in_it() -> None:
    cutter = FlowCutter("pyro")
    for k in range(6):
        cutter.add(2 * k + 1, "t1", T0 + k, 2, "ok", "C")
        cutter.add(2 * k + 2, "t2", T0 + k, 2, "ok" if k >= 2 else "not_ready", "C")
    cutter.finish()
    assert cutter.stats["t2"] == [4, 2, 3, "C", False]
    assert cutter.stats["t1"][2] == 3


def test_types_are_those_of_the_first_reading_a_change_is_flagged_and_text_values_counted() -> None:
    cutter = FlowCutter("psu")
    cutter.add(1, "output", T0, 100, "ok", "", "bool")
    cutter.add(2, "mode", T0, 100, "ok", "", "enum")
    cutter.add(3, "volts", T0, 100, "ok", "V")
    cutter.add(4, "output", T0 + 1, 100, "ok", "", "bool")
    cutter.add(5, "mode", T0 + 1, 100, "invalid", "", "enum")
    cutter.add(6, "volts", T0 + 1, 100, "ok", "V", "int")  # the config changed across a restart
    assert cutter.types == {"output": "bool", "mode": "enum"}
    assert cutter.types_changed == ["volts"]
    assert cutter.not_numeric == {"mode": 1}  # ok enum readings only: the invalid one is bad quality


def test_units_are_those_of_the_first_good_reading_and_a_change_is_flagged() -> None:
    cutter = FlowCutter("gauge")
    cutter.add(1, "p1", T0, 100, "sensor_off", "")
    cutter.add(2, "p2", T0, 100, "sensor_off", "mbar")
    assert cutter.first_units == {"p1": "", "p2": "mbar"}  # a gauge off the whole run still has its unit
    cutter.add(3, "p1", T0 + 1, 100, "ok", "mbar")
    assert cutter.stats["p1"] == [1, 1, 0, "mbar", False]
    cutter.add(4, "p1", T0 + 2, 100, "ok", "Torr")  # someone switched the gauge's unit mid-run
    cutter.add(5, "p1", T0 + 3, 100, "ok", "mbar")
    assert cutter.stats["p1"] == [3, 1, 0, "mbar", True]


@pytest.mark.parametrize("split", range(0, 19))
def test_the_counts_survive_a_json_round_trip_mid_chunk(split: int) -> None:
    qualities = ["ok", "sensor_off", "ok", "ok", "over_range", "ok"]
    feed = [(seq, channel, t, qualities[seq % 6]) for seq, channel, t in polls(9)[:18]]

    def run(cutter: FlowCutter, part: list[tuple[int, str, float, str]]) -> list[CutChunk]:
        return [c for seq, ch, t, q in part if (c := cutter.add(seq, ch, t, 4, q, "mbar")) is not None]

    whole = FlowCutter("gauge")
    expected = [*run(whole, feed), whole.finish()]
    first = FlowCutter("gauge")
    cuts = run(first, feed[:split])
    resumed = FlowCutter.from_json(json.loads(json.dumps(first.to_json())))
    assert [*cuts, *run(resumed, feed[split:]), resumed.finish()] == expected
    assert resumed == whole


# ---------------------------------------------------------------- the push_multi body


def r(channel: str, t: float, value: float | str | None, quality: str = "ok", units: str = "mbar",
      detail: str | None = None, vtype: str | None = None) -> ChunkReading:
    return ChunkReading(channel, t, value, quality, units, detail, vtype)


def test_channel_names_are_instrument_slash_channel() -> None:
    assert channel_name("main_gauge", "p1") == "main_gauge/p1"


def test_chunk_body_keeps_every_reading_with_its_quality_and_detail() -> None:
    readings = [
        r("p1", T0, 1.0e-7), r("p2", T0, None, "sensor_off", detail="gauge switched off"),
        r("p1", T0 + 1, 1.1e-7), r("p2", T0 + 1, 2.5e-3),
        r("p1", T0 + 2, None, "over_range"), r("p2", T0 + 2, 2.6e-3),
    ]
    assert chunk_body("0123abcd", 4, "main_gauge", readings) == {
        "data_id": "0123abcd", "chunk_index": 4,
        "channels": {
            "main_gauge/p1": {"timestamps": [T0, T0 + 1, T0 + 2], "values": [1.0e-7, 1.1e-7, None], "units": "mbar",
                              "quality": ["ok", "ok", "over_range"]},
            "main_gauge/p2": {"timestamps": [T0, T0 + 1, T0 + 2], "values": [None, 2.5e-3, 2.6e-3], "units": "mbar",
                              "quality": ["sensor_off", "ok", "ok"], "detail": ["gauge switched off", "", ""]},
        },
    }


def test_a_chunk_of_ok_floats_is_exactly_the_push_multi_body() -> None:
    """The nominal chunk carries nothing more than the Atomscale body: no quality, detail or type lists."""
    readings = [r("p1", T0, 1.0e-7), r("p1", T0 + 1, 1.1e-7)]
    body = chunk_body("d", 0, "g", readings)
    assert body == {"data_id": "d", "chunk_index": 0,
                    "channels": {"g/p1": {"timestamps": [T0, T0 + 1], "values": [1.0e-7, 1.1e-7], "units": "mbar"}}}
    assert numeric_body(body) == (body, 0)


def test_typed_values_come_back_typed_from_the_spool_columns() -> None:
    """The spool holds a bool or an int as a REAL and a text in its own column: the chunk has them typed."""
    readings = [r("out", T0, 1.0, units="", vtype="bool"), r("mode", T0, "CV", units="", vtype="enum"),
                r("word", T0, 33.0, units="", vtype="bits", detail="alarm 1, sensor break"),
                r("out", T0 + 1, 0.0, units="", vtype="bool"), r("mode", T0 + 1, None, "invalid", "", vtype="enum"),
                r("word", T0 + 1, 0.0, units="", vtype="bits")]
    channels = chunk_body("d", 0, "psu", readings)["channels"]
    assert channels["psu/out"] == {"timestamps": [T0, T0 + 1], "values": [True, False], "units": "", "type": "bool"}
    assert channels["psu/mode"] == {"timestamps": [T0, T0 + 1], "values": ["CV", None], "units": "", "type": "enum",
                                    "quality": ["ok", "invalid"]}
    assert channels["psu/word"] == {"timestamps": [T0, T0 + 1], "values": [33, 0], "units": "", "type": "bits",
                                    "detail": ["alarm 1, sensor break", ""]}
    assert type(channels["psu/word"]["values"][0]) is int and type(channels["psu/out"]["values"][0]) is bool


def test_a_type_change_within_a_chunk_is_kept_per_point() -> None:
    readings = [r("x", T0, 1.5, units=""), r("x", T0 + 1, 2.0, units="", vtype="int")]
    assert chunk_body("d", 0, "f", readings)["channels"]["f/x"] == {
        "timestamps": [T0, T0 + 1], "values": [1.5, 2], "units": "", "types": ["float", "int"]}


def test_a_reading_of_quality_ok_without_a_value_is_never_stored_as_a_value() -> None:
    body = chunk_body("d", 0, "pyro", [r("t", T0, None), r("t", T0 + 1, 612.5, units="C")])
    assert body["channels"] == {"pyro/t": {"timestamps": [T0, T0 + 1], "values": [None, 612.5], "units": "mbar",
                                           "quality": ["invalid", "ok"], "detail": ["no value", ""]}}


def test_the_numeric_body_leaves_out_what_the_atomscale_api_cannot_hold_and_counts_it() -> None:
    readings = [r("p1", T0, 1.0), r("p2", T0, None, "sensor_off"), r("out", T0, 1.0, units="", vtype="bool"),
                r("mode", T0, "CC", units="", vtype="enum"), r("n", T0, 7.0, units="", vtype="int"),
                r("p1", T0 + 1, 2.0), r("p2", T0 + 1, None, "no_sensor"), r("out", T0 + 1, 0.0, units="", vtype="bool"),
                r("mode", T0 + 1, "CV", units="", vtype="enum"), r("n", T0 + 1, None, "invalid", "", vtype="int")]
    body, left_out = numeric_body(chunk_body("d", 3, "psu", readings))
    assert left_out == 2 + 2 + 1  # p2 twice, both enum texts, the invalid int
    assert body == {"data_id": "d", "chunk_index": 3, "channels": {
        "psu/p1": {"timestamps": [T0, T0 + 1], "values": [1.0, 2.0], "units": "mbar"},
        "psu/out": {"timestamps": [T0, T0 + 1], "values": [1.0, 0.0], "units": ""},
        "psu/n": {"timestamps": [T0], "values": [7.0], "units": ""},
    }}
    assert all(type(v) is float for c in body["channels"].values() for v in c["values"])
    assert numeric_body(chunk_body("d", 1, "g", [r("p1", T0, None, "sensor_error")])) == (
        {"data_id": "d", "chunk_index": 1, "channels": {}}, 1)


def test_channels_keep_the_order_of_their_first_reading() -> None:
    readings = [r("z", T0, 1.0), r("a", T0, 2.0), r("m", T0, 3.0), r("a", T0 + 1, 4.0), r("z", T0 + 1, 5.0)]
    assert list(chunk_body("d", 0, "f", readings)["channels"]) == ["f/z", "f/a", "f/m"]
    readings = [r("b", T0, None, "under_range"), r("a", T0, 2.0), r("b", T0 + 1, 1.0)]
    assert list(chunk_body("d", 0, "f", readings)["channels"]) == ["f/b", "f/a"]


def test_two_builds_of_a_chunk_encode_to_identical_msgpack_bytes() -> None:
    """A retried chunk must be byte-identical to the first attempt."""
    readings = [r(f"c{k % 3}", T0 + k // 3 + 0.1, k * 1.234567e-7) for k in range(30)]
    readings[4] = r("c1", T0 + 1.1, None, "sensor_off", detail="off")
    first = pack(chunk_body("d" * 32, 7, "gauge", readings))
    second = pack(chunk_body("d" * 32, 7, "gauge", iter(list(readings))))
    assert first == second
    decoded = msgpack.unpackb(first, raw=False)
    assert list(decoded) == ["data_id", "chunk_index", "channels"]
    assert list(decoded["channels"]["gauge/c0"]) == ["timestamps", "values", "units"]
    assert list(decoded["channels"]["gauge/c1"]) == ["timestamps", "values", "units", "quality", "detail"]
    assert decoded["channels"]["gauge/c0"]["values"] == [k * 1.234567e-7 for k in range(0, 30, 3)]
    assert len(decoded["channels"]["gauge/c1"]["values"]) == 10
    assert pack(numeric_body(decoded)[0]) == pack(numeric_body(chunk_body("d" * 32, 7, "gauge", readings))[0])

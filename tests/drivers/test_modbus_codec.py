"""Register decoding and read planning of the shared Modbus codec, register for register."""

from __future__ import annotations

import itertools

import pytest

from bridge.drivers.common import modbus_codec as codec
from bridge.drivers.common.modbus_codec import Block, RegisterSpec, Span, plan_blocks
from bridge.errors import ProtocolError
from bridge.model import Quality

# 0x12345678 (and friends) in the four layouts devices use: ABCD, CDAB, BADC, DCBA.
ORDERS = [
    ("big", "big", [0x1234, 0x5678]),
    ("little", "big", [0x5678, 0x1234]),
    ("big", "little", [0x3412, 0x7856]),
    ("little", "little", [0x7856, 0x3412]),
]


@pytest.mark.parametrize(("word_order", "byte_order", "registers"), ORDERS)
def test_uint32_in_every_word_and_byte_order(word_order: codec.Order, byte_order: codec.Order,
                                             registers: list[int]) -> None:
    assert codec.decode(registers, "uint32", word_order=word_order, byte_order=byte_order) == 0x12345678
    assert codec.encode(0x12345678, "uint32", word_order=word_order, byte_order=byte_order) == registers


@pytest.mark.parametrize(
    ("value_type", "registers", "value"),
    [
        ("int16", [0x0929], 2345),  # Eurotherm PV 234.5 with one decimal (docs/protocols.md 6.3)
        ("int16", [0xFFFF], -1),
        ("int16", [0x8000], -32768),
        ("uint16", [0xFFFF], 65535),
        ("int32", [0xFFFF, 0xFFFE], -2),
        ("int32", [0x8000, 0x0000], -(2**31)),
        ("uint32", [0xFFFF, 0xFFFE], 0xFFFFFFFE),
        ("float32", [0x436A, 0x8000], 234.5),  # Eurotherm IEEE region, high word first
        ("float32", [0xC2C8, 0x0000], -100.0),
        ("float32", [0x3DCC, 0xCCCD], 0.1),
        ("float64", [0x4059, 0x0000, 0x0000, 0x0000], 100.0),
        ("float64", [0x3FB9, 0x9999, 0x9999, 0x999A], 0.1),
    ],
)
def test_values_big_endian(value_type: codec.RegisterType, registers: list[int], value: float) -> None:
    assert codec.decode(registers, value_type) == value
    assert codec.encode(value, value_type) == registers


def test_float64_word_order_reverses_all_four_registers() -> None:
    assert codec.decode([0x0000, 0x0000, 0x0000, 0x4059], "float64", word_order="little") == 100.0
    assert codec.encode(100.0, "float64", word_order="little", byte_order="little") == [0, 0, 0, 0x5940]


def test_float32_little_word_order_is_garbage_when_misconfigured() -> None:
    # docs/protocols.md 6.6.3: the wrong word order turns 234.5 into a tiny denormal-looking number
    wrong = codec.decode([0x436A, 0x8000], "float32", word_order="little")
    assert wrong != 234.5 and abs(wrong) < 1e-30


def test_float32_is_reported_as_its_shortest_decimal() -> None:
    assert codec.decode(codec.encode(71.55884, "float32"), "float32") == 71.55884
    assert codec.decode([0x3DCC, 0xCCCD], "float32") == 0.1  # not 0.10000000149011612
    assert codec.shortest_float32(float("inf")) == float("inf")


def test_wrong_register_count_or_range_is_a_protocol_error_quoting_the_registers() -> None:
    with pytest.raises(ProtocolError, match=r"float32 needs 2 register\(s\), got \[0x436A\]"):
        codec.decode([0x436A], "float32")
    with pytest.raises(ProtocolError, match="16-bit"):
        codec.decode([0x10000], "uint16")


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit in uint16"):
        codec.encode(-1, "uint16")
    with pytest.raises(ValueError, match="does not fit in int16"):
        codec.encode(40000, "int16")
    assert codec.encode(2.6, "int16") == [3]  # integers are rounded


def test_scale_and_offset() -> None:
    spec = RegisterSpec("input", 3, "int16", scale=0.1, offset=-5.0, units="degC")
    m = spec.measurement([0x00BB], at=12.5)
    assert (m.value, m.quality, m.units, m.at) == (pytest.approx(13.7), Quality.OK, "degC", 12.5)
    assert spec.encode(13.7) == [187]
    assert codec.unscaled(codec.scaled(7, 0.5, 2), 0.5, 2) == 7
    assert codec.scaled(7499, 0.001, -10.0) == -2.501  # not -2.5009999999999994
    assert codec.scaled(0.1 + 0.2) == 0.1 + 0.2  # unscaled values pass untouched


def test_not_a_number_is_invalid_never_a_value() -> None:
    spec = RegisterSpec("holding", 0, "float32", units="mbar")
    nan = spec.measurement([0x7FC0, 0x0000])
    assert (nan.value, nan.quality, nan.detail) == (None, Quality.INVALID, "not a number (NaN)")
    inf = spec.measurement([0x7F80, 0x0000])
    assert (inf.value, inf.quality, inf.detail) == (None, Quality.INVALID, "infinite value")


def test_bits_read_as_zero_or_one() -> None:
    spec = RegisterSpec("coil", 7, "bool")
    assert spec.measurement([True]).value == 1.0
    assert spec.measurement([False]).value == 0.0
    assert spec.encode(1) == [1] and spec.span == Span("coil", 7, 1)
    with pytest.raises(ProtocolError):
        spec.measurement([True, False])


def test_spec_refuses_types_that_do_not_fit_the_table_or_the_address_space() -> None:
    with pytest.raises(ValueError, match="does not fit the coil table"):
        RegisterSpec("coil", 0, "int16")
    with pytest.raises(ValueError, match="does not fit the holding table"):
        RegisterSpec("holding", 0, "bool")
    with pytest.raises(ValueError, match="runs past address 65535"):
        RegisterSpec("holding", 65534, "float64")
    assert RegisterSpec("holding", 65532, "float64").count == 4


def test_describe_registers() -> None:
    assert codec.describe_registers([0x436A, 0x8000]) == "[0x436A, 0x8000]"


# ---------------------------------------------------------------- planning


def h(address: int, count: int = 1) -> Span:
    return Span("holding", address, count)


def test_adjacent_and_overlapping_spans_share_one_read() -> None:
    spans = [h(4, 2), h(0, 2), h(2, 2), h(3, 1)]
    assert plan_blocks(spans) == [Block("holding", 0, 6, (1, 2, 3, 0))]


def test_holes_are_bridged_only_up_to_max_gap() -> None:
    spans = [h(0), h(3), h(10)]
    assert [(b.address, b.count) for b in plan_blocks(spans)] == [(0, 1), (3, 1), (10, 1)]
    assert [(b.address, b.count) for b in plan_blocks(spans, max_gap=2)] == [(0, 4), (10, 1)]
    assert [(b.address, b.count) for b in plan_blocks(spans, max_gap=6)] == [(0, 11)]


def test_tables_are_never_merged() -> None:
    spans = [Span("input", 0, 2), h(0, 2), h(2), Span("coil", 0, 1), Span("discrete", 0, 1), Span("coil", 5, 1)]
    plan = plan_blocks(spans, max_gap=4)
    assert [(b.table, b.address, b.count) for b in plan] == [
        ("coil", 0, 6), ("discrete", 0, 1), ("holding", 0, 3), ("input", 0, 2)]


def test_a_read_holds_at_most_125_registers_or_2000_bits() -> None:
    spans = [h(a, 2) for a in range(0, 300, 2)]
    plan = plan_blocks(spans)
    assert [(b.address, b.count) for b in plan] == [(0, 124), (124, 124), (248, 52)]
    assert all(b.count <= 125 for b in plan)
    bits = [Span("coil", a, 1) for a in range(2500)]
    assert [(b.address, b.count) for b in plan_blocks(bits)] == [(0, 2000), (2000, 500)]
    assert [(b.address, b.count) for b in plan_blocks([h(0), h(99)], max_gap=100, max_registers=50)] == [
        (0, 1), (99, 1)]


def test_single_spans_are_read_alone_but_identical_ones_share_a_read() -> None:
    spans = [h(0), h(1), h(1), h(2)]
    plan = plan_blocks(spans, single={1, 2})
    assert [(b.address, b.count, b.members) for b in plan] == [(0, 1, (0,)), (1, 1, (1, 2)), (2, 1, (3,))]


def test_block_part_extracts_each_span() -> None:
    (block,) = plan_blocks([h(10, 2), h(13)], max_gap=1)
    values = [1, 2, 3, 4]
    assert block.part(values, h(10, 2)) == [1, 2]
    assert block.part(values, h(13)) == [4]
    with pytest.raises(ValueError, match="not inside"):
        block.part(values, h(14))


def test_planning_refuses_impossible_spans() -> None:
    with pytest.raises(ValueError, match="cannot be read in one request"):
        plan_blocks([h(0, 126)])
    with pytest.raises(ValueError, match="max_gap"):
        plan_blocks([h(0)], max_gap=-1)


def test_planning_is_minimal_on_a_random_map() -> None:
    import random

    rng = random.Random(3)
    spans = [h(rng.randrange(0, 2000), rng.choice([1, 2, 4])) for _ in range(200)]
    plan = plan_blocks(spans, max_gap=3)
    covered = sorted(i for b in plan for i in b.members)
    assert covered == list(range(len(spans)))
    for b in plan:
        assert b.count <= 125
        assert all(b.covers(spans[i]) for i in b.members)
    # a block ends only where the next span is too far away or would overflow the read
    for first, second in itertools.pairwise(plan):
        nxt = spans[second.members[0]]
        assert nxt.address > first.end + 3 or max(first.end, nxt.end) - first.address > 125

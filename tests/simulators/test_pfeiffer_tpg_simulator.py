"""The TPG simulator as a pure state machine: bytes in, exact bytes out, on a fake clock.

These pin the wire behaviour the pfeiffer_tpg driver is tested against (docs/protocols.md section 1),
so a change here is a change of the simulated instrument, not a refactor.
"""

from __future__ import annotations

import re

import pytest

from simulators.instruments.pfeiffer_tpg import ACK, NAK, Status, TPGSimulator, Unit, convert, format_value, parse_unit
from simulators.serving import MemoryLink
from tests.helpers.clock import FakeClock
from tests.helpers.memory_link import attach, talk

READING = rb"[0-6],[+-]\d\.\d{4}E[+-]\d{2}"
PRX_2 = re.compile(rb"(" + READING + rb"),(" + READING + rb")\r\n")


@pytest.fixture
def sim(clock: FakeClock) -> TPGSimulator:
    return TPGSimulator(seed=1, clock=clock)


@pytest.fixture
def link(sim: TPGSimulator, clock: FakeClock) -> MemoryLink:
    return attach(sim, clock)


def connect(
    model: str, clock: FakeClock, gauges: list[str] | None = None
) -> tuple[TPGSimulator, MemoryLink]:
    sim = TPGSimulator(model, seed=2, clock=clock, gauges=gauges)
    return sim, attach(sim, clock)


# ------------------------------------------------------------------------ handshake


def test_pr1_then_enq_returns_the_reading(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1.23e-7)
    assert talk(sim, link, b"PR1\r") == b"\x06\r\n"
    assert talk(sim, link, b"\x05") == b"0,+1.2300E-07\r\n"


def test_lf_and_spaces_are_ignored(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(2, 4.5e-3)
    assert talk(sim, link, b" P R2 \r\n") == ACK
    assert talk(sim, link, b"\x05") == b"0,+4.5000E-03\r\n"


def test_command_split_across_reads(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 2e-6)
    assert talk(sim, link, b"P") == b""
    assert talk(sim, link, b"R1") == b""
    assert talk(sim, link, b"\r") == ACK
    assert talk(sim, link, b"\x05") == b"0,+2.0000E-06\r\n"


def test_repeated_enq_gives_a_fresh_value(sim: TPGSimulator, link: MemoryLink) -> None:
    values = iter([1e-6, 2e-6])
    sim.set_pressure_source(1, lambda: next(values))
    assert talk(sim, link, b"PR1\r") == ACK
    assert talk(sim, link, b"\x05") == b"0,+1.0000E-06\r\n"
    assert talk(sim, link, b"\x05") == b"0,+2.0000E-06\r\n"


def test_command_and_enq_in_one_write(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 3e-8)
    assert talk(sim, link, b"PR1\r\n\x05") == b"\x06\r\n0,+3.0000E-08\r\n"


def test_unknown_mnemonic_naks_and_enq_returns_syntax_error(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"XYZ\r\n") == b"\x15\r\n"
    assert talk(sim, link, b"\x05") == b"0001\r\n"
    assert talk(sim, link, b"\x05") == b"0000\r\n"  # reading the word cleared it


def test_nak_drops_the_previous_pending_request(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"PR1\r") == ACK
    assert talk(sim, link, b"PR1,5\r") == NAK
    assert talk(sim, link, b"\x05") == b"0010\r\n"


def test_enq_with_nothing_pending_returns_error_word(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"\x05") == b"0000\r\n"


def test_err_mnemonic_reads_and_clears(sim: TPGSimulator, link: MemoryLink) -> None:
    talk(sim, link, b"UNI,7\r")
    talk(sim, link, b"FOO\r")
    assert talk(sim, link, b"ERR\r\x05") == b"\x06\r\n0011\r\n"
    assert talk(sim, link, b"\x05") == b"0000\r\n"


def test_etx_clears_a_partial_command(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"XY\x03PR1\r") == ACK


def test_channel_beyond_model_is_a_syntax_error(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"PR3\r") == NAK
    assert talk(sim, link, b"\x05") == b"0001\r\n"


def test_non_ascii_command_is_a_syntax_error(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"PR\xff1\r\x05") == b"\x15\r\n0001\r\n"


def test_lowercase_mnemonic_is_rejected(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"pr1\r") == NAK


def test_bare_cr_is_ignored(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"\r\n\r") == b""


# ------------------------------------------------------------------------ values and units


def test_prx_carries_every_channel(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1.5e-7)
    sim.set_pressure(2, 8.0e-1)
    assert talk(sim, link, b"PRX\r\x05") == b"\x06\r\n0,+1.5000E-07,0,+8.0000E-01\r\n"


def test_tpg366_prx_has_six_pairs(clock: FakeClock) -> None:
    sim, link = connect("TPG366", clock)
    out = talk(sim, link, b"PRX\r\x05")
    assert out.startswith(ACK)
    line = out[len(ACK) :]
    assert re.fullmatch(rb",".join([READING] * 6) + rb"\r\n", line)
    assert line.split(b",")[10] == b"5"  # channel 6 has no sensor by default


def test_uni_set_and_read_back(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1e-6)
    assert talk(sim, link, b"UNI\r\x05") == b"\x06\r\n0\r\n"
    assert talk(sim, link, b"UNI,1\r") == ACK
    assert talk(sim, link, b"\x05") == b"1\r\n"
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+7.5000E-07\r\n"
    assert talk(sim, link, b"UNI,2\r\x05") == b"\x06\r\n2\r\n"
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+1.0000E-04\r\n"
    assert sim.unit is Unit.PA


def test_uni_rejects_bad_parameter(sim: TPGSimulator, link: MemoryLink) -> None:
    for bad in (b"UNI,9\r", b"UNI,x\r", b"UNI,\r", b"UNI,1,1\r"):
        assert talk(sim, link, bad) == NAK
        assert talk(sim, link, b"\x05") == b"0010\r\n"
    assert sim.unit is Unit.MBAR


def test_tpg26x_knows_only_three_units(clock: FakeClock) -> None:
    sim, link = connect("TPG262", clock)
    assert talk(sim, link, b"UNI,2\r") == ACK
    assert talk(sim, link, b"UNI,3\r") == NAK
    with pytest.raises(ValueError):
        sim.set_unit("micron")
    with pytest.raises(ValueError):
        TPGSimulator("TPG261", unit="hPa")


def test_tpg36x_micron_hpa_and_volt(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1e-3)
    assert talk(sim, link, b"UNI,3\r\x05") == b"\x06\r\n3\r\n"
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+7.5000E-01\r\n"
    assert talk(sim, link, b"UNI,4\r") == ACK
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+1.0000E-03\r\n"
    assert talk(sim, link, b"UNI,5\r") == ACK
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+4.9970E+00\r\n"


def test_front_panel_unit_change_rescales_silently(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 2e-5)
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+2.0000E-05\r\n"
    sim.set_unit("Pa")
    assert link.take() == b""
    assert talk(sim, link, b"\x05") == b"0,+2.0000E-03\r\n"
    assert talk(sim, link, b"UNI\r\x05") == b"\x06\r\n2\r\n"


def test_logarithmic_gauges_resolve_three_digits() -> None:
    assert format_value(1.23456e-7, logarithmic=True) == "+1.2300E-07"
    assert format_value(9.996e-3, logarithmic=True) == "+1.0000E-02"
    assert format_value(1.23456, logarithmic=False) == "+1.2346E+00"
    assert format_value(0.0) == "+0.0000E+00"


def test_linear_gauge_shows_four_decimals(clock: FakeClock) -> None:
    sim, link = connect("TPG362", clock, gauges=["PKR", "CMR"])
    sim.set_pressure(2, 12.3456)
    assert talk(sim, link, b"PR2\r\x05") == b"\x06\r\n0,+1.2346E+01\r\n"


def test_units_convert_from_mbar() -> None:
    assert convert(1.0, Unit.TORR) == pytest.approx(0.750062)
    assert convert(1.0, Unit.PA) == 100.0
    assert parse_unit("Torr") is Unit.TORR
    assert parse_unit("2") is Unit.PA
    with pytest.raises(ValueError):
        parse_unit("psi")


def test_pump_down_falls_with_time(sim: TPGSimulator, clock: FakeClock) -> None:
    early = sim.pressure(1)
    clock.advance(600)
    late = sim.pressure(1)
    assert 5e-4 < early < 2e-3
    assert late < early / 100
    clock.advance(1e6)
    assert sim.pressure(1) == pytest.approx(2e-8, rel=0.1)


def test_pirani_reads_underrange_at_uhv(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(2, 1e-7)
    assert sim.status(2) is Status.UNDERRANGE
    assert talk(sim, link, b"PR2\r\x05") == b"\x06\r\n1,+5.0000E-04\r\n"


# ------------------------------------------------------------------------ status fillers


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.UNDERRANGE, b"1,+5.0000E-09\r\n"),
        (Status.OVERRANGE, b"2,+1.0000E+03\r\n"),
        (Status.SENSOR_ERROR, b"3,+2.0000E-02\r\n"),
        (Status.OFF, b"4,+2.0000E-02\r\n"),
        (Status.NO_SENSOR, b"5,+2.0000E-02\r\n"),
        (Status.ID_ERROR, b"6,+2.0000E-02\r\n"),
    ],
)
def test_status_carries_filler_not_the_pressure(
        sim: TPGSimulator, link: MemoryLink, status: Status, expected: bytes) -> None:
    sim.set_pressure(1, 1.23e-7)
    sim.set_status(1, status)
    assert talk(sim, link, b"PR1\r\x05") == ACK + expected
    sim.set_status(1, None)
    assert talk(sim, link, b"\x05") == b"0,+1.2300E-07\r\n"


def test_tid_follows_status(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"TID\r\x05") == b"\x06\r\nPKR,TPR\r\n"
    sim.set_status(2, Status.NO_SENSOR)
    sim.set_status(1, Status.ID_ERROR)
    assert talk(sim, link, b"\x05") == b"noid,noSEn\r\n"


def test_sensor_errors_show_in_res_and_error_word(sim: TPGSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"RES\r\x05") == b"\x06\r\n0\r\n"
    sim.set_status(1, Status.SENSOR_ERROR)
    sim.set_status(2, Status.ID_ERROR)
    assert talk(sim, link, b"\x05") == b"9,12\r\n"
    assert talk(sim, link, b"ERR\r\x05") == b"\x06\r\n1000\r\n"
    assert talk(sim, link, b"\x05") == b"1000\r\n"  # the condition persists
    assert talk(sim, link, b"RES,2\r") == NAK


def test_sen_switches_gauges(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1e-6)
    assert talk(sim, link, b"SEN\r\x05") == b"\x06\r\n2,0\r\n"
    assert talk(sim, link, b"SEN,1,0\r\x05") == b"\x06\r\n1,0\r\n"
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n4,+2.0000E-02\r\n"
    assert talk(sim, link, b"SEN,2,1\r\x05") == b"\x06\r\n2,0\r\n"  # the Pirani cannot switch
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+1.0000E-06\r\n"
    assert talk(sim, link, b"SEN,3\r") == NAK
    assert talk(sim, link, b"SEN,0,0,0\r") == NAK


def test_ayt_on_36x_and_nak_on_26x(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    assert talk(sim, link, b"AYT\r\x05") == b"\x06\r\nTPG362,PTG28290,44990000,010100,010000\r\n"
    old, old_link = connect("TPG262", clock)
    assert talk(old, old_link, b"AYT\r\x05") == b"\x15\r\n0001\r\n"
    assert talk(old, old_link, b"PNR\r\x05") == b"\x06\r\nBG5160-A\r\n"


def test_refused_identity_naks_ayt_and_pnr_and_nothing_else(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.refuse_identity = True
    assert talk(sim, link, b"AYT\r\x05") == b"\x15\r\n0001\r\n"
    assert talk(sim, link, b"PNR\r\x05") == b"\x15\r\n0001\r\n"
    assert talk(sim, link, b"TID\r\x05") == b"\x06\r\nPKR,TPR\r\n"
    assert talk(sim, link, b"UNI\r\x05") == b"\x06\r\n0\r\n"
    sim.set_unit("Torr")  # a front-panel change between two baselines
    assert talk(sim, link, b"UNI\r\x05") == b"\x06\r\n1\r\n"


def test_model_and_channels_must_agree() -> None:
    assert TPGSimulator("TPG366").channels == 6
    assert TPGSimulator("tpg261", channels=1).channels == 1
    with pytest.raises(ValueError):
        TPGSimulator("TPG366", channels=2)
    with pytest.raises(ValueError):
        TPGSimulator("TPG999")
    with pytest.raises(ValueError):
        TPGSimulator(gauges=["PKR", "XYZ"])


# ------------------------------------------------------------------------ streams


def test_com_streams_after_ack_until_any_byte(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    out = talk(sim, link, b"COM,0\r")
    assert out.startswith(ACK)
    assert PRX_2.fullmatch(out[len(ACK) :])
    sim.tick(clock.advance(0.05))
    assert link.take() == b""
    sim.tick(clock.advance(0.06))
    assert PRX_2.fullmatch(link.take())
    sim.tick(clock.advance(0.1))
    assert PRX_2.fullmatch(link.take())
    assert sim.streaming
    assert talk(sim, link, b"\x03") == b""
    assert not sim.streaming
    sim.tick(clock.advance(5))
    assert link.take() == b""


def test_com_periods_and_bad_parameter(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    talk(sim, link, b"COM\r")
    sim.tick(clock.advance(0.5))
    assert link.take() == b""
    sim.tick(clock.advance(0.6))
    assert PRX_2.fullmatch(link.take())
    assert talk(sim, link, b"COM,3\r") == NAK


def test_enq_stops_stream_and_reads_pending(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    talk(sim, link, b"COM,1\r")
    assert PRX_2.fullmatch(talk(sim, link, b"\x05"))
    sim.tick(clock.advance(10))
    assert link.take() == b""


def test_power_up_stream_starts_with_a_truncated_line(clock: FakeClock) -> None:
    sim = TPGSimulator(seed=3, clock=clock)
    sim.power_up_streaming = True
    sim.stream_interval = 0.2
    link = attach(sim, clock)
    first = link.take()
    assert first.endswith(b"\r\n")
    assert not PRX_2.fullmatch(first)
    sim.tick(clock.advance(0.2))
    assert PRX_2.fullmatch(link.take())
    sim.tick(clock.advance(0.2))
    assert PRX_2.fullmatch(link.take())
    # The first character from the host stops it, and is still taken as input.
    sim.set_pressure(1, 1e-8)
    assert talk(sim, link, b"PR1\r\x05") == b"\x06\r\n0,+1.0000E-08\r\n"
    sim.tick(clock.advance(1))
    assert link.take() == b""


def test_power_cycle_restarts_the_power_up_stream(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    talk(sim, link, b"PR1\r")
    talk(sim, link, b"XYZ\r")
    sim.power_cycle()
    assert link.take() == b""  # streaming is off by default
    assert talk(sim, link, b"\x05") == b"0000\r\n"  # pending request and error word are gone
    sim.power_up_streaming = True
    sim.stream_interval = 0.1
    sim.power_cycle()
    first = link.take()
    assert first and not PRX_2.fullmatch(first)
    sim.tick(clock.advance(0.1))
    assert PRX_2.fullmatch(link.take())


def test_disconnect_stops_the_stream(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    talk(sim, link, b"COM,0\r")
    link.close()  # servers close the link before telling the device
    sim.disconnected()
    assert not sim.streaming
    sim.tick(clock.advance(1))
    assert link.take() == b""


def test_shared_simulator_keeps_the_newer_link(sim: TPGSimulator, clock: FakeClock) -> None:
    old, new = MemoryLink(clock=clock), MemoryLink(clock=clock)
    sim.connected(old)
    sim.connected(new)
    old.close()
    sim.disconnected()  # the old connection ends after the new one arrived
    assert talk(sim, new, b"UNI\r") == ACK


# ------------------------------------------------------------------------ faults


def test_silent_answers_nothing_but_logs(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.silent = True
    assert talk(sim, link, b"PR1\r\x05") == b""
    assert sim.log[-1] == ("rx", b"PR1\r\x05")
    sim.silent = False
    assert talk(sim, link, b"PR1\r") == ACK


def test_silent_suppresses_streams(clock: FakeClock) -> None:
    sim = TPGSimulator(seed=1, clock=clock)
    sim.power_up_streaming = True
    sim.silent = True
    link = attach(sim, clock)
    sim.tick(clock.advance(5))
    assert link.take() == b""


def test_garbage_before_next_reply_once(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1e-5)
    sim.garbage = b"\xff\xfe\x00"
    assert talk(sim, link, b"PR1\r") == b"\xff\xfe\x00\x06\r\n"
    assert talk(sim, link, b"\x05") == b"0,+1.0000E-05\r\n"


def test_garbage_at_connect(clock: FakeClock) -> None:
    sim = TPGSimulator(seed=1, clock=clock)
    sim.garbage_at_connect = b"\x00\xf8"
    link = attach(sim, clock)
    assert link.take() == b"\x00\xf8"
    assert talk(sim, link, b"UNI\r") == ACK


def test_split_replies_arrive_in_small_pieces(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    sim.set_pressure(1, 1.23e-7)
    sim.split_replies = True
    sim.received(b"PR1\r\x05")
    while link.pending:
        link.pump(clock.advance(0.01))
    pieces = list(link.writes)
    assert b"".join(pieces) == b"\x06\r\n0,+1.2300E-07\r\n"
    assert len(pieces) > 3
    assert all(1 <= len(p) <= 3 for p in pieces)


def test_reply_delay_holds_replies_back(sim: TPGSimulator, link: MemoryLink, clock: FakeClock) -> None:
    sim.reply_delay = 0.5
    sim.received(b"UNI\r")
    assert link.take() == b""
    link.pump(clock.advance(0.4))
    assert link.take() == b""
    link.pump(clock.advance(0.2))
    assert link.take() == ACK


def test_nak_all(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.nak_all = True
    assert talk(sim, link, b"PR1\r") == NAK
    assert talk(sim, link, b"\x05") == b"0001\r\n"


def test_log_records_the_conversation(sim: TPGSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1e-4)
    talk(sim, link, b"PR1\r")
    talk(sim, link, b"\x05")
    assert sim.log == [
        ("rx", b"PR1\r"),
        ("tx", ACK),
        ("rx", b"\x05"),
        ("tx", b"0,+1.0000E-04\r\n"),
    ]
    assert sim.sent() == b"\x06\r\n0,+1.0000E-04\r\n"


def test_nothing_is_sent_without_a_host(sim: TPGSimulator) -> None:
    sim.received(b"PR1\r\x05")
    assert sim.sent() == b""

"""The TPG driver over a real pty and real TCP against the simulator, in every fault mode."""

from __future__ import annotations

import time

import pytest

from bridge.drivers.pfeiffer_tpg import PfeifferTPG, codec
from bridge.errors import DeviceError, ProtocolError, TransportDisconnected, TransportTimeout
from bridge.model import Quality
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import PtyServer, TcpServer
from tests.conftest import TPGLink
from tests.helpers.conversation import driver_on, serial_conversation
from tests.helpers.drivers import by_channel, fails_then_recovers, read_and_close, reconnect, unplug_fails
from tests.helpers.rfc2217_server import Rfc2217Server


def test_reads_pressures_with_units(tpg: TPGLink) -> None:
    tpg.sim.set_pressure(1, 1.23e-7)
    tpg.sim.set_pressure(2, 4.5e-2)
    inst = tpg.instrument()
    try:
        before = time.time()
        readings = by_channel(inst.read())
        after = time.time()
    finally:
        inst.close()
    p1, p2 = readings["pressure_1"], readings["pressure_2"]
    assert (p1.value, p1.units, p1.quality) == (pytest.approx(1.23e-7), "mbar", Quality.OK)
    assert (p2.value, p2.units, p2.quality) == (pytest.approx(4.5e-2), "mbar", Quality.OK)
    assert before <= p1.timestamp <= p2.timestamp <= after
    assert p1.instrument == "gauge"


def test_pressure_evolves_in_time(tpg: TPGLink) -> None:
    inst = tpg.instrument(channels=[1])
    try:
        values = {inst.read()[0].value for _ in range(5)}
    finally:
        inst.close()
    assert len(values) > 1, "a live gauge's reading changes (pump-down and noise)"


def test_prx_mode_reads_six_gauges_in_one_exchange() -> None:
    sim = TPGSimulator("TPG366", seed=2, gauges=["PKR"] * 6)
    for n in range(1, 7):
        sim.set_pressure(n, n * 1e-6)
    sim.set_status(4, 4)
    with TcpServer(lambda: sim) as server:
        link = TPGLink(sim, server.url, "tcp", server)
        inst = link.instrument(channels=[1, 2, 3, 4, 5, 6], mode="all")
        try:
            sim.log.clear()
            readings = inst.read()
        finally:
            inst.close()
    sent = b"".join(data for direction, data in sim.log if direction == "rx")
    assert sent.count(b"PRX\r") == 1 and b"PR1" not in sent
    assert [r.value for r in readings] == [pytest.approx(1e-6), pytest.approx(2e-6), pytest.approx(3e-6),
                                           None, pytest.approx(5e-6), pytest.approx(6e-6)]
    assert readings[3].quality is Quality.SENSOR_OFF
    assert len({r.timestamp for r in readings}) == 1, "one exchange, one instant"


@pytest.mark.parametrize(
    ("status", "quality"),
    [(1, Quality.UNDER_RANGE), (2, Quality.OVER_RANGE), (3, Quality.SENSOR_ERROR),
     (4, Quality.SENSOR_OFF), (5, Quality.NO_SENSOR), (6, Quality.ID_ERROR)],
)
def test_status_digits_become_qualities_without_value(tpg: TPGLink, status: int, quality: Quality) -> None:
    tpg.sim.set_pressure(2, 3e-2)  # gauge 2 is a Pirani (TPR): in its range
    tpg.sim.set_status(1, status)
    readings = by_channel(read_and_close(tpg.instrument()))
    assert readings["pressure_1"].quality is quality
    assert readings["pressure_1"].value is None
    assert readings["pressure_2"].value == pytest.approx(3e-2)


def test_gauge_switched_off_with_sen(tpg: TPGLink) -> None:
    tpg.sim.set_gauge_on(1, False)
    (reading,) = read_and_close(tpg.instrument(channels=[1]))
    assert (reading.value, reading.quality) == (None, Quality.SENSOR_OFF)


def test_unit_change_on_front_panel_is_followed(tpg: TPGLink) -> None:
    tpg.sim.set_pressure(1, 1.0)  # mbar
    inst = tpg.instrument(channels=[1])
    try:
        assert inst.read()[0].units == "mbar"
        tpg.sim.set_unit("Torr")
        (torr,) = inst.read()
        tpg.sim.set_unit("Pa")
        (pa,) = inst.read()
    finally:
        inst.close()
    assert (torr.units, torr.value) == ("Torr", pytest.approx(0.750062, rel=1e-4))
    assert (pa.units, pa.value) == ("Pa", pytest.approx(100.0))


def test_power_up_streaming_is_stopped_at_connect(tpg: TPGLink) -> None:
    tpg.sim.power_up_streaming = True
    tpg.sim.set_pressure(1, 2.5e-6)
    inst = tpg.instrument(channels=[1])
    try:
        (reading,) = inst.read()
        assert not tpg.sim.streaming
    finally:
        inst.close()
    assert reading.value == pytest.approx(2.5e-6)


def test_stale_stream_lines_are_skipped(tpg: TPGLink) -> None:
    tpg.sim.set_pressure(1, 7.0e-7)
    inst = tpg.instrument(channels=[1])
    try:
        inst.read()
        # Someone starts continuous output behind the driver's back (COM, 100 ms lines)...
        assert isinstance(inst.driver, PfeifferTPG)
        inst.driver.transport.write(b"COM,0\r")
        time.sleep(0.35)
        # ...so stream lines wait in the input before the ACK of the next command.
        (reading,) = inst.read()
    finally:
        inst.close()
    assert reading.value == pytest.approx(7.0e-7)


def test_split_replies_are_reassembled(tpg: TPGLink) -> None:
    tpg.sim.split_replies = True
    tpg.sim.set_pressure(1, 9.87e-9)
    (reading,) = read_and_close(tpg.instrument(channels=[1]))
    assert reading.value == pytest.approx(9.87e-9)


def test_garbage_bytes_are_tolerated(tpg: TPGLink) -> None:
    tpg.sim.garbage_at_connect = b"\xff\xfe\x00\x80"
    tpg.sim.set_pressure(1, 1.5e-4)
    inst = tpg.instrument(channels=[1])
    try:
        tpg.sim.garbage = b"\xff\x00\xfe"  # noise in front of the next reply (an ACK)
        first = inst.read()[0]
        tpg.sim.garbage = b"\x80\xff"
        second = inst.read()[0]
    finally:
        inst.close()
    assert first.value == pytest.approx(1.5e-4)
    assert second.value == pytest.approx(1.5e-4)


def test_silence_times_out_naming_the_instrument_then_recovers(tpg: TPGLink) -> None:
    tpg.sim.set_pressure(1, 3.3e-3)
    inst = tpg.instrument(name="main_gauge", channels=[1])
    try:
        # resynchronised after the silence: no late reply mistaken for the next reading
        (reading,) = fails_then_recovers(inst, tpg.sim, TransportTimeout, r"^main_gauge: no reply", silent=True)
    finally:
        inst.close()
    assert reading.value == pytest.approx(3.3e-3)


def test_slow_replies_within_timeout(tpg: TPGLink) -> None:
    tpg.sim.reply_delay = 0.1
    tpg.sim.set_pressure(1, 6.0e-8)
    (reading,) = read_and_close(tpg.instrument(channels=[1]))
    assert reading.value == pytest.approx(6.0e-8)


def test_nak_reads_and_decodes_the_error_word(tpg: TPGLink) -> None:
    inst = tpg.instrument(channels=[1])
    assert isinstance(inst.driver, PfeifferTPG)
    try:
        with pytest.raises(DeviceError, match="XYZ refused with NAK \\(syntax error\\)"):
            inst.driver.query("XYZ")
        assert codec.decode_error_word(inst.driver.query("ERR")) == []  # the word is cleared once read
        assert inst.read()[0].quality in (Quality.OK, Quality.UNDER_RANGE)
    finally:
        inst.close()


def test_nak_for_every_command_is_a_device_error(tpg: TPGLink) -> None:
    tpg.sim.nak_all = True
    with pytest.raises(DeviceError, match="UNI refused with NAK"):
        tpg.instrument(channels=[1])


def test_unplugged_link_is_a_disconnect(tpg: TPGLink) -> None:
    inst = tpg.instrument(channels=[1])
    try:
        unplug_fails(inst, tpg)
        if tpg.kind == "tcp":  # the LAN port comes back: reopen and read again
            reconnect(inst)
            assert inst.read()[0].instrument == "gauge"
    finally:
        inst.close()


def test_unreachable_port_names_it(tpg: TPGLink) -> None:
    tpg.server.stop()
    with pytest.raises(TransportDisconnected, match=r"^gauge: cannot open"):
        tpg.instrument()


def test_stale_line_before_ack_is_skipped(tpg: TPGLink) -> None:
    tpg.sim.set_pressure(1, 4.4e-6)
    inst = tpg.instrument(channels=[1])
    try:
        # A stream line still in flight when the command goes out lands before its ACK.
        tpg.sim.garbage = b"0,+9.9990E-01,0,+9.9990E-01\r\n"
        (reading,) = inst.read()
    finally:
        inst.close()
    assert reading.value == pytest.approx(4.4e-6)


def test_too_many_stale_lines_is_a_protocol_error_naming_the_frame(tpg: TPGLink) -> None:
    inst = tpg.instrument(channels=[1], max_stale_lines=2)
    try:
        tpg.sim.garbage = b"0,+1.0000E+00\r\n" * 3
        with pytest.raises(ProtocolError, match=r"^gauge: no ACK to UNI after 2 stale lines \(last b'0,\+1.0000E\+00"):
            inst.read()
        assert inst.read()[0].instrument == "gauge"  # and the next poll is clean again
    finally:
        inst.close()


def test_reads_through_an_rfc2217_serial_server() -> None:
    sim = TPGSimulator("TPG362", seed=3)
    sim.set_pressure(1, 2.2e-7)
    with PtyServer(sim) as line, Rfc2217Server(line.port) as server:
        link = TPGLink(sim, server.url, "rfc2217", line)
        (reading,) = read_and_close(link.instrument(channels=[1]))
    assert (reading.value, reading.units) == (pytest.approx(2.2e-7), "mbar")


def test_a_bad_frame_is_named_with_the_instrument_and_the_frame(tpg: TPGLink) -> None:
    inst = tpg.instrument(channels=[1])
    assert isinstance(inst.driver, PfeifferTPG)
    try:
        with pytest.raises(ProtocolError, match=r"^gauge: unknown TPG unit code in frame b'0,"):
            inst.driver._parse(codec.parse_unit, b"0,+1.0000E-03\r\n")
        assert inst.read()[0].instrument == "gauge"
    finally:
        inst.close()


def test_conversation_connect_and_one_poll_byte_for_byte() -> None:
    with serial_conversation(
        (b"\x03", b""),                                  # connect: ETX stops a stream, then settle and flush
        (b"UNI\r", b"\x06\r\n"), (b"\x05", b"1\r\n"),      # the display unit: Torr
        (b"UNI\r", b"\x06\r\n"), (b"\x05", b"1\r\n"),      # every poll reads it again
        (b"PR1\r", b"\x06\r\n"), (b"\x05", b"0,+4.4000E-06\r\n"),
        (b"PR2\r", b"\x06\r\n"), (b"\x05", b"5,+0.0000E+00\r\n"),
        owner="gauge",
    ) as line:
        driver = driver_on(line, "pfeiffer_tpg", {"channels": [1, 2]})
        driver.connect()
        first, second = driver.read()
    assert (first.channel, first.value, first.units, first.quality) == ("pressure_1", 4.4e-6, "Torr", Quality.OK)
    assert (second.value, second.quality) == (None, Quality.NO_SENSOR)


def test_conversation_nak_reads_the_error_word_and_the_next_exchange_resyncs() -> None:
    with serial_conversation(
        (b"PR1\r", b"\x15\r\n"), (b"\x05", b"0001\r\n"),   # NAK, then ENQ returns the error word
        (b"\x03", b""),                                    # the next exchange resynchronises first
        (b"UNI\r", b"\x06\r\n"), (b"\x05", b"0\r\n"),
        owner="gauge",
    ) as line:
        driver = driver_on(line, "pfeiffer_tpg", {"channels": [1]})
        driver.session.needs_resync = False  # as after a connect
        with pytest.raises(DeviceError, match=r"^gauge: PR1 refused with NAK \(syntax error\)"):
            driver.query("PR1")
        assert driver.query("UNI") == b"0\r\n"


# ------------------------------------------------------------------------ identity and configuration


def test_conversation_baseline_byte_for_byte() -> None:
    with serial_conversation(
        (b"AYT\r", b"\x06\r\n"), (b"\x05", b"TPG362,PTG28290,44990000,010100,010000\r\n"),
        (b"UNI\r", b"\x06\r\n"), (b"\x05", b"1\r\n"),
        (b"TID\r", b"\x06\r\n"), (b"\x05", b"PKR,TPR\r\n"),
        owner="gauge",
    ) as line:
        driver = driver_on(line, "pfeiffer_tpg", {"channels": [1]})
        driver.session.needs_resync = False  # as after a connect
        baseline = driver.baseline()
    assert baseline.identity == {"vendor": "Pfeiffer Vacuum", "model": "TPG362", "part_number": "PTG28290",
                                 "serial": "44990000", "firmware": "010100", "hardware": "010000"}
    assert baseline.configuration == {"unit": "Torr", "gauge_1": "PKR", "gauge_2": "TPR"}
    assert baseline.errors == {}


def test_conversation_a_tpg_26x_refuses_ayt_and_gives_its_firmware_with_pnr() -> None:
    with serial_conversation(
        (b"AYT\r", b"\x15\r\n"), (b"\x05", b"0001\r\n"),   # a 26x does not know AYT
        (b"\x03", b""),                                    # the refusal is followed by a resync
        (b"PNR\r", b"\x06\r\n"), (b"\x05", b"BG5160-A\r\n"),
        (b"UNI\r", b"\x06\r\n"), (b"\x05", b"0\r\n"),
        (b"TID\r", b"\x06\r\n"), (b"\x05", b"PKR,noSEn\r\n"),
        owner="gauge",
    ) as line:
        driver = driver_on(line, "pfeiffer_tpg", {"channels": [1, 2], "settle": 0.0})
        driver.session.needs_resync = False
        baseline = driver.baseline()
    assert baseline.identity == {"vendor": "Pfeiffer Vacuum", "firmware": "BG5160-A"}
    assert baseline.configuration == {"unit": "mbar", "gauge_1": "PKR", "gauge_2": "noSEn"}
    assert baseline.errors == {"AYT": "AYT refused with NAK (syntax error)"}


def test_baseline_over_the_wire_and_a_refused_identity_keeps_the_instrument_reading(tpg: TPGLink) -> None:
    inst = tpg.instrument()
    try:
        baseline = inst.driver.baseline()
        assert baseline.identity["model"] == "TPG362" and baseline.identity["serial"] == "44990000"
        assert baseline.configuration == {"unit": "mbar", "gauge_1": "PKR", "gauge_2": "TPR"}
        tpg.sim.refuse_identity = True
        tpg.sim.set_unit("Pa")
        refused = inst.driver.baseline()
        assert refused.identity == {"vendor": "Pfeiffer Vacuum"}
        assert set(refused.errors) == {"AYT", "PNR"} and "refused with NAK" in refused.errors["PNR"]
        assert refused.configuration["unit"] == "Pa"
        readings = inst.read()
        assert [(r.channel, r.units) for r in readings] == [("pressure_1", "Pa"), ("pressure_2", "Pa")]
    finally:
        inst.close()

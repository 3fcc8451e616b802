"""The MKS 937B driver over a real pty and real TCP against the simulator, in every fault mode.

Includes two controllers at different addresses sharing one simulated RS-485 line behind one
port, each read by its own instrument config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bridge.drivers.mks_937b import MKS937B, MKS937BOptions
from bridge.errors import DeviceError, ProtocolError, TransportDisconnected, TransportTimeout
from bridge.model import Quality, Reading
from tests.helpers.cli import run_cli, simulate
from tests.helpers.conversation import driver_on, serial_conversation
from tests.helpers.drivers import by_channel, fails_then_recovers, read_and_close, reconnect, unplug_fails
from tests.helpers.mks_937b import TORR, MKSLink, make_sims, one_bus, serve


@pytest.fixture(params=["pty", "tcp"])
def mks(request: pytest.FixtureRequest) -> Iterator[MKSLink]:
    """One 937B at address 253 over a pty pair and over TCP (reached through ``socket://``)."""
    with serve(request.param, make_sims()) as link:
        yield link


@pytest.fixture(params=["pty", "tcp"])
def line(request: pytest.FixtureRequest) -> Iterator[MKSLink]:
    """Two 937Bs, addresses 1 and 2, on one RS-485 line behind one port."""
    with serve(request.param, make_sims([1, 2])) as link:
        yield link


def requests(link: MKSLink) -> bytes:
    return b"".join(data for sim in link.sims[:1] for direction, data in sim.log if direction == "rx")


# ---------------------------------------------------------------------- normal readings


def test_reads_six_channels_with_units_and_statuses(mks: MKSLink) -> None:
    for ch, torr in ((1, 1.1e-9), (2, 2.5e-3), (3, 3.0e-7), (4, 4.0e-1), (5, 760.2)):
        mks.sim.set_pressure(ch, torr * TORR)
    readings = read_and_close(mks.instrument())
    assert [r.channel for r in readings] == [f"pressure_{n}" for n in range(1, 7)]
    assert [r.value for r in readings] == [pytest.approx(1.1e-9), pytest.approx(2.5e-3), pytest.approx(3.0e-7),
                                           pytest.approx(4.0e-1), pytest.approx(760.2), None]
    assert {r.units for r in readings} == {"Torr"}
    assert readings[5].quality is Quality.NO_SENSOR and readings[5].detail == "NOGAUGE"
    assert all(r.instrument == "gauge" for r in readings)
    assert [r.timestamp for r in readings] == sorted(r.timestamp for r in readings)


def test_pressure_evolves_in_time(mks: MKSLink) -> None:
    inst = mks.instrument(channels=[1])
    try:
        values = {inst.read()[0].value for _ in range(5)}
    finally:
        inst.close()
    assert len(values) > 1, "a live gauge's reading changes (pump-down and noise)"


def test_all_mode_reads_six_channels_in_one_prz_exchange(mks: MKSLink) -> None:
    for ch in range(1, 5):
        mks.sim.set_pressure(ch, ch * 1e-3 * TORR)  # in range for cold cathodes and Piranis
    mks.sim.set_status(3, "WAIT")
    inst = mks.instrument(mode="all")
    try:
        mks.sim.log.clear()
        readings = inst.read()
    finally:
        inst.close()
    sent = requests(mks)
    assert sent == b"@253U?;FF@253PRZ?;FF"
    assert [r.value for r in readings[:4]] == [pytest.approx(1e-3), pytest.approx(2e-3), None, pytest.approx(4e-3)]
    assert (readings[2].quality, readings[2].detail) == (Quality.NOT_READY, "WAIT")
    assert len({r.timestamp for r in readings}) == 1, "one exchange, one instant"


def test_channel_subset_in_all_mode(mks: MKSLink) -> None:
    mks.sim.set_pressure(4, 7e-2 * TORR)
    (reading,) = read_and_close(mks.instrument(mode="all", channels=[4]))
    assert (reading.channel, reading.value) == ("pressure_4", pytest.approx(7e-2))


@pytest.mark.parametrize(
    ("status", "quality"),
    [("LO<E-11", Quality.UNDER_RANGE), ("LO<E-04", Quality.UNDER_RANGE), ("LO<E-03", Quality.UNDER_RANGE),
     ("ATM", Quality.OVER_RANGE), (">", Quality.OVER_RANGE), ("OFF", Quality.SENSOR_OFF),
     ("RP_OFF", Quality.SENSOR_OFF), ("CTRL_OFF", Quality.SENSOR_OFF), ("PROT_OFF", Quality.SENSOR_OFF),
     ("WAIT", Quality.NOT_READY), ("MISCONN", Quality.SENSOR_ERROR), ("NOGAUGE", Quality.NO_SENSOR),
     ("NO_GAUGE", Quality.NO_SENSOR)],
)
def test_status_strings_become_qualities_without_value(mks: MKSLink, status: str, quality: Quality) -> None:
    mks.sim.set_pressure(2, 3e-2 * TORR)
    mks.sim.set_status(1, status)
    readings = by_channel(read_and_close(mks.instrument(channels=[1, 2])))
    p1 = readings["pressure_1"]
    assert (p1.value, p1.quality, p1.detail, p1.units) == (None, quality, status, "Torr")
    assert readings["pressure_2"].value == pytest.approx(3e-2)


def test_unknown_status_word_is_invalid_not_a_number(mks: MKSLink) -> None:
    mks.sim.set_status(1, "HV_FAIL")
    (reading,) = read_and_close(mks.instrument(channels=[1]))
    assert (reading.value, reading.quality, reading.detail) == (None, Quality.INVALID, "unknown status HV_FAIL")


def test_out_of_range_and_no_gauge_spelling_from_the_gauges_themselves(mks: MKSLink) -> None:
    mks.sim.set_pressure(1, 1e-12)  # cold cathode below its range
    mks.sim.set_pressure(2, 1e-6)  # Pirani below its range
    mks.sim.set_pressure(4, 2000.0)  # Pirani above atmosphere
    mks.sim.no_gauge_spelling = "NO_GAUGE"
    readings = read_and_close(mks.instrument(channels=[1, 2, 4, 6]))
    assert [(r.quality, r.detail) for r in readings] == [
        (Quality.UNDER_RANGE, "LO<E-11"), (Quality.UNDER_RANGE, "LO<E-04"), (Quality.OVER_RANGE, "ATM"),
        (Quality.NO_SENSOR, "NO_GAUGE")]
    assert all(r.value is None for r in readings)


def test_gauge_switched_off_with_cp(mks: MKSLink) -> None:
    inst = mks.instrument(channels=[1])
    assert isinstance(inst.driver, MKS937B)
    try:
        assert inst.driver.exchange("CP1", "OFF")[0].body == "OFF"
        (off,) = inst.read()
        assert inst.driver.query("CP1") == "OFF"
        inst.driver.exchange("CP1", "ON")
        (on,) = inst.read()
    finally:
        inst.close()
    assert (off.value, off.quality, off.detail) == (None, Quality.SENSOR_OFF, "OFF")
    assert on.quality is Quality.OK


def test_unit_change_is_followed_every_poll(mks: MKSLink) -> None:
    mks.sim.set_pressure(2, 1.0 * TORR)  # 1 Torr
    inst = mks.instrument(channels=[2])
    assert isinstance(inst.driver, MKS937B)
    try:
        assert inst.read()[0].units == "Torr"
        mks.sim.set_unit("MBAR")  # front panel
        (mbar,) = inst.read()
        inst.driver.exchange("U", "PASCAL")  # over the wire
        (pa,) = inst.read()
        mks.sim.set_unit("MICRON")
        (micron,) = inst.read()
    finally:
        inst.close()
    assert (mbar.units, mbar.value) == ("mbar", pytest.approx(1.33))
    assert (pa.units, pa.value) == ("Pa", pytest.approx(133.0))
    assert (micron.units, micron.value) == ("mTorr", pytest.approx(1000.0))


# ---------------------------------------------------------------------- faults


def test_split_replies_are_reassembled(mks: MKSLink) -> None:
    mks.sim.split_replies = True
    mks.sim.set_pressure(1, 9.87e-9 * TORR)
    (reading,) = read_and_close(mks.instrument(channels=[1], mode="all"))
    assert reading.value == pytest.approx(9.87e-9)


def test_garbage_is_tolerated(mks: MKSLink) -> None:
    mks.sim.garbage_at_connect = b"\xff\xfe\x00\x80"
    mks.sim.set_pressure(1, 1.5e-4 * TORR)
    inst = mks.instrument(channels=[1])
    try:
        mks.sim.garbage = b"\xff\x00@2\xfe"  # noise, even an '@', in front of the next reply
        first = inst.read()[0]
        mks.sim.garbage = b"\x80\xff;FF"  # noise that looks like a terminator: a fragment, skipped
        second = inst.read()[0]
    finally:
        inst.close()
    assert first.value == pytest.approx(1.5e-4)
    assert second.value == pytest.approx(1.5e-4)


def test_a_truncated_reply_is_retried(mks: MKSLink) -> None:
    mks.sim.set_pressure(1, 6.5e-7 * TORR)
    inst = mks.instrument(channels=[1])
    try:
        mks.sim.log.clear()
        mks.sim.truncate = 5  # "@253ACK6.50E-7;FF" -> "CK6.50E-7;FF": address lost, not trusted
        mks.sim.truncate_replies = 1
        (reading,) = inst.read()
    finally:
        inst.close()
    assert reading.value == pytest.approx(6.5e-7)
    assert requests(mks).count(b"@253U?;FF") == 2, "the exchange that lost its head was repeated"


@pytest.mark.parametrize(
    ("fault", "spoilt"),
    [
        pytest.param({"truncate": 2}, r"truncated or garbled: b'53ACKTORR;FF'",  # RSD off: every reply loses "@2"
                     id="truncated-every-time-names-the-fragment"),
        pytest.param({"unterminated": True}, r"unterminated: b'@253ACKTORR'", id="reply-without-terminator"),
    ],
)
def test_spoilt_replies_are_a_protocol_error_then_the_next_poll_is_clean(
        mks: MKSLink, fault: dict[str, object], spoilt: str) -> None:
    inst = mks.instrument(channels=[1])
    try:
        after = fails_then_recovers(inst, mks.sim, ProtocolError,
                                    rf"^gauge: no complete reply to U\? from address 253 \({spoilt}\)", **fault)
        assert after[0].quality in (Quality.OK, Quality.UNDER_RANGE)
    finally:
        inst.close()


def test_echo_of_the_request_is_skipped(mks: MKSLink) -> None:
    mks.sim.echo = True
    mks.sim.set_pressure(1, 2.2e-8 * TORR)
    inst = mks.instrument(channels=[1, 2])
    try:
        readings = inst.read()
        (prz,) = read_and_close(mks.instrument(name="all", channels=[1], mode="all"))
    finally:
        inst.close()
    assert readings[0].value == pytest.approx(2.2e-8)
    assert prz.value == pytest.approx(2.2e-8)


def test_silence_times_out_naming_the_instrument_then_recovers(mks: MKSLink) -> None:
    mks.sim.set_pressure(1, 3.3e-3 * TORR)
    inst = mks.instrument(name="main_gauge", channels=[1])
    try:
        (reading,) = fails_then_recovers(inst, mks.sim, TransportTimeout,
                                         r"^main_gauge: no reply to U\? from address 253 within 0.5 s", silent=True)
    finally:
        inst.close()
    assert reading.value == pytest.approx(3.3e-3)


def test_wrong_address_is_silence(mks: MKSLink) -> None:
    with pytest.raises(TransportTimeout, match=r"^gauge: no reply to U\? from address 007"):
        mks.instrument(address=7)


def test_universal_address_reaches_a_unit_of_unknown_address(mks: MKSLink) -> None:
    mks.sim.set_pressure(1, 4.4e-6 * TORR)
    (reading,) = read_and_close(mks.instrument(address=254, channels=[1]))
    assert reading.value == pytest.approx(4.4e-6)
    assert b"@254PR1?;FF" in requests(mks)


def test_slow_replies_within_timeout(mks: MKSLink) -> None:
    mks.sim.reply_delay = 0.1
    mks.sim.set_pressure(1, 6.0e-8 * TORR)
    (reading,) = read_and_close(mks.instrument(channels=[1]))
    assert reading.value == pytest.approx(6.0e-8)


def test_reply_later_than_the_timeout_is_not_taken_for_the_next(mks: MKSLink) -> None:
    mks.sim.set_pressure(1, 1.0e-7 * TORR)
    mks.sim.set_pressure(2, 2.0e-3 * TORR)
    # The late reply comes 0.15 s after the timeout; ``settle`` (0.5 s) outlasts it, as it must.
    inst = mks.instrument(channels=[1, 2], timeout=0.3, settle=0.5)
    try:
        mks.sim.reply_delay = 0.45
        with pytest.raises(TransportTimeout):
            inst.read()
        mks.sim.reply_delay = 0.0
        readings = [r.value for r in inst.read()]
    finally:
        inst.close()
    assert readings == [pytest.approx(1.0e-7), pytest.approx(2.0e-3)]


def test_nak_with_code_is_a_device_error_naming_it(mks: MKSLink) -> None:
    inst = mks.instrument(channels=[1])
    assert isinstance(inst.driver, MKS937B)
    try:
        with pytest.raises(DeviceError, match=r"^gauge: T2\? refused with NAK152 NOT_IONGAUGE") as info:
            inst.driver.query("T2")
        assert info.value.code == 152
        with pytest.raises(DeviceError, match=r"NAK160 UNRECOGNIZED_MSG") as unknown:
            inst.driver.query("XYZ")
        assert unknown.value.code == 160
        assert inst.driver.query("T1") in ("G", "W")  # the link is still in step
    finally:
        inst.close()


def test_nak_for_every_command(mks: MKSLink) -> None:
    mks.sim.nak_all = 160
    with pytest.raises(DeviceError, match=r"^gauge: U\? refused with NAK160 UNRECOGNIZED_MSG"):
        mks.instrument()


def test_nak_without_code_is_tolerated(mks: MKSLink) -> None:
    inst = mks.instrument(channels=[1])
    try:
        mks.sim.bare_nak = True
        mks.sim.nak_all = 169
        with pytest.raises(DeviceError, match=r"^gauge: U\? refused with NAK without code") as info:
            inst.read()
        assert info.value.code is None
    finally:
        inst.close()


def test_too_many_foreign_frames_is_a_protocol_error_then_retried(mks: MKSLink) -> None:
    inst = mks.instrument(channels=[1], max_skipped_frames=2, retries=0)
    try:
        mks.sim.garbage = b"@001ACK1.00E+0;FF" * 3
        with pytest.raises(ProtocolError, match=r"^gauge: no reply to U\? from address 253 among 3 frames "
                                                r"that were not ours \(last b'@001ACK1.00E\+0;FF'\)"):
            inst.read()
        assert inst.read()[0].instrument == "gauge"
    finally:
        inst.close()
    retrying = mks.instrument(channels=[1], max_skipped_frames=2)  # retries: 1
    try:
        mks.sim.garbage = b"@001ACK1.00E+0;FF" * 3
        assert retrying.read()[0].instrument == "gauge"
    finally:
        retrying.close()


def test_unplugged_link_is_a_disconnect(mks: MKSLink) -> None:
    inst = mks.instrument(channels=[1])
    try:
        unplug_fails(inst, mks)
        if mks.kind == "tcp":  # a serial device server comes back: reopen and read again
            reconnect(inst)
            assert inst.read()[0].instrument == "gauge"
    finally:
        inst.close()


def test_unreachable_port_names_it(mks: MKSLink) -> None:
    mks.server.stop()
    with pytest.raises(TransportDisconnected, match=r"^gauge: cannot open"):
        mks.instrument()


# ---------------------------------------------------------------------- two controllers, one RS-485 line


def _pin_distinct(link: MKSLink) -> None:
    # Unit 1 reads n.00E-3 Torr on channel n, unit 2 n*3.00E-4 Torr shown in mbar: a mix-up
    # cannot go unnoticed (all in range for the cold cathodes and Piranis of the default setup).
    for n in range(1, 5):
        link.sims[0].set_pressure(n, n * 1e-3 * TORR)
        link.sims[1].set_pressure(n, n * 3e-4 * TORR)
    link.sims[1].set_unit("MBAR")


def _check(readings: list[Reading], name: str, scale: float, units: str) -> None:
    assert [r.instrument for r in readings] == [name] * len(readings)
    # 3 significant digits on the wire: a reading converted to mbar is rounded
    assert [r.value for r in readings] == [pytest.approx(n * scale, rel=3e-3) for n in range(1, len(readings) + 1)]
    assert {r.units for r in readings} == {units}


def test_two_controllers_on_one_line_share_one_transport(line: MKSLink) -> None:
    _pin_distinct(line)
    growth = line.config("growth", address=1, channels=[1, 2, 3, 4], mode="all")
    loadlock = line.config("loadlock", address=2, channels=[1, 2, 3])
    assert growth.transport == loadlock.transport
    with one_bus(growth, loadlock) as (first, second):
        for _ in range(3):
            _check(first.read(), "growth", 1e-3, "Torr")
            _check(second.read(), "loadlock", 3e-4 * TORR, "mbar")


def test_two_controllers_on_one_line_read_one_after_the_other(line: MKSLink) -> None:
    # What `chamber-bridge read` does: open the port, read one instrument, close, next.
    _pin_distinct(line)
    for name, address, scale, units in (("growth", 1, 1e-3, "Torr"), ("loadlock", 2, 3e-4 * TORR, "mbar")):
        _check(read_and_close(line.instrument(name, address=address, channels=[1, 2, 3, 4])), name, scale, units)


def test_shared_line_with_echo_and_a_silent_neighbour(line: MKSLink) -> None:
    _pin_distinct(line)
    line.sims[0].echo = True  # the adapter echoes every request, whoever it is for
    growth = line.config("growth", address=1, channels=[1, 2])
    loadlock = line.config("loadlock", address=2, channels=[1, 2])
    with one_bus(growth, loadlock) as (first, second):
        line.sims[1].silent = True
        with pytest.raises(TransportTimeout, match=r"^loadlock: no reply to U\? from address 002"):
            second.read()
        _check(first.read(), "growth", 1e-3, "Torr")
        line.sims[1].silent = False
        _check(second.read(), "loadlock", 3e-4 * TORR, "mbar")


def test_late_reply_of_one_unit_is_not_taken_by_the_other(line: MKSLink) -> None:
    _pin_distinct(line)
    growth = line.config("growth", address=1, channels=[1], timeout=0.8)
    loadlock = line.config("loadlock", address=2, channels=[1], timeout=0.8)
    with one_bus(growth, loadlock) as (first, second):
        line.sims[1].reply_delay = 1.0  # answers after the driver gave up...
        line.sims[0].reply_delay = 0.4  # ...so its reply lands inside unit 1's exchange
        with pytest.raises(TransportTimeout):
            second.read()
        _check(first.read(), "growth", 1e-3, "Torr")
        line.sims[0].reply_delay = line.sims[1].reply_delay = 0.0
        _check(second.read(), "loadlock", 3e-4 * TORR, "mbar")
        _check(first.read(), "growth", 1e-3, "Torr")


def test_foreign_reply_before_ours_is_skipped(line: MKSLink) -> None:
    _pin_distinct(line)
    line.sims[0].garbage = b"@002ACK9.99E+2;FF"  # a complete reply of unit 2 arrives first
    _check(read_and_close(line.instrument("growth", address=1, channels=[1])), "growth", 1e-3, "Torr")


# ---------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options",
    [{"address": 0}, {"address": 255}, {"channels": [1, 1]}, {"channels": [7]}, {"channels": []},
     {"mode": "fast"}, {"retries": 9}, {"baud": 9600}],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MKS937BOptions.model_validate(options)


def test_channel_table_names_slots() -> None:
    table = MKS937B.channel_table(MKS937BOptions(channels=[1, 6]))
    assert [(c.name, c.units, c.description) for c in table] == [
        ("pressure_1", "Torr|mbar|Pa|mTorr", "PR1 (937B slot A1), in the unit set on the controller"),
        ("pressure_6", "Torr|mbar|Pa|mTorr", "PR6 (937B slot C2), in the unit set on the controller")]


def test_conversation_connect_and_one_poll_of_all_channels_byte_for_byte() -> None:
    with serial_conversation(
        (b"@253U?;FF", b"@253ACKTORR;FF"),                       # connect: the display unit
        (b"@253U?;FF", b"@253ACKMBAR;FF"),                       # every poll reads it again
        (b"@253PRZ?;FF", b"@253ACK1.10E-9 LO<E-11 RP_OFF;FF"),   # mode all: one exchange
        owner="gauges",
    ) as line:
        driver = driver_on(line, "mks_937b", {"channels": [1, 2, 3], "mode": "all"})
        driver.connect()
        one, two, three = driver.read()
    assert (one.channel, one.value, one.units, one.quality) == ("pressure_1", 1.1e-9, "mbar", Quality.OK)
    assert (two.quality, two.detail, three.quality) == (Quality.UNDER_RANGE, "LO<E-11", Quality.SENSOR_OFF)
    assert one.timestamp == two.timestamp == three.timestamp  # one exchange, one timestamp


def test_conversation_rs485_echo_is_skipped_and_a_nak_names_its_code() -> None:
    with serial_conversation(
        (b"@001PR1?;FF", b"@001PR1?;FF@001ACK5.00E-7;FF"),   # a 2-wire line hears its own request
        (b"@001PR2?;FF", b"@001NAK160;FF"),
        owner="gauges",
    ) as line:
        driver = driver_on(line, "mks_937b", {"address": 1, "channels": [1, 2]})
        driver.session.needs_resync = False  # as after a connect
        assert driver.query("PR1") == "5.00E-7"
        with pytest.raises(DeviceError, match=r"^gauges: PR2\? refused with NAK160 UNRECOGNIZED_MSG"):
            driver.query("PR2")


# ------------------------------------------------------------------------ identity and configuration


def test_conversation_baseline_byte_for_byte_and_a_refused_query_recorded() -> None:
    with serial_conversation(
        (b"@253SN?;FF", b"@253ACK937B12345;FF"),
        (b"@253U?;FF", b"@253ACKTORR;FF"),
        (b"@253MT?;FF", b"@253NAK160;FF"),          # a unit without MT? (a 900-series transducer)
        owner="gauges",
    ) as line:
        driver = driver_on(line, "mks_937b", {"channels": [1], "settle": 0.0})
        driver.session.needs_resync = False
        baseline = driver.baseline()
    assert baseline.identity == {"vendor": "MKS Instruments", "serial": "937B12345"}
    assert baseline.configuration == {"unit": "Torr"}
    assert baseline.errors == {"MT?": "MT? refused with NAK160 UNRECOGNIZED_MSG (address 253, frame b'@253NAK160;FF')"}


def test_baseline_over_the_wire_follows_the_unit_and_survives_refused_identity(mks: MKSLink) -> None:
    inst = mks.instrument(channels=[1])
    try:
        baseline = inst.driver.baseline()
        assert baseline.identity == {"vendor": "MKS Instruments", "serial": "937B12345"}
        assert baseline.configuration == {"unit": "Torr", "module_types": "CC,PR,CC,PR,CM,NC"}
        mks.sim.refuse_identity = True
        mks.sim.set_unit("MBAR")
        refused = inst.driver.baseline()
        assert refused.identity == {"vendor": "MKS Instruments"} and set(refused.errors) == {"SN?", "MT?"}
        assert refused.configuration["unit"] == "mbar"
        assert inst.read()[0].units == "mbar"
    finally:
        inst.close()


def test_simulate_command_refuses_identity_and_changes_the_unit(tmp_path: Path) -> None:
    with simulate("mks_937b", "--tcp", "127.0.0.1:0", "--refuse-identity", "--change-unit", "0=MBAR") as sim:
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"site": "s", "bridge": {"instruments": [
            {"name": "ion_gauge", "driver": "mks_937b", "transport": {"kind": "serial", "port": sim.where,
                                                                      "timeout": 0.5},
             "options": {"channels": [1]}}]}}))
        result = run_cli("read", str(config), "--json", "--baseline")
    assert result.returncode == 0, result.stderr
    reading, baseline = (json.loads(line) for line in result.stdout.splitlines())
    assert reading["units"] == "mbar" and baseline["baseline"]["configuration"]["unit"] == "mbar"
    assert set(baseline["baseline"]["errors"]) == {"SN?", "MT?"}

"""The IMPAC driver over a real pty and real TCP against the simulator, in every fault mode."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.drivers.impac import Impac, codec
from bridge.edge.instrument import Instrument, connect_instrument
from bridge.errors import DeviceError, ProtocolError, TransportDisconnected, TransportTimeout
from bridge.model import Quality, Reading
from simulators.instruments.impac import ImpacSimulator
from simulators.serving import PtyServer
from simulators.serving.rs485 import SharedLine
from tests.helpers.cli import example_with, read_json, run_cli, simulate
from tests.helpers.conversation import driver_on, serial_conversation
from tests.helpers.drivers import by_channel, fails_then_recovers, read_and_close, reconnect, unplug_fails
from tests.helpers.impac import ImpacLink, impac_config
from tests.helpers.served import serve_on


def serve(sim: ImpacSimulator, kind: str) -> Iterator[ImpacLink]:
    with serve_on(kind, sim) as (server, port):
        yield ImpacLink(sim, port, kind, server)


@pytest.fixture(params=["pty", "tcp"])
def impac(request: pytest.FixtureRequest) -> Iterator[ImpacLink]:
    """An IGA 12 (newer firmware) at address 01, over a pty pair and over TCP (``socket://``)."""
    sim = ImpacSimulator(1, "IGA 12", seed=1)
    sim.set_temperature(256.3)
    yield from serve(sim, request.param)


@pytest.fixture(params=["pty", "tcp"])
def legacy(request: pytest.FixtureRequest) -> Iterator[ImpacLink]:
    """An IGA 320/23 (older firmware: silence on invalid commands, no AAfh) at address 00."""
    sim = ImpacSimulator(0, "IGA 320/23", seed=2)
    sim.set_temperature(400.0)
    yield from serve(sim, request.param)


@pytest.fixture(params=["pty", "tcp"])
def ratio(request: pytest.FixtureRequest) -> Iterator[ImpacLink]:
    """An ISR 12-LO ratio pyrometer at address 03."""
    sim = ImpacSimulator(3, "ISR 12-LO", seed=3)
    sim.set_temperature(900.0)
    yield from serve(sim, request.param)


def read_once(link: ImpacLink, **options: object) -> dict[str, Reading]:
    return by_channel(read_and_close(link.instrument(**options)))


def driver(inst: Instrument) -> Impac:
    assert isinstance(inst.driver, Impac)
    return inst.driver


# ------------------------------------------------------------------------ normal readings


def test_reads_temperature_in_celsius(impac: ImpacLink) -> None:
    readings = read_once(impac)
    t = readings["temperature"]
    assert (t.value, t.units, t.quality, t.instrument) == (pytest.approx(256.3), "degC", Quality.OK, "pyrometer")
    assert list(readings) == ["temperature"]
    assert b"01fh" in impac.requests() and b"01ms" in impac.requests()


def test_temperature_evolves_in_time(impac: ImpacLink) -> None:
    impac.sim.set_temperature(None)
    impac.sim.noise = 1.0
    inst = impac.instrument()
    try:
        values = {inst.read()[0].value for _ in range(5)}
    finally:
        inst.close()
    assert len(values) > 1, "a live pyrometer's reading changes (heating curve and noise)"


def test_fahrenheit_is_read_with_fh_at_connect(impac: ImpacLink) -> None:
    impac.sim.set_unit("F")
    t = read_once(impac, unit="C")["temperature"]  # the instrument's own unit wins
    assert (t.value, t.units) == (pytest.approx(493.3), "degF")


def test_unit_changed_on_the_pyrometer_is_followed(impac: ImpacLink) -> None:
    inst = impac.instrument()
    try:
        assert inst.read()[0].units == "degC"
        impac.sim.set_unit("F")
        (t,) = inst.read()
    finally:
        inst.close()
    assert (t.value, t.units) == (pytest.approx(493.3), "degF")


def test_unit_read_only_at_connect_without_track_unit(impac: ImpacLink) -> None:
    inst = impac.instrument(track_unit=False)
    try:
        inst.read()
        inst.read()
    finally:
        inst.close()
    assert impac.requests().count(b"01fh") == 1


@pytest.mark.parametrize("unit", ["C", "F"])
def test_model_without_fh_uses_the_configured_unit(legacy: ImpacLink, unit: str) -> None:
    legacy.sim.set_unit(unit)  # type: ignore[arg-type]
    inst = legacy.instrument(unit=unit)
    try:
        first = inst.read()[0]
        second = inst.read()[0]
    finally:
        inst.close()
    expected = 400.0 if unit == "C" else 752.0
    assert (first.value, first.units) == (pytest.approx(expected), f"deg{unit}")
    assert second.value == pytest.approx(expected)
    assert legacy.requests().count(b"00fh") == 1, "AAfh is tried once, at connect"


def test_global_address_99_reaches_a_lone_pyrometer(impac: ImpacLink) -> None:
    assert read_once(impac, address=99)["temperature"].value == pytest.approx(256.3)


def test_emissivity_and_exposure_time_channels(impac: ImpacLink) -> None:
    impac.sim.set_emissivity(0.853)
    impac.sim.set_exposure_code(3)
    readings = read_once(impac, emissivity=True, exposure_time=True)
    assert list(readings) == ["temperature", "emissivity", "exposure_time"]
    e, t90 = readings["emissivity"], readings["exposure_time"]
    assert (e.value, e.units, e.quality) == (pytest.approx(0.853), "1", Quality.OK)
    assert (t90.value, t90.units, t90.quality) == (pytest.approx(0.25), "s", Quality.OK)


def test_exposure_code_outside_the_table_has_no_value(impac: ImpacLink) -> None:
    impac.sim.set_exposure_code(0)
    t90 = read_once(impac, exposure_time=True)["exposure_time"]
    assert (t90.value, t90.quality) == (None, Quality.INVALID)
    assert "intrinsic" in t90.detail
    own_table = read_once(impac, exposure_time=True, exposure_times={0: 0.0015})["exposure_time"]
    assert own_table.value == pytest.approx(0.0015)


def test_ratio_pyrometer_gives_two_channels_from_one_exchange(ratio: ImpacLink) -> None:
    ratio.sim.target_emissivity = 0.6  # set ε 1.0 is too high: the one-channel reads low
    ratio.sim.log.clear()
    readings = read_once(ratio, ratio=True)
    one, both = readings["temperature"], readings["temperature_ratio"]
    assert both.value == pytest.approx(900.0)
    assert one.value is not None and 800 < one.value < 900
    assert one.timestamp == both.timestamp, "one exchange, one instant"
    assert ratio.requests().count(b"03ek") == 1 and b"03ms" not in ratio.requests()


def test_set_emissivity_accepts_ok_and_echo_form(impac: ImpacLink) -> None:
    inst = impac.instrument(emissivity=True)
    try:
        driver(inst).set_emissivity(0.853)
        assert impac.sim.emissivity == pytest.approx(0.853)
        impac.sim.set_reply = "echo"
        driver(inst).set_emissivity(0.9)
        assert impac.sim.emissivity == pytest.approx(0.9)
        assert by_channel(inst.read())["emissivity"].value == pytest.approx(0.9)
    finally:
        inst.close()


def test_baseline_over_the_wire_and_an_emissivity_changed_between_two(impac: ImpacLink) -> None:
    impac.sim.set_emissivity(0.7)
    impac.sim.set_exposure_code(3)
    inst = impac.instrument()
    try:
        baseline = driver(inst).baseline()
        impac.sim.set_emissivity(0.65)  # InfraWin, mid-run
        later = driver(inst).baseline()
    finally:
        inst.close()
    assert baseline.identity == {"vendor": "IMPAC (LumaSense / Advanced Energy)", "model": "IGA 12",
                                 "serial": "10137", "firmware": "IGA12 V2.04"}
    assert baseline.configuration == {"unit": "degC", "unit_from": "AAfh", "emissivity": 0.7, "exposure_code": 3,
                                      "range_low": 250, "range_high": 2500}
    assert baseline.errors == {}
    assert later.configuration["emissivity"] == 0.65


def test_a_refused_identity_is_recorded_and_the_pyrometer_goes_on(impac: ImpacLink, legacy: ImpacLink) -> None:
    impac.sim.refuse_identity = True
    inst = impac.instrument()
    try:
        baseline = driver(inst).baseline()
        assert by_channel(inst.read())["temperature"].value == pytest.approx(256.3)
    finally:
        inst.close()
    assert baseline.identity == {"vendor": "IMPAC (LumaSense / Advanced Energy)"}
    assert baseline.errors["AAna"] == ("01na answered 'no' (command or parameter not accepted by this model)")
    assert set(baseline.errors) == {"AAna", "AAsn", "AAve"} and baseline.configuration["emissivity"] == 1.0
    # older firmware is silent instead: two queries unanswered, the rest not asked, the reading goes on
    legacy.sim.refuse_identity = True
    old = legacy.instrument()
    try:
        silent = driver(old).baseline()
        assert by_channel(old.read())["temperature"].value == pytest.approx(400.0)
    finally:
        old.close()
    assert silent.identity == {"vendor": "IMPAC (LumaSense / Advanced Energy)"}
    assert "no reply" in silent.errors["AAna"] and "no reply" in silent.errors["AAsn"]
    assert silent.errors["AAve"] == "not asked: the instrument did not answer the queries before it"
    assert silent.configuration["unit"] == "degC" and silent.configuration["unit_from"] == "options.unit"


# ------------------------------------------------------------------------ special values


@pytest.mark.parametrize(
    ("special", "quality", "detail"),
    [
        (77770, Quality.NOT_READY, "varies per model"),
        (88880, Quality.OVER_RANGE, "above the basic range"),
        (80000, Quality.AIMING_LIGHT, "aiming laser"),
        (75550, Quality.SENSOR_ERROR, "head too hot"),
        (74440, Quality.SENSOR_ERROR, "head too cold"),
        (79990, Quality.INVALID, "unknown special value"),
    ],
)
def test_special_values_become_qualities_without_value(
        impac: ImpacLink, special: int, quality: Quality, detail: str) -> None:
    impac.sim.special = special
    t = read_once(impac)["temperature"]
    assert (t.value, t.quality, t.units) == (None, quality, "degC")
    assert detail in t.detail


def test_warm_up_then_ready(impac: ImpacLink) -> None:
    impac.sim.warm_up = 3600.0
    impac.sim.power_cycle()
    inst = impac.instrument()
    try:
        warming = inst.read()[0]
        impac.sim.warm_up = 0.0
        ready = inst.read()[0]
    finally:
        inst.close()
    assert (warming.quality, warming.value) == (Quality.NOT_READY, None)
    assert (ready.quality, ready.value) == (Quality.OK, pytest.approx(256.3))


def test_target_above_the_range_is_over_range(impac: ImpacLink) -> None:
    impac.sim.set_temperature(2600.0)
    t = read_once(impac)["temperature"]
    assert (t.quality, t.value) == (Quality.OVER_RANGE, None)


def test_aiming_laser_switched_on_over_the_wire(ratio: ImpacLink) -> None:
    inst = ratio.instrument(ratio=True)
    try:
        driver(inst).setting("la", "1")
        on = by_channel(inst.read())
        driver(inst).setting("la", "0")
        off = by_channel(inst.read())
    finally:
        inst.close()
    assert {r.quality for r in on.values()} == {Quality.AIMING_LIGHT}
    assert all(r.value is None for r in on.values())
    assert off["temperature_ratio"].value == pytest.approx(900.0)


# ------------------------------------------------------------------------ invalid commands


def test_no_from_newer_firmware_is_a_device_error(impac: ImpacLink) -> None:
    inst = impac.instrument(name="pyro")
    try:
        with pytest.raises(DeviceError, match=r"^pyro: 01xx answered 'no'") as info:
            driver(inst).query("xx", codec.reply_text)
        assert info.value.code == "no"
        assert inst.read()[0].value == pytest.approx(256.3)  # the line is still in step
    finally:
        inst.close()


def test_ratio_on_a_one_colour_model_is_refused(impac: ImpacLink) -> None:
    inst = impac.instrument(ratio=True)
    try:
        with pytest.raises(DeviceError, match="01ek answered 'no'"):
            inst.read()
    finally:
        inst.close()


def test_silence_from_older_firmware_is_a_timeout(legacy: ImpacLink) -> None:
    inst = legacy.instrument(name="pyro")
    try:
        with pytest.raises(TransportTimeout, match=r"^pyro: no reply.*00xx"):
            driver(inst).query("xx", codec.reply_text)
        assert inst.read()[0].value == pytest.approx(400.0)
    finally:
        inst.close()


def test_setting_refused_with_no(impac: ImpacLink) -> None:
    inst = impac.instrument()
    try:
        with pytest.raises(DeviceError, match="01em0010 answered 'no'"):
            driver(inst).set_emissivity(0.01)  # below the IGA 12's 0.05
    finally:
        inst.close()
    assert impac.sim.emissivity == 1.0


# ------------------------------------------------------------------------ line faults


def test_garbage_before_replies_is_tolerated(impac: ImpacLink) -> None:
    impac.sim.garbage_at_connect = b"\xff\xfe\x00\x80"
    inst = impac.instrument(emissivity=True)
    try:
        impac.sim.garbage = b"\xff\x00\xfe"  # noise at the turnaround, in front of the AAfh reply
        first = by_channel(inst.read())
        impac.sim.garbage = b"\x80\xff"
        second = by_channel(inst.read())
    finally:
        inst.close()
    for readings in (first, second):
        assert readings["temperature"].value == pytest.approx(256.3)
        assert readings["emissivity"].value == pytest.approx(1.0)


def test_split_replies_are_reassembled(impac: ImpacLink) -> None:
    impac.sim.split_replies = True
    impac.sim.set_temperature(1234.5)
    readings = read_once(impac, emissivity=True)
    assert readings["temperature"].value == pytest.approx(1234.5)
    assert readings["emissivity"].value == pytest.approx(1.0)


def test_slow_replies_within_timeout(impac: ImpacLink) -> None:
    impac.sim.reply_delay = 0.1
    assert read_once(impac)["temperature"].value == pytest.approx(256.3)


@pytest.mark.parametrize(
    ("knob", "value", "options", "error", "match", "temperature"),
    [
        pytest.param("truncate", "head", {}, ProtocolError,
                     r"^pyro: expected 5 digits of temperature in IMPAC reply b'63\\r'", 256.3,
                     id="reply-missing-its-head-is-a-protocol-error"),
        # "025" is dropped, not glued to the next reply: a new temperature shows it
        pytest.param("truncate", "tail", {}, TransportTimeout, r"^pyro: no reply.*got b'025'", 300.0,
                     id="reply-missing-its-tail-times-out"),
        # Reply 1 s late against a 0.3 s timeout; the driver listens 2 s after the failure, so the
        # late reply lands in that window with a wide margin on a loaded machine.
        pytest.param("reply_delay", 1.0, {"timeout": 0.3, "settle": 2.0}, TransportTimeout, r"^pyro: ", 300.0,
                     id="reply-after-the-timeout-is-dropped-not-taken-for-the-next"),
        pytest.param("line_mismatch", "parity", {}, ProtocolError, r"^pyro: .*b'\\x002\\x00\\x00\\x00\\r'.*8E1", 256.3,
                     id="parity-mismatch-is-a-protocol-error-naming-8e1"),
        pytest.param("line_mismatch", "baud", {}, TransportTimeout, r"^pyro: no reply.*got b'\\x", 256.3,
                     id="baud-mismatch-is-garbage-without-terminator"),
    ],
)
def test_a_line_fault_fails_the_poll_then_the_next_poll_is_clean(
        impac: ImpacLink, knob: str, value: object, options: dict[str, float], error: type[Exception], match: str,
        temperature: float) -> None:
    inst = impac.instrument(name="pyro", track_unit=False, **options)
    try:
        normal = getattr(impac.sim, knob)
        setattr(impac.sim, knob, value)
        with pytest.raises(error, match=match):
            inst.read()
        setattr(impac.sim, knob, normal)
        impac.sim.set_temperature(temperature)  # 256.3: as it was
        assert inst.read()[0].value == pytest.approx(temperature)
    finally:
        inst.close()


def test_parity_mismatch_at_connect_fails_the_connect(impac: ImpacLink) -> None:
    impac.sim.line_mismatch = "parity"
    with pytest.raises(ProtocolError, match="8E1"):
        impac.instrument()  # the AAfh reply "0" CR arrives as NUL CR


def test_adapter_echo_is_skipped(impac: ImpacLink) -> None:
    impac.sim.echo = True
    inst = impac.instrument(emissivity=True)
    try:
        readings = by_channel(inst.read())
        driver(inst).set_emissivity(0.7)  # echo, then "ok": both consumed
        readings_after = by_channel(inst.read())
    finally:
        inst.close()
    assert readings["temperature"].value == pytest.approx(256.3)
    assert readings_after["emissivity"].value == pytest.approx(0.7)
    assert readings_after["temperature"].value == pytest.approx(256.3)


def test_silence_times_out_naming_the_instrument_then_recovers(impac: ImpacLink) -> None:
    inst = impac.instrument(name="substrate_pyrometer")
    try:
        after = fails_then_recovers(inst, impac.sim, TransportTimeout, r"^substrate_pyrometer: no reply.*01fh",
                                    silent=True)
        assert after[0].value == pytest.approx(256.3)
    finally:
        inst.close()


def test_wrong_address_is_silence(impac: ImpacLink) -> None:
    inst = impac.instrument(name="pyro", address=5)  # connects: AAfh silence = a model without it
    try:
        assert not driver(inst).unit_readable
        with pytest.raises(TransportTimeout, match=r"^pyro: no reply.*05ms"):
            inst.read()
    finally:
        inst.close()


def test_unplugged_link_is_a_disconnect(impac: ImpacLink) -> None:
    inst = impac.instrument()
    try:
        unplug_fails(inst, impac)
        if impac.kind == "tcp":  # a serial device server comes back: reopen and read again
            reconnect(inst)
            assert inst.read()[0].value == pytest.approx(256.3)
    finally:
        inst.close()


def test_unreachable_port_names_it(impac: ImpacLink) -> None:
    impac.server.stop()
    with pytest.raises(TransportDisconnected, match=r"^pyrometer: cannot open"):
        impac.instrument()


# ------------------------------------------------------------------------ one RS-485 line, two pyrometers


@pytest.fixture
def line() -> Iterator[tuple[ImpacSimulator, ImpacSimulator, str]]:
    """Pyrometers 01 and 02 sharing one RS-485 line, served on one pty."""
    first = ImpacSimulator(1, "IGA 12", seed=11)
    second = ImpacSimulator(2, "IGA 12", seed=12)
    first.set_temperature(612.5)
    second.set_temperature(845.0)
    with PtyServer(SharedLine([first, second])) as server:
        yield first, second, server.port


def test_two_pyrometers_on_one_line_are_not_mixed_up(line: tuple[ImpacSimulator, ImpacSimulator, str]) -> None:
    first, second, port = line
    a = connect_instrument(impac_config(port, "substrate", address=1, emissivity=True))
    b = connect_instrument(impac_config(port, "cell", address=2, emissivity=True))
    second.set_emissivity(0.42)
    try:
        for step in range(4):
            first.set_temperature(600.0 + step)
            second.set_temperature(800.0 + step)
            ra, rb = by_channel(a.read()), by_channel(b.read())
            assert (ra["temperature"].value, rb["temperature"].value) == (
                pytest.approx(600.0 + step), pytest.approx(800.0 + step))
            assert (ra["emissivity"].value, rb["emissivity"].value) == (pytest.approx(1.0), pytest.approx(0.42))
            assert ra["temperature"].instrument == "substrate" and rb["temperature"].instrument == "cell"
    finally:
        a.close()
        b.close()


def test_late_reply_on_a_shared_line_is_not_taken_by_the_other_pyrometer(
        line: tuple[ImpacSimulator, ImpacSimulator, str]) -> None:
    first, _second, port = line
    # 01 answers 1 s late against a 0.3 s timeout; its driver listens 2 s after the failure.
    a = connect_instrument(impac_config(port, "substrate", timeout=0.3, address=1, settle=2.0, track_unit=False))
    b = connect_instrument(impac_config(port, "cell", timeout=0.3, address=2, track_unit=False))
    try:
        first.reply_delay = 1.0
        with pytest.raises(TransportTimeout, match=r"^substrate: "):
            a.read()
        for _ in range(3):
            assert b.read()[0].value == pytest.approx(845.0)
        first.reply_delay = 0.0
        assert a.read()[0].value == pytest.approx(612.5)
    finally:
        a.close()
        b.close()


def test_silent_pyrometer_does_not_disturb_the_other(line: tuple[ImpacSimulator, ImpacSimulator, str]) -> None:
    first, _second, port = line
    a = connect_instrument(impac_config(port, "substrate", address=1))
    b = connect_instrument(impac_config(port, "cell", address=2))
    try:
        first.silent = True
        with pytest.raises(TransportTimeout, match=r"^substrate: "):
            a.read()
        assert b.read()[0].value == pytest.approx(845.0)
        first.silent = False
        assert a.read()[0].value == pytest.approx(612.5)
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------------ simulate + read, as a user would


def test_simulate_command_serves_a_line_that_read_reaches(tmp_path: Path) -> None:
    with simulate("impac", "--tcp", "127.0.0.1:0", "--address", "1", "--address", "2",
                  "--temperature", "612.5", "--temperature", "845", "--seed", "1", stop=signal.SIGTERM) as sim:
        assert sim.where.startswith("socket://127.0.0.1:")
        got = read_json(example_with("impac.yaml", tmp_path, port=sim.where))
    readings = {(r["instrument"], r["channel"]): r for r in got}
    assert readings[("substrate_pyrometer", "temperature")]["value"] == pytest.approx(612.5)
    assert readings[("substrate_pyrometer", "temperature")]["units"] == "degC"
    assert readings[("substrate_pyrometer", "emissivity")]["value"] == pytest.approx(1.0)
    assert readings[("substrate_pyrometer", "exposure_time")]["quality"] == "invalid"
    assert readings[("viewport_pyrometer", "temperature")]["value"] == pytest.approx(845.0)


def test_conversation_connect_and_one_poll_byte_for_byte() -> None:
    with serial_conversation(
        (b"01fh\r", b"1\r"),                  # connect: the unit the pyrometer shows (°F)
        (b"01fh\r", b"1\r"),                  # tracked every poll
        (b"01ms\r", b"02563\r"),              # tenths of a degree
        (b"01em\r", b"0853\r"),               # emissivity in thousandths
        owner="substrate",
    ) as line:
        driver = driver_on(line, "impac", {"address": 1, "emissivity": True})
        driver.connect()
        temperature, emissivity = driver.read()
    assert (temperature.value, temperature.units) == (pytest.approx(256.3), "degF")
    assert (emissivity.channel, emissivity.value) == ("emissivity", pytest.approx(0.853))


def test_conversation_baseline_byte_for_byte() -> None:
    with serial_conversation(
        (b"01fh\r", b"0\r"),                  # connect: the unit
        (b"01na\r", b"IGA 12\r"),             # identity: name, serial, type and version
        (b"01sn\r", b"10137\r"),
        (b"01ve\r", b"IGA12 V2.04\r"),
        (b"01fh\r", b"0\r"),                  # configuration: unit, emissivity, t90 code, basic range
        (b"01em\r", b"0700\r"),
        (b"01ez\r", b"3\r"),
        (b"01mb\r", b"00FA09C4\r"),
        owner="substrate",
    ) as line:
        driver = driver_on(line, "impac", {"address": 1})
        driver.connect()
        baseline = driver.baseline()
    assert baseline.identity == {"vendor": "IMPAC (LumaSense / Advanced Energy)", "model": "IGA 12",
                                 "serial": "10137", "firmware": "IGA12 V2.04"}
    assert baseline.configuration == {"unit": "degC", "unit_from": "AAfh", "emissivity": 0.7, "exposure_code": 3,
                                      "range_low": 250, "range_high": 2500}


def test_conversation_a_model_without_aafh_is_assumed_in_the_configured_unit() -> None:
    with serial_conversation(
        (b"00fh\r", b"no\r"),                 # older firmware refuses the unit query
        (b"00ms\r", b"88880\r"),              # a special value, not a temperature
        owner="cell",
    ) as line:
        driver = driver_on(line, "impac", {"unit": "C"})
        driver.connect()
        (temperature,) = driver.read()
    assert (temperature.value, temperature.units, temperature.quality) == (None, "degC", Quality.OVER_RANGE)


def test_simulate_command_refuses_identity_and_changes_the_emissivity(tmp_path: Path) -> None:
    with simulate("impac", "--tcp", "127.0.0.1:0", "--address", "1", "--emissivity", "0.7", "--refuse-identity",
                  "--change-emissivity", "0=0.55", stop=signal.SIGTERM) as sim:
        config = example_with("impac.yaml", tmp_path, port=sim.where)
        raw = yaml.safe_load(config.read_text())
        raw["bridge"]["instruments"] = raw["bridge"]["instruments"][:1]
        config.write_text(yaml.safe_dump(raw))
        result = run_cli("read", str(config), "--json", "--baseline")
    assert result.returncode == 0, result.stderr
    (baseline,) = [json.loads(line)["baseline"] for line in result.stdout.splitlines() if "baseline" in line]
    assert baseline["configuration"]["emissivity"] == 0.55
    assert set(baseline["errors"]) == {"AAna", "AAsn", "AAve"}

"""The IMPAC simulator as a pure state machine: bytes in, exact bytes out, on a fake clock.

These pin the wire behaviour the impac driver is tested against (docs/protocols.md section 5.1), so a
change here is a change of the simulated instrument, not a refactor.
"""

from __future__ import annotations

import pytest

from simulators.instruments.impac import MODELS, ImpacSimulator, format_temperature, garble, model_key
from simulators.serving import MemoryLink
from simulators.serving.rs485 import SharedLine
from tests.helpers.clock import FakeClock
from tests.helpers.memory_link import attach, talk


@pytest.fixture
def sim(clock: FakeClock) -> ImpacSimulator:
    sim = ImpacSimulator(1, "IGA 12", seed=1, clock=clock)
    sim.set_temperature(256.3)
    return sim


@pytest.fixture
def link(sim: ImpacSimulator, clock: FakeClock) -> MemoryLink:
    return attach(sim, clock)


def at_00(clock: FakeClock, model: str, celsius: float) -> tuple[ImpacSimulator, MemoryLink]:
    """A pyrometer of ``model`` at address 00, pinned at ``celsius``, attached to a host."""
    sim = ImpacSimulator(0, model, seed=1, clock=clock)
    sim.set_temperature(celsius)
    return sim, attach(sim, clock)


# ------------------------------------------------------------------------ addressing


def test_temperature_at_own_address(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"01ms\r") == b"02563\r"


def test_other_addresses_are_silence_and_99_answers(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"00ms\r") == b""
    assert talk(sim, link, b"02ms\r") == b""
    assert talk(sim, link, b"02xx\r") == b"", "an invalid command for another address is not ours to refuse"
    assert talk(sim, link, b"99ms\r") == b"02563\r"


def test_98_executes_settings_without_reply(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"98em0853\r") == b""
    assert talk(sim, link, b"98ms\r") == b""
    assert talk(sim, link, b"98xx\r") == b""
    assert sim.emissivity == pytest.approx(0.853)


def test_request_split_across_reads_and_lf_ignored(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"0") == b""
    assert talk(sim, link, b"1m") == b""
    assert talk(sim, link, b"s\r\n") == b"02563\r"
    assert talk(sim, link, b"01ms\r01em\r") == b"02563\r1000\r"


def test_two_pyrometers_on_one_line_answer_only_their_own_address(clock: FakeClock) -> None:
    first = ImpacSimulator(1, seed=1, clock=clock)
    second = ImpacSimulator(2, seed=2, clock=clock)
    first.set_temperature(100.0)
    second.set_temperature(200.0)
    line = SharedLine([first, second])
    link = attach(line, clock)
    line.received(b"01ms\r")
    assert link.take() == b"01000\r"
    line.received(b"02ms\r")
    assert link.take() == b"02000\r"
    line.received(b"03ms\r")
    assert link.take() == b""


# ------------------------------------------------------------------------ readings


def test_temperature_evolves_along_the_heating_curve(clock: FakeClock) -> None:
    sim = ImpacSimulator(0, "IGA 12", seed=3, clock=clock, start_c=300.0, target_c=700.0, tau=60.0)
    sim.noise = 0.0
    link = attach(sim, clock)
    assert talk(sim, link, b"00ms\r") == b"03000\r"
    clock.advance(60.0)
    mid = int(talk(sim, link, b"00ms\r")[:5]) / 10
    clock.advance(6000.0)
    assert talk(sim, link, b"00ms\r") == b"07000\r"
    assert 300.0 < mid < 700.0


def test_temperature_source_drives_the_reading(sim: ImpacSimulator, link: MemoryLink) -> None:
    values = iter([612.54, 613.0])
    sim.set_temperature_source(lambda: next(values))
    assert talk(sim, link, b"01ms\r") == b"06125\r"
    assert talk(sim, link, b"01ms\r") == b"06130\r"


def test_fahrenheit_by_fh_and_by_front_panel(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"01fh\r") == b"0\r"
    assert talk(sim, link, b"01fh1\r") == b"ok\r"
    assert talk(sim, link, b"01fh\r") == b"1\r"
    assert talk(sim, link, b"01ms\r") == b"04933\r"  # 256.3 °C = 493.34 °F
    sim.set_unit("C")
    assert talk(sim, link, b"01ms\r") == b"02563\r"


def test_special_values(sim: ImpacSimulator, link: MemoryLink) -> None:
    for value in (77770, 88880, 80000, 75550, 74440):
        sim.special = value
        assert talk(sim, link, b"01ms\r") == f"{value}\r".encode()
    sim.special = None
    assert talk(sim, link, b"01ms\r") == b"02563\r"


def test_warm_up_after_power_on_and_power_cycle(clock: FakeClock) -> None:
    sim = ImpacSimulator(0, seed=1, clock=clock)
    sim.set_temperature(500.0)
    sim.warm_up = 30.0
    link = attach(sim, clock)
    assert talk(sim, link, b"00ms\r") == b"77770\r"
    clock.advance(31.0)
    assert talk(sim, link, b"00ms\r") == b"05000\r"
    sim.power_cycle()
    assert talk(sim, link, b"00ms\r") == b"77770\r"


def test_over_range_above_the_model_range(sim: ImpacSimulator, link: MemoryLink) -> None:
    sim.set_temperature(2600.0)  # IGA 12: up to 2500 °C
    assert talk(sim, link, b"01ms\r") == b"88880\r"


def test_aiming_laser_blanks_the_isr_reading_only(clock: FakeClock) -> None:
    isr, link = at_00(clock, "ISR 12-LO", 800.0)
    assert talk(isr, link, b"00la1\r") == b"ok\r"
    assert talk(isr, link, b"00la\r") == b"1\r"
    assert talk(isr, link, b"00ms\r") == b"80000\r"
    assert talk(isr, link, b"00ek\r") == b"8000080000\r"
    assert talk(isr, link, b"00la0\r") == b"ok\r"
    assert talk(isr, link, b"00ms\r") == b"08000\r"
    iga, iga_link = at_00(clock, "IGA 12", 800.0)
    iga.set_laser(True)
    assert talk(iga, iga_link, b"00ms\r") == b"08000\r"


def test_ratio_pyrometer_ek_and_emissivity_error_on_the_one_channel(clock: FakeClock) -> None:
    sim, link = at_00(clock, "ISR 12-LO", 900.0)
    assert talk(sim, link, b"00ek\r") == b"0900009000\r"
    sim.target_emissivity = 0.5  # the set ε (1.0) is too high: the one-channel reads low
    reply = talk(sim, link, b"00ek\r")
    one, ratio = int(reply[:5]) / 10, int(reply[5:10]) / 10
    assert ratio == 900.0
    assert 800.0 < one < 900.0
    assert talk(sim, link, b"00ms\r") == b"09000\r"  # a ratio model's ms is the ratio temperature


def test_ek_is_invalid_on_a_one_colour_model(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"01ek\r") == b"no\r"


def test_emissivity_and_exposure_settings(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"01em\r") == b"1000\r"
    assert talk(sim, link, b"01em0853\r") == b"ok\r"
    assert talk(sim, link, b"01em\r") == b"0853\r"
    assert talk(sim, link, b"01em0049\r") == b"no\r"  # IGA 12: 0050-1000
    assert talk(sim, link, b"01em1001\r") == b"no\r"
    assert talk(sim, link, b"01ez\r") == b"0\r"
    assert talk(sim, link, b"01ez4\r") == b"ok\r"
    assert talk(sim, link, b"01ez\r") == b"4\r"
    assert talk(sim, link, b"01ez7\r") == b"no\r"
    assert (sim.emissivity, sim.exposure_code) == (pytest.approx(0.853), 4)


def test_echo_form_of_setting_replies(sim: ImpacSimulator, link: MemoryLink) -> None:
    sim.set_reply = "echo"
    assert talk(sim, link, b"01em0853\r") == b"01em0853\r"
    assert talk(sim, link, b"99em0900\r") == b"01em0900\r"


def test_identity(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"01na\r") == b"IGA 12\r"
    assert talk(sim, link, b"01ve\r") == b"IGA12 V2.04\r"
    assert talk(sim, link, b"01sn\r").rstrip(b"\r").isdigit()
    assert talk(sim, link, b"01mb\r") == b"00FA09C4\r"  # the IGA 12's basic range, 250-2500 °C
    sim.refuse_identity = True
    assert [talk(sim, link, request) for request in (b"01na\r", b"01sn\r", b"01ve\r")] == [b"no\r"] * 3
    assert talk(sim, link, b"01em\r") == b"1000\r"
    sim.answers_no = False  # older firmware: silence
    assert talk(sim, link, b"01na\r") == b""


# ------------------------------------------------------------------------ invalid commands


@pytest.mark.parametrize("request_", [b"01xx\r", b"01MS\r", b"01ms5\r", b"01em08\r", b"01em?\r", b"01m\r", b"01\r"])
def test_newer_firmware_says_no(sim: ImpacSimulator, link: MemoryLink, request_: bytes) -> None:
    assert talk(sim, link, request_) == b"no\r"


def test_older_firmware_says_nothing_and_knows_no_fh(clock: FakeClock) -> None:
    sim, link = at_00(clock, "IGA 320/23", 400.0)
    assert talk(sim, link, b"00xx\r") == b""
    assert talk(sim, link, b"00fh\r") == b""
    assert talk(sim, link, b"00ms\r") == b"04000\r"
    sim.answers_no = True  # the knob overrides the model's firmware generation
    assert talk(sim, link, b"00fh\r") == b"no\r"


def test_runaway_line_is_dropped(sim: ImpacSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"x" * 100 + b"\r") == b""
    assert talk(sim, link, b"01ms\r") == b"02563\r"


# ------------------------------------------------------------------------ faults


def test_silent(sim: ImpacSimulator, link: MemoryLink) -> None:
    sim.silent = True
    assert talk(sim, link, b"01ms\r") == b""
    sim.silent = False
    assert talk(sim, link, b"01ms\r") == b"02563\r"


def test_garbage_once_and_at_connect(sim: ImpacSimulator, clock: FakeClock) -> None:
    sim.garbage_at_connect = b"\xff\x00"
    link = attach(sim, clock)
    assert link.take() == b"\xff\x00"
    sim.garbage = b"\x80\xfe"
    assert talk(sim, link, b"01ms\r") == b"\x80\xfe02563\r"
    assert talk(sim, link, b"01ms\r") == b"02563\r"


def test_truncated_replies(sim: ImpacSimulator, link: MemoryLink) -> None:
    sim.truncate = "head"
    assert talk(sim, link, b"01ms\r") == b"63\r"
    sim.truncate = "tail"
    assert talk(sim, link, b"01ms\r") == b"025"


def test_line_mismatch_garbles_replies(sim: ImpacSimulator, link: MemoryLink) -> None:
    sim.line_mismatch = "parity"
    assert talk(sim, link, b"01ms\r") == b"\x002\x00\x00\x00\r"
    sim.line_mismatch = "baud"
    garbled = talk(sim, link, b"01ms\r")
    assert len(garbled) == 3 and b"\r" not in garbled and all(b >= 0xC0 for b in garbled)
    assert garble(b"02563\r", "baud") == garbled


def test_adapter_echo_comes_before_the_reply_for_any_address(sim: ImpacSimulator, link: MemoryLink) -> None:
    sim.echo = True
    assert talk(sim, link, b"01ms\r") == b"01ms\r02563\r"
    assert talk(sim, link, b"05ms\r") == b"05ms\r"


def test_split_and_delayed_replies_go_through_the_link(sim: ImpacSimulator, clock: FakeClock) -> None:
    link = attach(sim, clock)
    sim.split_replies = True
    sim.reply_delay = 0.2
    sim.received(b"01ms\r")
    assert link.take() == b""
    clock.advance(1.0)
    link.pump()
    assert link.output == b"02563\r"
    assert len(link.writes) > 1


def test_log_records_both_directions(sim: ImpacSimulator, link: MemoryLink) -> None:
    talk(sim, link, b"01ms\r")
    assert sim.log[-2:] == [("rx", b"01ms\r"), ("tx", b"02563\r")]
    assert sim.sent().endswith(b"02563\r")


# ------------------------------------------------------------------------ construction


def test_models_and_arguments() -> None:
    assert model_key("isr 12-lo") in MODELS
    assert ImpacSimulator(0, "iga320/23").model.name == "IGA 320/23"
    for bad in ({"address": 98}, {"model": "IGA 999"}, {"unit": "K"}):
        with pytest.raises(ValueError):
            ImpacSimulator(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ImpacSimulator(0, "IGA 320/23").set_emissivity(0.05)  # 0.1-1.0 on this model
    assert format_temperature(-5.0) == b"00000"
    assert format_temperature(1234.56) == b"12346"

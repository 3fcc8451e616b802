"""The MKS 937B simulator as a pure state machine: bytes in, exact bytes out, on a fake clock.

These pin the wire behaviour the mks_937b driver is tested against (docs/protocols.md section 3), so a
change here is a change of the simulated instrument, not a refactor.
"""

from __future__ import annotations

import re
import signal

import pytest
import serial
from click.testing import CliRunner

from simulators.cli.instruments import mks_937b as command
from simulators.instruments.mks_937b import MKS937BSimulator, format_pressure, parse_unit
from simulators.serving import MemoryLink
from simulators.serving.rs485 import SharedLine
from tests.helpers.cli import simulator_command
from tests.helpers.clock import FakeClock
from tests.helpers.memory_link import attach, talk

NUMBER = rb"-?\d\.\d{2,3}E[+-]\d+"


@pytest.fixture
def sim(clock: FakeClock) -> MKS937BSimulator:
    return MKS937BSimulator(253, seed=1, clock=clock)


@pytest.fixture
def link(sim: MKS937BSimulator, clock: FakeClock) -> MemoryLink:
    return attach(sim, clock)


# ------------------------------------------------------------------------ framing and addressing


def test_pressure_query(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1.1e-9 * 1.33322368)  # mbar
    assert talk(sim, link, b"@253PR1?;FF") == b"@253ACK1.10E-9;FF"


def test_capacitance_manometer_has_four_digits(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.set_pressure(5, 760.2 * 1.33322368)
    assert talk(sim, link, b"@253PR5?;FF") == b"@253ACK7.602E+2;FF"  # the manual's example


def test_request_split_across_reads(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.set_pressure(2, 1.33322368e-3)
    assert talk(sim, link, b"@25") == b""
    assert talk(sim, link, b"3PR2?;") == b""
    assert talk(sim, link, b"F") == b""
    assert talk(sim, link, b"F") == b"@253ACK1.00E-3;FF"


def test_two_requests_in_one_write(sim: MKS937BSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"@253U?;FF@253AD?;FF") == b"@253ACKTORR;FF@253ACK253;FF"


def test_noise_and_a_broken_request_before_the_at_are_ignored(sim: MKS937BSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"\xff\x00@25@253SN?;FF") == b"@253ACK937B12345;FF"
    assert talk(sim, link, b"PR1?;FF") == b""  # no @ at all


def test_other_addresses_get_silence(sim: MKS937BSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"@001PR1?;FF") == b""
    assert talk(sim, link, b"@252U?;FF") == b""


def test_universal_address_is_answered_from_the_own_address(sim: MKS937BSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"@254CP1!ON;FF") == b"@253ACKON;FF"


def test_broadcast_executes_without_reply(sim: MKS937BSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"@255U!MBAR;FF") == b""
    assert talk(sim, link, b"@253U?;FF") == b"@253ACKMBAR;FF"


def test_shared_line_only_the_addressed_unit_answers(clock: FakeClock) -> None:
    one = MKS937BSimulator(1, seed=1, clock=clock)
    two = MKS937BSimulator(2, seed=2, clock=clock)
    one.set_pressure(1, 1.33322368e-6)
    two.set_pressure(1, 2 * 1.33322368e-6)
    line = SharedLine([one, two])
    link = attach(line, clock)
    line.received(b"@002PR1?;FF")
    assert link.take() == b"@002ACK2.00E-6;FF"
    line.received(b"@001PR1?;FF")
    assert link.take() == b"@001ACK1.00E-6;FF"
    line.received(b"@003PR1?;FF")
    assert link.take() == b""


# ------------------------------------------------------------------------ commands


def test_prz_reads_six_channels_blank_separated(sim: MKS937BSimulator, link: MemoryLink) -> None:
    for ch, torr in zip(range(1, 5), (1e-6, 2e-3, 3e-8, 4e-1), strict=True):
        sim.set_pressure(ch, torr * 1.33322368)
    sim.set_pressure(5, 5.0e-5)  # a capacitance manometer far below its range
    assert talk(sim, link, b"@253PRZ?;FF") == b"@253ACK1.00E-6 2.00E-3 3.00E-8 4.00E-1 LO<E-03 NOGAUGE;FF"


def test_units_scale_readings(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.set_pressure(2, 1.33322368)  # 1 Torr
    assert talk(sim, link, b"@253U!mbar;FF") == b"@253ACKMBAR;FF"  # PyExpLabSys sends lower case
    assert talk(sim, link, b"@253PR2?;FF") == b"@253ACK1.33E+0;FF"
    assert talk(sim, link, b"@253U!PASCAL;FF") == b"@253ACKPASCAL;FF"
    assert talk(sim, link, b"@253PR2?;FF") == b"@253ACK1.33E+2;FF"
    assert talk(sim, link, b"@253U!MICRON;FF") == b"@253ACKMICRON;FF"
    assert talk(sim, link, b"@253PR2?;FF") == b"@253ACK1.00E+3;FF"
    sim.set_unit("torr")  # front panel
    assert talk(sim, link, b"@253U?;FF") == b"@253ACKTORR;FF"


def test_sensor_power(sim: MKS937BSimulator, link: MemoryLink, clock: FakeClock) -> None:
    sim.set_pressure(1, 1e-7)
    sim.ignition_delay = 5.0
    assert talk(sim, link, b"@253CP1!OFF;FF") == b"@253ACKOFF;FF"
    assert talk(sim, link, b"@253CP1?;FF") == b"@253ACKOFF;FF"
    assert talk(sim, link, b"@253PR1?;FF") == b"@253ACKOFF;FF"
    assert talk(sim, link, b"@253T1?;FF") == b"@253ACKO;FF"
    assert talk(sim, link, b"@253CP1!ON;FF") == b"@253ACKON;FF"
    assert talk(sim, link, b"@253PR1?;FF") == b"@253ACKWAIT;FF"  # cold cathode igniting
    assert talk(sim, link, b"@253T1?;FF") == b"@253ACKW;FF"
    clock.advance(5.1)
    assert re.fullmatch(rb"@253ACK" + NUMBER + rb";FF", talk(sim, link, b"@253PR1?;FF"))
    assert talk(sim, link, b"@253T1?;FF") == b"@253ACKG;FF"


def test_identity_commands(sim: MKS937BSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"@253SN?;FF") == b"@253ACK937B12345;FF"
    assert talk(sim, link, b"@253MT?;FF") == b"@253ACKCC,PR,CC,PR,CM,NC;FF"
    assert talk(sim, link, b"@253AD?;FF") == b"@253ACK253;FF"
    sim.refuse_identity = True
    assert talk(sim, link, b"@253SN?;FF") == b"@253NAK160;FF"
    assert talk(sim, link, b"@253MT?;FF") == b"@253NAK160;FF"
    assert talk(sim, link, b"@253U?;FF") == b"@253ACKTORR;FF"


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        (b"@253XYZ?;FF", b"@253NAK160;FF"),  # unknown command
        (b"@253pr1?;FF", b"@253NAK160;FF"),  # command letters are case-sensitive
        (b"@253PR7?;FF", b"@253NAK163;FF"),  # channel outside 1..6
        (b"@253PR?;FF", b"@253NAK163;FF"),
        (b"@253U1?;FF", b"@253NAK163;FF"),
        (b"@253U!INCH;FF", b"@253NAK169;FF"),
        (b"@253CP1!MAYBE;FF", b"@253NAK169;FF"),
        (b"@253PR1!5;FF", b"@253NAK175;FF"),  # set on a read-only command
        (b"@253PR1;FF", b"@253NAK175;FF"),  # neither ? nor !
        (b"@253T2?;FF", b"@253NAK152;FF"),  # a Pirani is not an ion gauge
        (b"@253CP6!ON;FF", b"@253NAK151;FF"),  # nothing connected on C2
    ],
)
def test_nak_codes(sim: MKS937BSimulator, link: MemoryLink, request_: bytes, reply: bytes) -> None:
    assert talk(sim, link, request_) == reply


# ------------------------------------------------------------------------ statuses


def test_ranges_decide_the_status_strings(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.set_pressure(1, 1e-12)  # cold cathode below range
    sim.set_pressure(2, 1e-6)  # Pirani below range
    sim.set_pressure(3, 1.0)  # cold cathode above its protection pressure
    sim.set_pressure(4, 2000.0)  # Pirani above atmosphere
    sim.set_pressure(5, 1e-4)  # capacitance manometer below range
    assert talk(sim, link, b"@253PRZ?;FF") == b"@253ACKLO<E-11 LO<E-04 PROT_OFF ATM LO<E-03 NOGAUGE;FF"


def test_forced_status_strings_and_no_gauge_spelling(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.set_status(1, "MISCONN")
    sim.set_status(3, "RP_OFF")
    sim.no_gauge_spelling = "NO_GAUGE"
    assert talk(sim, link, b"@253PR1?;FF") == b"@253ACKMISCONN;FF"
    assert talk(sim, link, b"@253T3?;FF") == b"@253ACKR;FF"
    assert talk(sim, link, b"@253PR6?;FF") == b"@253ACKNO_GAUGE;FF"
    sim.set_status(1, None)
    assert re.fullmatch(rb"@253ACK" + NUMBER + rb";FF", talk(sim, link, b"@253PR1?;FF"))
    with pytest.raises(ValueError):
        sim.set_status(1, "TWO WORDS")


def test_pump_down_evolves_and_source_drives(sim: MKS937BSimulator, link: MemoryLink, clock: FakeClock) -> None:
    first = talk(sim, link, b"@253PR1?;FF")
    clock.advance(60)
    assert talk(sim, link, b"@253PR1?;FF") != first
    sim.set_pressure_source(1, lambda: 4e-8 * 1.33322368)
    assert talk(sim, link, b"@253PR1?;FF") == b"@253ACK4.00E-8;FF"


# ------------------------------------------------------------------------ faults


@pytest.mark.parametrize(("knob", "faulty_reply"), [("silent", b""), ("unterminated", b"@253ACKTORR")])
def test_knob_spoils_replies_until_switched_off(
        sim: MKS937BSimulator, link: MemoryLink, knob: str, faulty_reply: bytes) -> None:
    setattr(sim, knob, True)
    assert talk(sim, link, b"@253U?;FF") == faulty_reply
    setattr(sim, knob, False)
    assert talk(sim, link, b"@253U?;FF") == b"@253ACKTORR;FF"


def test_truncated_replies(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.truncate = 3
    sim.truncate_replies = 1
    assert talk(sim, link, b"@253U?;FF") == b"3ACKTORR;FF"
    assert talk(sim, link, b"@253U?;FF") == b"@253ACKTORR;FF"
    sim.truncate_replies = None  # RSD off: every reply
    assert talk(sim, link, b"@253U?;FF") == b"3ACKTORR;FF"
    assert talk(sim, link, b"@253AD?;FF") == b"3ACK253;FF"


def test_echo_of_every_request(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.echo = True
    assert talk(sim, link, b"@253U?;FF") == b"@253U?;FF@253ACKTORR;FF"
    assert talk(sim, link, b"@001U?;FF") == b"@001U?;FF"  # the adapter echoes what it sends


def test_garbage_once_and_at_connect(sim: MKS937BSimulator, clock: FakeClock) -> None:
    sim.garbage_at_connect = b"\xff\x00"
    link = attach(sim, clock)
    assert link.take() == b"\xff\x00"
    sim.garbage = b"\x80@2"
    assert talk(sim, link, b"@253U?;FF") == b"\x80@2@253ACKTORR;FF"
    assert talk(sim, link, b"@253U?;FF") == b"@253ACKTORR;FF"


def test_nak_all_and_bare_nak(sim: MKS937BSimulator, link: MemoryLink) -> None:
    sim.nak_all = 160
    assert talk(sim, link, b"@253U?;FF") == b"@253NAK160;FF"
    sim.bare_nak = True
    assert talk(sim, link, b"@253U?;FF") == b"@253NAK;FF"
    sim.nak_all = None
    assert talk(sim, link, b"@253PR9?;FF") == b"@253NAK;FF"


def test_slow_and_split_replies(sim: MKS937BSimulator, clock: FakeClock) -> None:
    link = attach(sim, clock)
    sim.reply_delay = 0.5
    sim.split_replies = True
    sim.received(b"@253U?;FF")
    assert link.take() == b""
    for _ in range(40):
        clock.advance(0.02)
        link.pump()
    assert link.output == b"@253ACKTORR;FF"
    assert len(link.writes) > 3


def test_log_records_the_conversation(sim: MKS937BSimulator, link: MemoryLink) -> None:
    talk(sim, link, b"@253U?;FF")
    assert sim.log == [("rx", b"@253U?;FF"), ("tx", b"@253ACKTORR;FF")]
    assert sim.sent() == b"@253ACKTORR;FF"


# ------------------------------------------------------------------------ helpers and construction


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [(1.1e-9, 3, "1.10E-9"), (760.2, 4, "7.602E+2"), (9.996e-5, 3, "1.00E-4"), (1.0, 3, "1.00E+0"),
     (0.0, 3, "0.00E+0")],
)
def test_format_pressure(value: float, digits: int, text: str) -> None:
    assert format_pressure(value, digits) == text


def test_parse_unit() -> None:
    assert parse_unit("pa") == "PASCAL"
    assert parse_unit("Torr") == "TORR"
    with pytest.raises(ValueError):
        parse_unit("inch")


@pytest.mark.parametrize(
    "kwargs",
    [{"address": 0}, {"address": 254}, {"gauges": ["CC"] * 5}, {"gauges": ["CC", "XX", "PR", "PR", "CM", "NC"]},
     {"unit": "bar"}],
)
def test_bad_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MKS937BSimulator(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ `simulate mks_937b`


def test_cli_serves_two_controllers_on_one_tcp_line_until_sigterm() -> None:
    with simulator_command("mks_937b", "--tcp", "127.0.0.1:0", "--address", "1", "--address", "2",
                           "--unit", "mbar", "--status", "2=WAIT", "--seed", "1",
                           stop=signal.SIGTERM, timeout=10) as cli:
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", cli.where), cli.where
        port = serial.serial_for_url(cli.where, timeout=5.0)
        port.write(b"@002U?;FF")
        assert port.read_until(b";FF") == b"@002ACKMBAR;FF"
        port.write(b"@001PR2?;FF")
        assert port.read_until(b";FF") == b"@001ACKWAIT;FF"
        port.write(b"@003PR1?;FF@001AD?;FF")  # nobody at 3: only unit 1 answers
        assert port.read_until(b";FF") == b"@001ACK001;FF"
        port.close()
    assert cli.process.stdout is not None and cli.process.stdout.read() == ""


def test_cli_serves_a_pty_until_sigint() -> None:
    with simulator_command("mks_937b", "--pty", "--echo", timeout=10) as cli:
        assert cli.where.startswith("/dev/")
        port = serial.Serial(cli.where, timeout=5.0)
        port.write(b"@253SN?;FF")
        assert port.read_until(b";FF") == b"@253SN?;FF"  # the echo first
        assert port.read_until(b";FF") == b"@253ACK937B12345;FF"
        port.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--pty", "--tcp", "127.0.0.1:0"],
        ["--tcp", "nonsense"],
        ["--address", "254"],
        ["--address", "3", "--address", "3"],
        ["--status", "7=OFF"],
        ["--status", "1=TWO WORDS"],
        ["--gauges", "CC,PR"],
        ["--gauges", "CC,PR,CC,PR,CM,XX"],
        ["--unit", "bar"],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output

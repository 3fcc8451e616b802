"""The SCPI power-supply simulator as a pure state machine: bytes in, exact bytes out.

These pin what the scpi_psu and scpi drivers are tested against (docs/protocols.md section 7), so a
change here is a change of the simulated instrument, not a refactor.
"""

from __future__ import annotations

import pytest

from simulators.instruments.scpi_psu import MODELS, ScpiPsuSimulator
from simulators.serving import MemoryLink
from tests.helpers.clock import FakeClock
from tests.helpers.memory_link import attach


def connect(dialect: str = "keysight", model: str | None = None) -> tuple[ScpiPsuSimulator, MemoryLink, FakeClock]:
    clock = FakeClock()
    sim = ScpiPsuSimulator(dialect, model, seed=1, clock=clock)
    sim.noise = 0.0
    return sim, attach(sim, clock), clock


def talk(sim: ScpiPsuSimulator, link: MemoryLink, text: str) -> bytes:
    sim.received(text.encode("ascii"))
    return link.take()


@pytest.fixture
def keysight() -> tuple[ScpiPsuSimulator, MemoryLink]:
    sim, link, _ = connect("keysight")
    return sim, link


@pytest.fixture
def rigol() -> tuple[ScpiPsuSimulator, MemoryLink]:
    sim, link, _ = connect("rigol")
    return sim, link


# ------------------------------------------------------------------ common


@pytest.mark.parametrize(("dialect", "idn"), [
    ("keysight", b"Keysight Technologies,E36312A,MY59000001,2.1.0-1.0.4-1.12\n"),
    ("rigol", b"RIGOL TECHNOLOGIES,DP832,DP8C190000001,00.01.14\n"),
])
def test_identity(dialect: str, idn: bytes) -> None:
    sim, link, _ = connect(dialect)
    assert talk(sim, link, "*IDN?\n") == idn


def test_error_queue_formats_differ_by_dialect() -> None:
    k, klink, _ = connect("keysight")
    r, rlink, _ = connect("rigol")
    assert talk(k, klink, "SYST:ERR?\n") == b'+0,"No error"\n'
    assert talk(r, rlink, "SYST:ERR?\n") == b'0,"No error"\n'
    assert talk(k, klink, "FOO?\nSYST:ERR?\nSYST:ERR?\n") == b'-113,"Undefined header"\n+0,"No error"\n'


def test_split_input_crlf_and_long_forms(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = keysight
    sim.set_voltage(1, 5.0)
    sim.received(b"sour")
    sim.received(b"ce:Volt:LEV:IMM:AMPL? (@")
    assert link.take() == b""
    sim.received(b"1)\r\n")
    assert link.take() == b"+5.00000000E+00\n"
    assert talk(sim, link, ":MEASure:SCALar:VOLTage:DC? (@1)\n") == b"+0.00000000E+00\n"
    assert talk(sim, link, "SYSTem:ERRor:NEXT?\n") == b'+0,"No error"\n'


def test_misspelt_node_is_undefined_header(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = keysight
    assert talk(sim, link, "MEASU:VOLT? (@1)\n") == b""
    assert sim.errors == [(-113, "Undefined header")]


def test_compound_commands_reply_on_one_line(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = keysight
    assert talk(sim, link, "VOLT 2.5,(@2);OUTP ON,(@2);VOLT? (@2);OUTP? (@2)\n") == b"+2.50000000E+00;1\n"


def test_rst_cls_opc_esr(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = keysight
    sim.set_voltage(1, 5.0)
    sim.set_output(1, True)
    assert talk(sim, link, "*RST\n") == b""
    assert sim.setpoints(1) == (0.0, 5.0, False)
    talk(sim, link, "NOPE\nVOLT 99,(@1)\n")
    assert talk(sim, link, "*ESR?\n") == b"+48\n"  # command error (32) + execution error (16)
    assert talk(sim, link, "*ESR?\n") == b"+0\n"
    assert len(sim.errors) == 2
    assert talk(sim, link, "*CLS\n*OPC?\n") == b"1\n"
    assert sim.errors == []


# ------------------------------------------------------------------ Keysight dialect


def test_keysight_channel_lists(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = keysight
    for n, volts in ((1, 1.5), (2, 12.0), (3, 20.0)):
        sim.set_voltage(n, volts)
    assert talk(sim, link, "VOLT? (@1,3)\n") == b"+1.50000000E+00,+2.00000000E+01\n"
    assert talk(sim, link, "VOLT? (@1:3)\n") == b"+1.50000000E+00,+1.20000000E+01,+2.00000000E+01\n"
    assert talk(sim, link, "VOLT?\n") == b"+1.50000000E+00\n"  # the selected channel
    talk(sim, link, "INST:NSEL 2\n")
    assert talk(sim, link, "VOLT?\nINST:NSEL?\n") == b"+1.20000000E+01\n+2\n"


def test_keysight_settings_and_measurements(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = keysight
    talk(sim, link, "VOLT 5,(@1)\nCURR 0.25,(@1)\nOUTP 1,(@1)\n")
    assert sim.setpoints(1) == (5.0, 0.25, True)
    assert talk(sim, link, "OUTP? (@1)\nOUTP? (@2)\n") == b"1\n0\n"
    # 5 V into the default 10 ohm would be 0.5 A: the 0.25 A limit holds (CC), 2.5 V
    assert talk(sim, link, "MEAS:VOLT? (@1)\nMEAS:CURR? (@1)\n") == b"+2.50000000E+00\n+2.50000000E-01\n"
    assert sim.mode(1) == "CC"
    assert talk(sim, link, "VOLT MAX,(@1)\nVOLT? (@1)\n") == b"+6.00000000E+00\n"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("MEAS:VOLT? (@4)", (-222, "Data out of range")),
        ("VOLT 7,(@1)", (-222, "Data out of range")),
        ("VOLT abc,(@1)", (-104, "Data type error")),
        ("VOLT", (-109, "Missing parameter")),
        ("MEAS:VOLT? CH1", (-104, "Data type error")),  # Rigol syntax
        (":SOUR1:VOLT?", (-113, "Undefined header")),  # Rigol syntax
        ("OUTP:CVCC? (@1)", (-113, "Undefined header")),  # Rigol only
    ],
)
def test_keysight_refusals_say_nothing_and_queue_an_error(
        keysight: tuple[ScpiPsuSimulator, MemoryLink], line: str, error: tuple[int, str]) -> None:
    sim, link = keysight
    assert talk(sim, link, line + "\n") == b""
    assert sim.errors == [error]


# ------------------------------------------------------------------ Rigol dialect


def test_rigol_queries_and_formats(rigol: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = rigol
    sim.set_voltage(2, 12.0)
    sim.set_current(2, 1.5)
    sim.set_output(2, True)
    sim.set_load(2, 24.0)
    assert talk(sim, link, ":MEAS:VOLT? CH2\n:MEAS:CURR? CH2\n") == b"12.000\n0.5000\n"
    assert talk(sim, link, ":SOUR2:VOLT?\n:SOURce2:CURRent?\n") == b"12.000\n1.5000\n"
    assert talk(sim, link, ":OUTP? CH2\n:OUTP? CH1\n") == b"ON\nOFF\n"
    assert talk(sim, link, ":MEAS:ALL? CH2\n") == b"12.000,0.5000,6.000\n"
    assert talk(sim, link, ":OUTP:CVCC? CH2\n") == b"CV\n"
    sim.set_load(2, 1.0)
    assert talk(sim, link, ":OUTP:CVCC? CH2\n:MEAS:VOLT? CH2\n") == b"CC\n1.500\n"


def test_rigol_settings_and_selection(rigol: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = rigol
    talk(sim, link, ":APPL CH3,3.3,0.5\n:OUTP CH3,ON\n:SOUR1:VOLT 7.5\n")
    assert sim.setpoints(3) == (3.3, 0.5, True)
    assert sim.setpoints(1)[0] == 7.5
    talk(sim, link, ":INST CH3\n")
    assert talk(sim, link, ":INST?\n:VOLT?\n:MEAS:CURR?\n") == b"CH3\n3.300\n0.3300\n"
    talk(sim, link, ":OUTP OFF\n")
    assert sim.setpoints(3)[2] is False


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (":MEAS:VOLT? (@1)", (-104, "Data type error")),  # Keysight syntax
        (":MEAS:VOLT? CH4", (-222, "Data out of range")),
        (":SOUR4:VOLT?", (-222, "Data out of range")),
        (":SOUR1:VOLT 31", (-222, "Data out of range")),
        (":OUTP CH1,MAYBE", (-104, "Data type error")),
    ],
)
def test_rigol_refusals(rigol: tuple[ScpiPsuSimulator, MemoryLink], line: str, error: tuple[int, str]) -> None:
    sim, link = rigol
    assert talk(sim, link, line + "\n") == b""
    assert sim.errors == [error]


# ------------------------------------------------------------------ faults


def test_queue_overflow_replaces_the_newest_entry(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, _ = keysight
    for n in range(25):
        sim.push_error(-222, f"e{n}")
    errors = sim.errors
    assert len(errors) == 20
    assert errors[:19] == [(-222, f"e{n}") for n in range(19)]
    assert errors[19] == (-350, "Queue overflow")


def test_silent_says_nothing() -> None:
    sim, link, _ = connect()
    sim.silent = True
    assert talk(sim, link, "*IDN?\n") == b""
    sim.silent = False
    assert talk(sim, link, "*OPC?\n") == b"1\n"


def test_first_reply_after_connect_is_late() -> None:
    sim, link, clock = connect()
    sim.first_reply_delay = 5.0
    link = attach(sim, clock)
    assert talk(sim, link, "*IDN?\n*OPC?\n") == b""
    clock.now += 5.0
    link.pump()
    assert link.take().endswith(b"\n1\n"), "order kept: the second reply waited behind the first"
    assert talk(sim, link, "*OPC?\n") == b"1\n"


def test_drop_next_closes_the_link() -> None:
    sim, link, _ = connect()
    sim.drop_next = True
    assert talk(sim, link, "*IDN?\n") == b""
    assert link.closed
    assert sim.drop_next is False


def test_commands_too_soon_after_a_reply_are_lost() -> None:
    sim, link, clock = connect()
    sim.min_command_gap = 0.05
    assert talk(sim, link, "*OPC?\n") == b"1\n"
    assert talk(sim, link, "*OPC?\n") == b""
    clock.now += 0.06
    assert talk(sim, link, "*OPC?\n") == b"1\n"


def test_garbage_before_the_next_reply_once() -> None:
    sim, link, _ = connect()
    sim.garbage = b"\xff#"
    assert talk(sim, link, "*OPC?\n*OPC?\n") == b"\xff#1\n1\n"


def test_noise_is_relative_and_seeded() -> None:
    a = ScpiPsuSimulator("keysight", seed=3)
    b = ScpiPsuSimulator("keysight", seed=3)
    for sim in (a, b):
        sim.set_voltage(1, 5.0)
        sim.set_output(1, True)
    la, lb = attach(a), attach(b)
    ra, rb = talk(a, la, "MEAS:VOLT? (@1)\n"), talk(b, lb, "MEAS:VOLT? (@1)\n")
    assert ra == rb != b"+5.00000000E+00\n"
    assert float(ra) == pytest.approx(5.0, rel=1e-3)


def test_front_panel_knobs_and_models() -> None:
    sim = ScpiPsuSimulator("rigol", "DP821")
    assert sim.channels == 2 and sim.model is MODELS["DP821"]
    sim.set_voltage(1, 10.0)
    sim.set_output(1, True)
    sim.set_load(1, None)
    assert (sim.mode(1), sim.measured(1)) == ("CV", (10.0, 0.0))
    with pytest.raises(ValueError, match="positive"):
        sim.set_load(1, 0)
    with pytest.raises(ValueError, match="speaks the keysight dialect"):
        ScpiPsuSimulator("rigol", "E36312A")
    with pytest.raises(ValueError, match="unknown dialect"):
        ScpiPsuSimulator("tdk")
    with pytest.raises(ValueError, match="channel 4 outside"):
        sim.set_voltage(4, 1.0)


def test_log_records_the_conversation(keysight: tuple[ScpiPsuSimulator, MemoryLink]) -> None:
    sim, link = keysight
    talk(sim, link, "*OPC?\n")
    assert sim.log == [("rx", b"*OPC?\n"), ("tx", b"1\n")]
    assert sim.received_commands() == ["*OPC?"]

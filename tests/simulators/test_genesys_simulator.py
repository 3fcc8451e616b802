"""The Genesys simulator as a pure state machine: bytes in, exact bytes out.

These pin the wire behaviour the genesys driver is tested against (docs/protocols.md section 7.3),
so a change here is a change of the simulated instrument, not a refactor.
"""

from __future__ import annotations

import re
import signal

import pytest
import serial

from simulators.instruments.genesys import GenesysSimulator, checksum, rating_of
from simulators.serving import MemoryLink
from simulators.serving.rs485 import SharedLine
from tests.helpers.cli import simulator_command
from tests.helpers.clock import FakeClock
from tests.helpers.memory_link import attach, talk


@pytest.fixture
def sim(clock: FakeClock) -> GenesysSimulator:
    sim = GenesysSimulator(6, "GEN60-25", seed=1, clock=clock)
    sim.noise = 0.0
    return sim


@pytest.fixture
def link(sim: GenesysSimulator, clock: FakeClock) -> MemoryLink:
    link = attach(sim, clock)
    assert talk(sim, link, b"ADR 6\r") == b"OK\r"
    return link


def program(sim: GenesysSimulator, link: MemoryLink, *commands: bytes) -> None:
    for command in commands:
        assert talk(sim, link, command + b"\r") == b"OK\r", command


# ------------------------------------------------------------------------ addressing and framing


def test_nothing_is_answered_before_adr(sim: GenesysSimulator, clock: FakeClock) -> None:
    link = attach(sim, clock)
    assert talk(sim, link, b"IDN?\r") == b""
    assert talk(sim, link, b"ADR 7\r") == b""  # another supply's address
    assert talk(sim, link, b"IDN?\r") == b""
    assert talk(sim, link, b"ADR 06\r") == b"OK\r"
    assert talk(sim, link, b"IDN?\r") == b"LAMBDA,GEN60-25\r"


def test_adr_of_another_supply_deselects_this_one(sim: GenesysSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"ADR 7\r") == b""
    assert talk(sim, link, b"MV?\r") == b""
    assert not sim.selected


def test_a_chain_answers_from_the_selected_supply_only(clock: FakeClock) -> None:
    six, seven = GenesysSimulator(6, "GEN60-25", clock=clock), GenesysSimulator(7, "GEN30-50", clock=clock)
    chain = SharedLine([six, seven])
    link = attach(chain, clock)
    assert talk(chain, link, b"ADR 7\rIDN?\r") == b"OK\rLAMBDA,GEN30-50\r"
    assert talk(chain, link, b"ADR 6\rIDN?\r") == b"OK\rLAMBDA,GEN60-25\r"
    assert talk(chain, link, b"ADR 9\rIDN?\r") == b""  # nobody at 9: silence
    assert not six.selected and not seven.selected


def test_identity_queries(sim: GenesysSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"IDN?\rREV?\rSN?\rDATE?\rMDAV?\r") == (
        b"LAMBDA,GEN60-25\rREV:1U:4.3\rS123456-01\r2024/03/14\r1\r")


def test_a_lone_cr_is_answered_ok_and_lf_is_ignored(sim: GenesysSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"\r") == b"OK\r"
    assert talk(sim, link, b"\nIDN?\r\n") == b"LAMBDA,GEN60-25\r"


def test_commands_split_across_reads_and_in_any_case(sim: GenesysSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"id") == b""
    assert talk(sim, link, b"n?") == b""
    assert talk(sim, link, b"\r") == b"LAMBDA,GEN60-25\r"
    assert talk(sim, link, b"out on\rout?\r") == b"OK\rON\r"


def test_checksum_is_checked_and_answered(sim: GenesysSimulator, link: MemoryLink) -> None:
    assert checksum("STT?") == "3A" and checksum("STAT?") == "7B"  # the manual's examples
    assert talk(sim, link, b"STAT?$7B\r") == b"04$" + checksum("04").encode() + b"\r"
    assert talk(sim, link, b"OUT?$37\r") == b"OFF$" + checksum("OFF").encode() + b"\r"
    assert talk(sim, link, b"STAT?$7C\r") == b"C04$" + checksum("C04").encode() + b"\r"
    assert talk(sim, link, b"OUT 1$" + checksum("OUT 1").encode() + b"\r") == b"OK$9A\r"


# ------------------------------------------------------------------------ settings and values


def test_pv_and_pc_answer_the_text_they_were_sent_with(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 012.00", b"PC 2.5")
    assert talk(sim, link, b"PV?\rPC?\r") == b"012.00\r2.5\r"


def test_cv_then_cc_with_a_load(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"OUT ON")
    assert talk(sim, link, b"MV?\rMC?\rMODE?\r") == b"12.000\r1.2000\rCV\r"
    sim.set_load(2.0)
    assert talk(sim, link, b"MV?\rMC?\rMODE?\r") == b"5.000\r2.5000\rCC\r"
    assert talk(sim, link, b"STT?\r") == b"MV(5.000),PV(12),MC(2.5000),PC(2.5),SR(06),FR(00)\r"
    assert talk(sim, link, b"DVC?\r") == b"5.000,12.000,2.5000,2.5000,66.000,0.000\r"
    program(sim, link, b"OUT OFF")
    assert talk(sim, link, b"MODE?\rMV?\rSTAT?\r") == b"OFF\r0.000\r04\r"


def test_errors_of_commands_and_of_execution(sim: GenesysSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, b"VOLT?\r") == b"C01\r"
    assert talk(sim, link, b"PV\r") == b"C02\r"
    assert talk(sim, link, b"PV twelve\r") == b"C03\r"
    assert talk(sim, link, b"MV? 3\r") == b"C03\r"
    assert talk(sim, link, b"PC 30\r") == b"C05\r"  # above 105 % of 25 A
    assert talk(sim, link, b"PV 64\r") == b"E01\r"  # above 105 % of 60 V
    program(sim, link, b"PV 10", b"OVP 20")
    assert talk(sim, link, b"PV 19.5\r") == b"E01\r"  # above 95 % of the OVP
    assert talk(sim, link, b"OVP 10\r") == b"E04\r"  # below the output voltage + 5 %
    assert talk(sim, link, b"UVL 9.9\r") == b"E06\r"  # above 95 % of the output voltage
    program(sim, link, b"UVL 5")
    assert talk(sim, link, b"PV 5\r") == b"E02\r"  # below the UVL
    assert talk(sim, link, b"PV?\rOVP?\rUVL?\r") == b"10\r20\r5\r"


def test_rst_brings_the_safe_state(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 3", b"OUT 1", b"FLD ON", b"AST ON", b"RMT LLO", b"RST")
    assert talk(sim, link, b"PV?\rPC?\rOUT?\rOVP?\rUVL?\rFLD?\rAST?\rRMT?\r") == (
        b"0.000\r0.0000\rOFF\r66.000\r0.000\rOFF\rOFF\rREM\r")


# ------------------------------------------------------------------------ registers and faults


def test_ovp_trip_and_its_registers(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"OUT ON")
    assert talk(sim, link, b"STAT?\rFLT?\r") == b"05\r00\r"
    sim.trip_ovp()
    assert talk(sim, link, b"FLT?\rSTAT?\rMODE?\rOUT?\r") == b"10\r08\rOFF\rOFF\r"
    program(sim, link, b"OUT ON")  # clears the trip
    assert talk(sim, link, b"FLT?\rMODE?\r") == b"00\rCV\r"


def test_ac_fail_refuses_out_on_until_it_clears(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"OUT ON")
    sim.set_fault("AC", True)
    assert talk(sim, link, b"FLT?\rMODE?\rOUT ON\r") == b"02\rOFF\rE07\r"
    sim.set_fault("AC", False)
    assert talk(sim, link, b"FLT?\rOUT?\r") == b"00\rOFF\r"  # safe start: stays off


def test_ac_fail_with_auto_restart_comes_back_on(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"AST ON", b"OUT ON")
    sim.set_fault("AC", True)
    assert talk(sim, link, b"MODE?\rSTAT?\r") == b"OFF\r18\r"  # FLT and AST (NFLT clear)
    sim.set_fault("AC", False)
    assert talk(sim, link, b"MODE?\r") == b"CV\r"


def test_foldback_trips_when_the_output_goes_cc(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"FLD ON", b"OUT ON")
    assert talk(sim, link, b"MODE?\rSTAT?\r") == b"CV\r25\r"  # CV, NFLT, FDE
    sim.set_load(1.0)
    assert talk(sim, link, b"FLT?\rMODE?\r") == b"08\rOFF\r"


def test_enabled_faults_latch_and_send_a_service_request(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"OUT ON", b"FENA 12")  # AC and OVP
    assert talk(sim, link, b"FENA?\rFEVE?\r") == b"12\r00\r"
    sim.trip_ovp()
    assert link.take() == b"!06\r"  # unsolicited
    sim.set_fault("OTP", True)  # not enabled: no event
    assert link.take() == b""
    assert talk(sim, link, b"FEVE?\rFEVE?\r") == b"10\r00\r"  # reading clears it
    sim.set_fault("OTP", False)
    sim.set_fault("AC", True)
    assert link.take() == b"!06\r"
    program(sim, link, b"CLS")
    assert talk(sim, link, b"FEVE?\r") == b"00\r"


def test_status_events_and_multidrop_srq_byte(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"SENA 03")  # CV and CC
    sim.received(bytes([0xA1]))  # the global byte: multi-drop mode on
    assert sim.multidrop
    assert talk(sim, link, b"OUT ON\r") == b"\x86OK\r"  # the SRQ byte as the event happens, then the OK
    assert talk(sim, link, b"SEVE?\r") == b"01\r"
    sim.received(bytes([0xA0]))
    assert not sim.multidrop


def test_disconnect_byte_deselects_and_answers_ok(sim: GenesysSimulator, link: MemoryLink) -> None:
    assert talk(sim, link, bytes([0xBF])) == b"OK\r"
    assert talk(sim, link, b"IDN?\r") == b""


def test_power_cycle_forgets_the_selection(sim: GenesysSimulator, link: MemoryLink) -> None:
    program(sim, link, b"PV 12", b"PC 2.5", b"OUT ON")
    sim.power_cycle()
    assert talk(sim, link, b"MODE?\r") == b""
    assert talk(sim, link, b"ADR 6\rMODE?\rPV?\r") == b"OK\rOFF\r12\r"


# ------------------------------------------------------------------------ fault knobs


def test_missing_ok(sim: GenesysSimulator, link: MemoryLink) -> None:
    sim.missing_ok = True
    assert talk(sim, link, b"PV 12\rADR 6\rPV?\r") == b"12\r"


def test_refused_command(sim: GenesysSimulator, link: MemoryLink) -> None:
    sim.refuse = {"MODE?": "C01", "PV": "E01"}
    assert talk(sim, link, b"MODE?\rPV 1\rOUT?\r") == b"C01\rE01\rOFF\r"


def test_srq_byte_inside_every_reply(sim: GenesysSimulator, link: MemoryLink) -> None:
    sim.srq_in_replies = True
    assert talk(sim, link, b"IDN?\r") == b"LAMBDA,G\x86EN60-25\r"


def test_silent_and_garbage(sim: GenesysSimulator, link: MemoryLink) -> None:
    sim.garbage = b"\xff"
    assert talk(sim, link, b"OUT?\r") == b"\xffOFF\r"
    sim.silent = True
    assert talk(sim, link, b"OUT?\r") == b""


def test_models_and_addresses() -> None:
    assert rating_of("GEN60-25") == rating_of("gen60-25")
    assert (rating_of("GEN12.5-60").volts, rating_of("GEN12.5-60").amps) == (12.5, 60.0)
    with pytest.raises(ValueError):
        rating_of("DP832")
    with pytest.raises(ValueError):
        GenesysSimulator(31)


# ------------------------------------------------------------------------ the command


def test_cli_serves_two_supplies_on_one_tcp_chain_until_sigterm() -> None:
    with simulator_command("genesys", "--tcp", "127.0.0.1:0", "--address", "6", "--address", "7",
                           "--set", "12,2.5,on", "--refuse", "mode?=C01", "--fault", "otp", "--seed", "1",
                           stop=signal.SIGTERM, timeout=10) as cli:
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", cli.where), cli.where
        port = serial.serial_for_url(cli.where, timeout=5.0)
        port.write(b"ADR 7\rFLT?\rMODE?\r")
        assert port.read_until(b"\r") + port.read_until(b"\r") + port.read_until(b"\r") == b"OK\r04\rC01\r"
        port.write(b"ADR 9\rIDN?\rADR 6\rPV?\r")  # nobody at 9: only supply 6 answers, after its ADR
        assert port.read_until(b"\r") + port.read_until(b"\r") == b"OK\r12.000\r"
        port.close()


def test_cli_serves_a_pty_until_sigint() -> None:
    with simulator_command("genesys", "--pty", "--multidrop", "--load", "open", timeout=10) as cli:
        assert cli.where.startswith("/dev/pts/"), cli.where
        port = serial.serial_for_url(cli.where, timeout=5.0)
        port.write(b"ADR 6\rIDN?\r")
        assert port.read_until(b"\r") + port.read_until(b"\r") == b"OK\rLAMBDA,GEN60-25\r"
        port.close()

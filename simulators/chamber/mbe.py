"""A whole simulated MBE chamber: every instrument simulator, coupled by the chamber model.

Two gauge controllers see the chamber pressure, a pyrometer sees the substrate, a Eurotherm
3504 runs two effusion cells (its output heats them, their temperature is its PV), and a
supply powers the substrate heater (its V x I heats the substrate): a SCPI supply on its LAN
port by default, or with ``heater_supply="genesys"`` a TDK-Lambda Genesys speaking its GEN
language through a serial device server. All listen on TCP (LAN controllers, serial device
servers, a Modbus gateway), so a bridge in another process reaches them with the configs
:meth:`SimulatedChamber.instrument_configs` writes.

Recipe steps (what an operator or the demo does) are methods: ``set_heater_voltage``,
``set_cell_setpoint``, ``set_shutter``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal, Self

from simulators.chamber.model import ChamberModel
from simulators.instruments.eurotherm import EurothermSimulator
from simulators.instruments.genesys import GenesysSimulator
from simulators.instruments.impac import ImpacSimulator
from simulators.instruments.mks_937b import MKS937BSimulator
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.instruments.scpi_psu import ScpiPsuSimulator
from simulators.serving.modbus_server import DeviceServer
from simulators.serving.tcp import TcpServer

#: effusion cells on the Eurotherm 3504's two loops
CELLS = ("ga", "al")
#: substrate heater: a resistive element on supply channel 1, ohms
HEATER_OHMS = 4.0
#: how often instrument outputs (heater power, cell output %) are fed to the model, in s
COUPLING_PERIOD = 0.05
IDLE_CELL_C = 200.0
#: the supplies that can heat the substrate
HEATER_SUPPLIES = ("scpi_psu", "genesys")
HeaterSupply = Literal["scpi_psu", "genesys"]
#: the Genesys heater supply's address on its chain, and its model (60 V, 25 A)
GENESYS_ADDRESS = 6
GENESYS_MODEL = "GEN60-25"


class SimulatedChamber:
    def __init__(self, host: str = "127.0.0.1", seed: int | None = None,
                 heater_supply: HeaterSupply = "scpi_psu") -> None:
        if heater_supply not in HEATER_SUPPLIES:
            raise ValueError(f"unknown heater supply {heater_supply!r}; expected one of {', '.join(HEATER_SUPPLIES)}")
        self.host = host
        self.heater_supply = heater_supply
        # 1e-8 mbar: inside the range of every simulated gauge head, so all of them read.
        self.model = ChamberModel(base_mbar=1e-8, seed=seed)
        for name in CELLS:
            self.model.add_cell(name)

        self.tpg = TPGSimulator("TPG362", seed=seed)
        self.mks = MKS937BSimulator(address=253, unit="MBAR", seed=seed)
        for channel in (1, 2):
            self.tpg.set_pressure_source(channel, self.model.pressure_mbar)
        self.mks.set_pressure_source(1, self.model.pressure_mbar)
        self.pyrometer = ImpacSimulator(address=0, model="IGA 12", seed=seed)
        self.pyrometer.set_temperature_source(self.model.substrate_temperature)
        self.cells = EurothermSimulator("3500", unit=1, setpoint=IDLE_CELL_C, seed=seed)
        for loop, name in enumerate(CELLS, start=1):
            self.cells.set_pv_source(self._cell_temperature(name), loop)
        self.psu: ScpiPsuSimulator | GenesysSimulator
        if heater_supply == "genesys":
            self.psu = GenesysSimulator(GENESYS_ADDRESS, GENESYS_MODEL, seed=seed)
            self.psu.set_load(HEATER_OHMS)
            self.psu.set_current(5.0)
            self.psu.set_voltage(0.0)
            self.psu.set_output(True)
        else:
            self.psu = ScpiPsuSimulator("keysight", seed=seed)
            self.psu.set_load(1, HEATER_OHMS)
            self.psu.set_current(1, 5.0)
            self.psu.set_voltage(1, 0.0)
            self.psu.set_output(1, True)

        self._byte_servers = {
            "main_gauge": TcpServer(lambda: self.tpg, host),
            "ion_gauge": TcpServer(lambda: self.mks, host),
            "pyrometer": TcpServer(lambda: self.pyrometer, host),
            "heater_psu": TcpServer(lambda: self.psu, host),
        }
        self._modbus = DeviceServer(self.cells, host=host)
        self._stop = threading.Event()
        self._coupling: threading.Thread | None = None

    def _cell_temperature(self, name: str) -> Callable[[], float]:
        return lambda: self.model.cell_temperature(name)

    # ---------------------------------------------------------- life

    def start(self) -> Self:
        for server in self._byte_servers.values():
            server.start()
        self._modbus.start()
        self._stop.clear()
        self._coupling = threading.Thread(target=self._couple, name="chamber-coupling", daemon=True)
        self._coupling.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._coupling is not None:
            self._coupling.join(timeout=2)
        for server in self._byte_servers.values():
            server.stop()
        self._modbus.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _couple(self) -> None:
        """Feed the instruments' outputs into the model (the model never calls back into them)."""
        while not self._stop.wait(COUPLING_PERIOD):
            volts, amps = self.psu.measured() if isinstance(self.psu, GenesysSimulator) else self.psu.measured(1)
            self.model.set_heater_power(volts * amps)
            for loop, name in enumerate(CELLS, start=1):
                self.model.set_cell_output(name, self.cells.output_power(loop))

    # ---------------------------------------------------------- recipe steps

    def set_heater_voltage(self, volts: float) -> None:
        if isinstance(self.psu, GenesysSimulator):
            self.psu.set_voltage(volts)
        else:
            self.psu.set_voltage(1, volts)

    def set_cell_setpoint(self, cell: str, celsius: float) -> None:
        self.cells.set_setpoint(celsius, CELLS.index(cell) + 1)

    def set_shutter(self, cell: str, open_: bool) -> None:
        self.model.set_shutter(cell, open_)

    # ---------------------------------------------------------- where things listen

    def endpoints(self) -> dict[str, str]:
        """Instrument name -> where a host connects."""
        where = {name: server.url for name, server in self._byte_servers.items()}
        if self.heater_supply == "scpi_psu":
            psu_port = self._byte_servers["heater_psu"].port
            where["heater_psu"] = f"TCPIP::{self.host}::{psu_port}::SOCKET"
        where["cells"] = self._modbus.host_port
        return where

    def instrument_configs(self) -> list[dict[str, Any]]:
        """``bridge.instruments`` entries that read every simulated instrument."""
        where = self.endpoints()
        modbus_host, _, modbus_port = where["cells"].rpartition(":")
        serial = {"kind": "serial", "timeout": 1.0}
        return [
            {"name": "main_gauge", "driver": "pfeiffer_tpg", "interval": 0.5,
             "transport": {**serial, "port": where["main_gauge"]}, "options": {"channels": [1, 2]}},
            {"name": "ion_gauge", "driver": "mks_937b", "interval": 1.0,
             "transport": {**serial, "port": where["ion_gauge"]}, "options": {"address": 253, "channels": [1]}},
            {"name": "pyrometer", "driver": "impac", "interval": 0.5,
             "transport": {**serial, "port": where["pyrometer"], "baudrate": 19200, "parity": "E"},
             "options": {"address": 0, "emissivity": True}},
            *({"name": f"cell_{name}", "driver": "eurotherm", "interval": 1.0,
               "transport": {"kind": "modbus_tcp", "host": modbus_host, "port": int(modbus_port), "unit": 1},
               "options": {"family": "3500", "loop": loop}}
              for loop, name in enumerate(CELLS, start=1)),
            self._heater_config(where["heater_psu"]),
        ]

    def _heater_config(self, where: str) -> dict[str, Any]:
        if self.heater_supply == "genesys":
            return {"name": "heater_psu", "driver": "genesys", "interval": 1.0,
                    "transport": {"kind": "serial", "port": where, "timeout": 1.0},
                    "options": {"address": GENESYS_ADDRESS, "poll": "combined"}}
        return {"name": "heater_psu", "driver": "scpi_psu", "interval": 1.0,
                "transport": {"kind": "visa", "resource": where},
                "options": {"dialect": "keysight", "channels": [1]}}

    def config(self, site: str = "sim-chamber") -> dict[str, Any]:
        """A complete, ready config for a bridge reading this chamber."""
        return {
            "site": site,
            "mqtt": {"host": "127.0.0.1", "port": 1883},
            "bridge": {"state_dir": "./state/bridge", "instruments": self.instrument_configs()},
            "uploader": {"state_dir": "./state/uploader", "sink": {"kind": "local", "path": "./runs"}},
        }

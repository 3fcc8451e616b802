"""Run the try-out bridge of docker-compose.yml on the simulated chamber's instruments.

``chamber-bridge simulate chamber --write-config FILE`` writes a config whose instruments point
at the ports its simulators picked at start. This script waits until that file exists and every
simulator it names accepts connections (a file left by an earlier chamber container names dead
ports), takes the instruments from it and everything else (site, MQTT login, state dir) from the
base config, writes the merged config and replaces itself with ``chamber-bridge poll`` on it.

    python run-bridge.py BASE_CONFIG SIMULATED_CONFIG MERGED_CONFIG [--wait SECONDS] [--no-exec]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def endpoints(instruments: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """The TCP (host, port) of every simulated instrument: socket:// URLs, Modbus TCP, VISA sockets."""
    found = set()
    for instrument in instruments:
        transport = instrument.get("transport", {})
        if transport.get("kind") == "modbus_tcp":
            found.add((str(transport["host"]), int(transport.get("port", 502))))
            continue
        url = re.match(r"socket://([^:/]+):(\d+)", str(transport.get("port", "")))
        visa = re.match(r"TCPIP\d*::([^:]+)::(\d+)::SOCKET", str(transport.get("resource", "")), re.I)
        for match in (url, visa):
            if match:
                found.add((match[1], int(match[2])))
    return found


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def simulated_instruments(path: Path, wait: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + wait
    while True:
        try:
            instruments = list(yaml.safe_load(path.read_text())["bridge"]["instruments"])
        except (OSError, TypeError, KeyError, yaml.YAMLError):
            instruments = []
        if instruments and all(reachable(host, port) for host, port in endpoints(instruments)):
            return instruments
        if time.monotonic() > deadline:
            raise SystemExit(f"run-bridge: no reachable simulated chamber in {path} after {wait:g} s")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base", type=Path, help="site, mqtt and bridge.state_dir come from here")
    parser.add_argument("simulated", type=Path, help="written by chamber-bridge simulate chamber --write-config")
    parser.add_argument("merged", type=Path, help="the config written for chamber-bridge poll")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the simulated chamber")
    parser.add_argument("--no-exec", action="store_true", help="write the merged config and stop")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.base.read_text())
    config.setdefault("bridge", {})["instruments"] = simulated_instruments(args.simulated, args.wait)
    partial = args.merged.with_name(args.merged.name + ".tmp")
    partial.write_text(yaml.safe_dump(config, sort_keys=False))
    partial.replace(args.merged)
    print(f"run-bridge: {len(config['bridge']['instruments'])} simulated instruments -> {args.merged}", flush=True)
    if not args.no_exec:
        command = ["chamber-bridge", "poll", str(args.merged)]
        os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env bash
# The main job on embedded defaults: install into .venv, then `chamber-bridge demo`, the whole
# system on this machine (simulated MBE chamber, MQTT broker, bridge, uploader, local store)
# playing one growth run. Uses a private Mosquitto if one is installed, else the embedded
# pure-Python broker; nothing else is needed. Extra arguments go to `chamber-bridge demo`
# (--duration S, --store DIR, --mqtt HOST:PORT).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import ensurepip, venv' 2>/dev/null || {
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
  else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv; fi; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# chamber-bridge, and the simulators with the demo's extra (matplotlib for the plot, amqtt for
# the embedded broker): their own distribution, simulators/pyproject.toml
.venv/bin/python -m pip install -q -e . -e './simulators[demo]'
exec .venv/bin/chamber-bridge demo "$@"

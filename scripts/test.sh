#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 / Pi OS machine (Python 3.11),
# then runs lint, type checks and the default test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# The tests start private Mosquitto brokers; they need the binary, not a running service.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "installing mosquitto (Debian package)"
  apt_install mosquitto
fi
# row 19 of the fault matrix runs the services under libfaketime (Debian package faketime)
command -v faketime >/dev/null 2>&1 || apt_install faketime
# tests/system/test_deploy.py: systemd-analyze verify on the Pi's unit (Debian package systemd)
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The simulators are their own distribution (simulators/pyproject.toml); the example third-party
# driver proves the entry-point group and is a test fixture only.
.venv/bin/python -m pip install -q -e '.[dev]' -e ./simulators ./tests/plugins/example_driver
# The official Atomscale SDK is the wire-contract reference (tests/system/test_atomscale_contract.py); only its
# Rust streaming extension is loaded, so its heavy dependencies (numpy, pandas, matplotlib...) are not installed.
.venv/bin/python -m pip install -q --no-deps atomscale==0.21.10

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layers (pyproject.toml [tool.importlinter])
# Two workers (the machine has two cores; most tests wait on brokers and simulators), one test
# file per worker at a time: module-scoped scenarios run once, and every fixture takes free ports.
.venv/bin/pytest -n 2 --dist loadfile "$@"

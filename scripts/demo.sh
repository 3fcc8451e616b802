#!/usr/bin/env bash
# The main job on embedded defaults: install into .venv, start a simulated Pfeiffer TPG 362
# on its LAN port, and read it through configs/demo.yaml (human table, then JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import ensurepip, venv' 2>/dev/null || {
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
  else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv; fi; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
cb=.venv/bin/chamber-bridge

log=$(mktemp)
work=$(mktemp -d)
sims=()
trap 'kill "${sims[@]}" 2>/dev/null; wait "${sims[@]}" 2>/dev/null; rm -rf "$log" "$work"' EXIT
PYTHONUNBUFFERED=1 "$cb" simulate pfeiffer_tpg --tcp 127.0.0.1:18000 --status 2=off >"$log" 2>&1 &
sims+=($!)
for _ in $(seq 100); do grep -q 'socket://' "$log" && break; sleep 0.1; done
grep -q 'socket://' "$log" || { cat "$log"; echo "simulator did not start" >&2; exit 1; }
echo "simulator: $(head -n 1 "$log")"

"$cb" check configs/demo.yaml
echo "--- one poll, as a table (gauge 2 is switched off on the simulator):"
"$cb" read configs/demo.yaml
echo "--- the same as JSON, one object per reading:"
"$cb" read configs/demo.yaml --json

echo "--- a whole simulated MBE chamber (gauges, pyrometer, Eurotherm cells, heater supply):"
PYTHONUNBUFFERED=1 "$cb" simulate chamber --write-config "$work/chamber.yaml" >"$work/chamber.log" 2>&1 &
sims+=($!)
for _ in $(seq 100); do [ -f "$work/chamber.yaml" ] && break; sleep 0.1; done
[ -f "$work/chamber.yaml" ] || { cat "$work/chamber.log"; echo "chamber simulator did not start" >&2; exit 1; }
"$cb" read "$work/chamber.yaml"

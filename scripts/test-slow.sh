#!/usr/bin/env bash
# The long fault and soak tests (pytest marker "slow"), which the default run leaves out.
# Installs like scripts/test.sh, then runs only them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || bash scripts/test.sh --co -q >/dev/null
.venv/bin/pytest -m slow --timeout 1800 "$@"

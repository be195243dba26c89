#!/usr/bin/env bash
# `make test`: set up the environment (if needed) and run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV="$(bash "$ROOT/tools/setup_env.sh" | tail -1)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$ENV/bin/python" -m pytest -ra "${@:-tests}"

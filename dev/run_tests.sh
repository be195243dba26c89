#!/usr/bin/env bash
# `make test`: set up the environment and the deployment runtimes (if needed), run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV="$(bash "$ROOT/dev/setup_env.sh" | tail -1)"
# the tests run in the overlay with the deployment runtimes, so that no backend test is skipped
DEPLOY_ENV="$(bash "$ROOT/dev/setup_env.sh" --deploy | tail -1)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Two pytest workers (pytest-xdist, requirements/tools.txt), one thread each, test files kept
# whole per worker (module fixtures built once); VT_MM_TEST_WORKERS=0 runs in one process with
# two threads instead.
WORKERS="${VT_MM_TEST_WORKERS:-2}"
if [[ "$WORKERS" -gt 0 ]]; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    PARALLEL=(-n "$WORKERS" --dist loadfile)
else
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
    PARALLEL=()
fi

# Style first (seconds): OpenMMLab's flake8 + isort rules through ruff (requirements/tools.txt),
# configured in pyproject.toml.
echo "[test] style: ruff check (rules in pyproject.toml [tool.ruff])"
"$ENV/bin/ruff" check "$ROOT"

# --durations: the slowest tests, to keep the suite inside its 20-minute budget
"$DEPLOY_ENV/bin/python" -m pytest -ra --durations=25 "${PARALLEL[@]}" "${@:-tests}"

# The whole suite (no arguments): then the security-critical modules under mutation testing
# (checkpoint loading's allow-list, the offline guard; about a minute): no survivor may remain.
if [[ $# -eq 0 ]]; then
    echo "[test] mutation: the checkpoint allow-list and the offline guard (make mutation: all)"
    "$DEPLOY_ENV/bin/python" dev/mutation.py --fast
fi

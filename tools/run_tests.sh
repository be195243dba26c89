#!/usr/bin/env bash
# `make test`: set up the environment and the deployment runtimes (if needed), run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV="$(bash "$ROOT/tools/setup_env.sh" | tail -1)"
# the tests run in the overlay with the deployment runtimes, so that no backend test is skipped
DEPLOY_ENV="$(bash "$ROOT/tools/setup_env.sh" --deploy | tail -1)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

# Style first (seconds): OpenMMLab's flake8 + isort rules through ruff, configured in
# pyproject.toml. ruff is a lint tool, not part of the stack, so it is added to the environment
# here on first use instead of changing the environment's key.
RUFF_VERSION=0.17.6
if ! "$ENV/bin/ruff" --version 2>/dev/null | grep -qx "ruff $RUFF_VERSION"; then
    "$ENV/bin/python" -m pip install -q "ruff==$RUFF_VERSION" >&2 \
        || { echo "[test] installing ruff==$RUFF_VERSION failed" >&2; exit 1; }
fi
echo "[test] style: ruff check (rules in pyproject.toml [tool.ruff])"
"$ENV/bin/ruff" check "$ROOT"

exec "$DEPLOY_ENV/bin/python" -m pytest -ra "${@:-tests}"

#!/usr/bin/env bash
# `make mutation`: the known realistic bugs (tools/analysis_tools/known_mutants.py), then a mutmut
# run over the most checked modules (tools/analysis_tools/mutation.py). Outside the CI budget:
# about 15-25 minutes on 2 cores. mutmut is a test tool, not part of the stack: it is added to
# the environment on first use (as ruff is by `make test`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV="$(bash "$ROOT/tools/setup_env.sh" | tail -1)"
cd "$ROOT"
MUTMUT_VERSION=3.8.1
if ! "$ENV/bin/python" -c "import mutmut, sys; sys.exit(mutmut.__version__ != '$MUTMUT_VERSION')" 2>/dev/null; then
    "$ENV/bin/python" -m pip install -q "mutmut==$MUTMUT_VERSION" >&2 \
        || { echo "[mutation] installing mutmut==$MUTMUT_VERSION failed" >&2; exit 1; }
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
status=0
PYTHONPATH="$ROOT" "$ENV/bin/python" tools/analysis_tools/known_mutants.py || status=1
"$ENV/bin/python" tools/analysis_tools/mutation.py --list-survivors "$@" || status=1
exit $status

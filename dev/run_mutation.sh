#!/usr/bin/env bash
# `make mutation`: the known realistic bugs (dev/known_mutants.py), then mutmut
# over every module of vt_mm/ and the tools' argument handling, group by group
# (dev/mutation.py --list shows the groups; docs/en/advanced_guides/testing.md their times, from
# seconds to hours for the runtimes). Arguments go to mutation.py, e.g.
#     make mutation ARGS="--groups engine_checkpoints engine_data"
# It runs in the deployment overlay (the runtimes' groups convert models); mutmut comes with the
# tools layer (requirements/tools.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/dev/setup_env.sh" > /dev/null
DEPLOY_ENV="$(bash "$ROOT/dev/setup_env.sh" --deploy | tail -1)"
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
status=0
PYTHONPATH="$ROOT" "$DEPLOY_ENV/bin/python" dev/known_mutants.py || status=1
"$DEPLOY_ENV/bin/python" dev/mutation.py --list-survivors "$@" || status=1
exit $status

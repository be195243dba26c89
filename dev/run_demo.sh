#!/usr/bin/env bash
# `make demo`: the main job. Sets up the environment, trains VT-FPN on LIP through tools/train.py
# and tests the checkpoint with tools/test.py, writing prediction overlays.
# Without data/LIP it generates the synthetic demo data (data/LIP_demo) and uses the short demo
# schedule (configs/demo/vtfpn_r50_lip-demo-128x128.py): about 10 minutes on 2 CPU cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV="$(bash "$ROOT/dev/setup_env.sh" | tail -1)"
PY="$ENV/bin/python"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ -d data/LIP ]]; then
    CONFIG="${CONFIG:-configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py}"
    echo "[demo] data/LIP found: training $CONFIG on the real data"
else
    CONFIG="${CONFIG:-configs/demo/vtfpn_r50_lip-demo-128x128.py}"
    echo "[demo] data/LIP not found: writing synthetic LIP-layout demo data to data/LIP_demo"
    "$PY" tools/dataset_converters/make_demo_lip.py --out data/LIP_demo
fi
NAME="$(basename "$CONFIG" .py)"
WORK="${WORK_DIR:-work_dirs/$NAME}"

"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" "$@"
CKPT="$(cat "$WORK/last_checkpoint")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" --show-dir vis 2>&1 | tee "$WORK/test.log"
MIOU="$(grep -oE 'mIoU: [0-9.]+' "$WORK/test.log" | tail -1 || true)"
VIS="$(dirname "$(find "$WORK/test/vis" -name '*.png' 2>/dev/null | head -1)")"
echo
echo "[demo] config:      $CONFIG"
echo "[demo] checkpoint:  $CKPT"
echo "[demo] overlays:    ${VIS:-none}"
echo "[demo] final ${MIOU:-mIoU: not found in the test log}"

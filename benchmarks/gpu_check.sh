#!/usr/bin/env bash
# The GPU checks of issue 13 in one run (< 8 minutes on an H200): the CUDA tests
# (tests/test_cuda.py and the fused kernels on CUDA tensors), then the GPU
# benchmark (benchmarks/gpu.py, both shapes). Run from anywhere:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
#
# OUT_DIR (default: $OUT, else benchmarks/results) receives gpu_check.log and
# gpu_results.json. Needs torch with CUDA, triton, and sknmf's dependencies; where
# skorch is missing (the project's H200 image lacks it) and a folder .whl/ holds
# its wheel (pip download --no-deps skorch), it is installed into /tmp/site first.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
export PYTHONUNBUFFERED=1
if ! python3 -c "import skorch" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    echo "== environment"
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
    python3 -c "import triton; print('triton', triton.__version__)" \
        || echo "triton missing: the fused kernels will not be used"
    echo "== CUDA tests (limit 150 s)"
    timeout 150 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rs \
        tests/test_cuda.py tests/_torch/kernels
    echo "pytest exit: $?"
    echo "== GPU benchmark (limit 300 s)"
    timeout 300 python3 benchmarks/gpu.py --out "$OUT_DIR"
    echo "benchmark exit: $?"
} 2>&1 | tee "$LOG"

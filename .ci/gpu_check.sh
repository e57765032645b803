#!/usr/bin/env bash
# The GPU check (not CI: CI has no GPU). Run on a CUDA machine from the repository root, with the
# core dependencies' wheels in .whl/ and the shared data in .devdata/ when the machine has neither:
#   bash .ci/gpu_check.sh            (logs and a JUnit file under $OUT, else ./gpu-check/)
# 1. tests/test_cuda.py: AMP (fp32 / bf16 / fp16) against the CPU's result, the cache on the GPU,
#    the CLI on cuda, one process per GPU under DDP;
# 2. the whole suite with `device: auto`, which picks the GPU wherever a test does not pin the CPU.
set -o pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
# into the interpreter's own site-packages: tests start subprocesses with a bare environment
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || {
  tail -n 5 "$OUT/install.log"; export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src; }
[ -d .devdata ] && export KDISTILL_DATA=$PWD/.devdata
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, kdistill; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
timeout 180 python3 -m pytest -q -m '' -p no:cacheprovider -rfEs tests/test_cuda.py 2>&1 | tee "$OUT/cuda.log"
timeout "${SUITE_SECONDS:-300}" python3 -m pytest -v -m '' -p no:cacheprovider -n 8 --timeout 240 -rfE \
  --continue-on-collection-errors --junitxml="$OUT/suite.xml" tests --ignore tests/test_cuda.py >"$OUT/suite.log" 2>&1
tail -n 60 "$OUT/suite.log"

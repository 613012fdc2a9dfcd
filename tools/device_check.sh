#!/usr/bin/env bash
# One device-machine call: install the carried wheels, run the GPU tests of the CUDA path, then the benchmark.
# Usage (on the device, repo root): bash tools/device_check.sh COMMIT [pytest -k expression]
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider tests/test_crosscheck.py tests/test_cuda_infra.py tests/test_kernels_compile.py \
    ${2:+-k "$2"} 2>&1 | tee "$OUT/pytest.log" | tail -40
[ -n "${SWEEP:-}" ] && python3 tools/bench_ops.py --sweep --out "$OUT" 2>&1 | tee "$OUT/sweep.log"
python3 tools/bench_ops.py --out "$OUT" --commit "$1" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"

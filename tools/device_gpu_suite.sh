#!/usr/bin/env bash
# One device-machine call: the GPU tests, the conformance runner on the CUDA backend at real sizes, and the user
# path on a zero-weight GGUF with both GPU backends. Logs land in $OUT (default /tmp/out).
# Usage (repo root, wheels in .whl/): bash tools/device_gpu_suite.sh [PEERS] [pytest -k expression]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# The cross-check files run whole (real shapes on a GPU); elsewhere only the gpu-marked tests.
CROSS="tests/test_crosscheck.py tests/test_cuda_infra.py tests/test_conformance.py"
timeout "${PYTEST_TIMEOUT:-330}" python3 -m pytest -q -p no:cacheprovider -rfE --durations=12 $CROSS \
    ${2:+-k "$2"} > "$OUT/pytest-crosscheck.log" 2>&1
echo "pytest cross-check files rc=$?"; grep -E "passed|failed|error" "$OUT/pytest-crosscheck.log" | tail -3
timeout "${PYTEST_TIMEOUT:-330}" python3 -m pytest -q -p no:cacheprovider -m gpu -rfE --durations=12 tests/ \
    $(for f in $CROSS; do echo --ignore "$f"; done) ${2:+-k "$2"} > "$OUT/pytest-gpu.log" 2>&1
echo "pytest gpu-marked rc=$?"; grep -E "passed|failed|error" "$OUT/pytest-gpu.log" | tail -3
timeout "${CONFORMANCE_TIMEOUT:-150}" python3 -m impnb.conformance --impl impnb.conformance:CUDA --size real --json "$OUT/conformance.json" \
    > "$OUT/conformance.log" 2>&1
echo "conformance rc=$?"; tail -n 4 "$OUT/conformance.log"
if [ -n "${1:-}" ]; then
    m=/tmp/smollm2-zero.gguf
    [ -s $m ] || xz -dc "$1/smollm2-135m-zero.gguf.xz" > $m
    for b in cuda check; do
        timeout "${GENERATE_TIMEOUT:-90}" python3 -m impnb.generate --model $m --prompt "The capital of France is" --max-new-tokens 16 \
            --backend $b --json > "$OUT/generate-$b.log" 2>&1
        echo "generate --backend $b rc=$?"; tail -c 600 "$OUT/generate-$b.log"; echo
    done
fi

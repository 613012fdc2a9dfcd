#!/usr/bin/env bash
# One device-machine call: the NVFP4 GEMV/GEMM benchmark (bench/results/ops-<gpu>.json) and Nsight Compute's
# SpeedOfLight / MemoryWorkloadAnalysis / Occupancy / WarpStateStats sections of the GEMV launches.
# Usage (repo root, wheels in .whl/): bash tools/device_ops_profile.sh COMMIT
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -d /tmp/site/numpy ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout "${BENCH_TIMEOUT:-240}" python3 tools/bench_ops.py --out "$OUT" --commit "${1:-unknown}" 2>&1 \
    | tee "$OUT/bench_ops.log"
timeout "${NCU_TIMEOUT:-200}" ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --section WarpStateStats --kernel-name regex:'gemv|gemm' --launch-skip 0 --launch-count 12 \
    python3 tools/ncu_gemv.py ${NCU_SHAPES:-} > "$OUT/ncu.txt" 2>&1
echo "ncu rc=$?"; grep -E "^  [a-z_]|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Compute \(SM\)" \
    "$OUT/ncu.txt" | head -80

#!/usr/bin/env bash
# The user-path generation benchmark (tools/bench_generate.py) on the GPU machine, in two device calls:
#   bash tools/device_bench.sh build PEERS          # call 1: unpack llama.cpp, start its CUDA build in the background
#   IMPNB_COMMIT=<sha> bash tools/device_bench.sh run PEERS [bench_generate.py args]   # call 2, machine still warm
#   bash tools/device_bench.sh random BASE        # the engine's own loop on random weights, at HEAD and at BASE
# PEERS: a git-ignored folder of the checkout, named in the call's `carry`, holding the peers files
# smollm2-135m-zero.gguf.xz, gemma3-270m-zero.gguf.xz and llama.cpp-src.tar.xz. Wheels in .whl/ (as for
# tools/device_check.sh) are installed first when present. `run` waits up to $BUILD_WAIT seconds (300) for the build,
# then benchmarks both zero-weight files (impnb backend cuda, llama-bench -ngl 99 -fa 1, HF bf16 eager) with the
# per-kernel profile of one decode step; the JSON and logs land in $OUT (default /tmp/out).
set -uo pipefail
usage="usage: bash tools/device_bench.sh build|run|random PEERS|BASE [bench_generate.py args]"
mode=${1:?$usage}
peers=${2:?$usage}
shift 2
L=${LCPP_DIR:-$HOME/lcpp}
W=${BENCH_DIR:-/tmp/impnb-bench}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"

case "$mode" in
build)
    mkdir -p "$L" && tar xJf "$peers/llama.cpp-src.tar.xz" -C "$L" || exit 1
    cd "$L/llama.cpp" || exit 1
    setsid nohup bash -c "cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF > ../build.log 2>&1 && \
        cmake --build build -j ${BUILD_JOBS:-8} --target llama-bench >> ../build.log 2>&1; echo BUILD_RC=\$? >> ../build.log" \
        < /dev/null > /dev/null 2>&1 &
    echo "llama.cpp CUDA build started in the background; log: $L/build.log"
    ;;
run)
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site:$PWD
    fi
    export PYTHONUNBUFFERED=1
    mkdir -p "$W"
    for m in smollm2-135m-zero gemma3-270m-zero; do
        [ -s "$W/$m.gguf" ] || xz -dc "$peers/$m.gguf.xz" > "$W/$m.gguf" || exit 1
    done
    for _ in $(seq "${BUILD_WAIT:-300}"); do
        grep -q BUILD_RC "$L/build.log" 2> /dev/null && break
        sleep 1
    done
    tail -n 3 "$L/build.log" 2> /dev/null || echo "no llama.cpp build log at $L/build.log"
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
    uptime
    python3 tools/bench_generate.py --model "$W/smollm2-135m-zero.gguf" --model "$W/gemma3-270m-zero.gguf" \
        --llama-bench "$L/llama.cpp/build/bin/llama-bench" --kernel-profile --readme --out "$OUT" "$@" \
        2> "$OUT/bench.stderr.log" | tee "$OUT/bench.log"
    ;;
random)
    # BASE: a git-ignored folder holding an earlier commit's impnb/ and tools/ (git archive COMMIT impnb tools);
    # its bench_generate.py is the random-weight engine benchmark of that time (--models, --no-hf).
    [ -d /tmp/site/numpy ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONUNBUFFERED=1
    PYTHONPATH=/tmp/site:$PWD timeout "${RANDOM_TIMEOUT:-200}" python3 tools/bench_generate.py \
        --random-weights "${PRESETS:-smollm2-135m,gemma3-270m,qwen3.5-9b}" --hybrid-layers 8 --no-llama --no-hf \
        --out "$OUT/random-after.json" 2>&1 | tee "$OUT/random-after.log" | grep -v "^\["
    [ -d "$peers/impnb" ] && (cd "$peers" && PYTHONPATH=/tmp/site:$PWD timeout "${RANDOM_TIMEOUT:-200}" \
        python3 tools/bench_generate.py --models smollm2-135m,gemma3-270m --no-hf --out "$OUT/random-before.json" \
        2>&1 | tee "$OUT/random-before.log")
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac

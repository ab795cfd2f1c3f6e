#!/usr/bin/env bash
# Every GPU check of the repository, one process each (an illegal memory access poisons a process's CUDA context),
# each under its own time limit, logs and JSON into OUT. Run from the repository root on a CUDA machine:
#
#   benchmarks/run_gpu.sh OUT [STAGE...]     stages: tests, kernels, decode (default: all three, in that order)
#
# tests: the GPU test files (pytest -m gpu), in parallel, 10 minutes each: they mostly compile.
# kernels: the kernel benchmarks, one after another (timings must not share the GPU), ours before peers.
# decode (DECODE_ARGS: extra bench_decode.py options, e.g. --no-peers): every architecture's decode speed at batch 1/16/64 against the bandwidth limit (kernels compiled first, in
#   parallel), the GLA step profile and the long-prompt memory.
set -uo pipefail
out=${1:?usage: benchmarks/run_gpu.sh OUT [tests|kernels|decode]...}; shift
stages=${*:-tests kernels decode}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run() {  # run NAME SECONDS COMMAND...: one line of outcome per command, its output in OUT/NAME.log
    local name=$1 limit=$2; shift 2
    timeout -s INT "$limit" "$@" > "$out/$name.log" 2>&1
    echo "$name: exit $? ($(tail -n 1 "$out/$name.log" | cut -c1-120))"
}
for stage in $stages; do
    case $stage in
    tests)
        for f in tests/gpu/test_*_gpu.py; do
            name=$(basename "$f" .py)
            run "$name" 600 python -m pytest -q -rxX -s -p no:cacheprovider -m gpu "$f" &
        done
        wait ;;
    kernels)
        run bench_linear_attention 600 python benchmarks/bench_linear_attention.py --out "$out/linear_attention.json"
        run bench_variants 600 python benchmarks/bench_linear_attention_variants.py --out "$out/linear_attention_variants.json"
        run bench_selective_scan 600 python benchmarks/bench_selective_scan.py --sweep --out "$out/selective_scan.json"
        run bench_rnn 600 python benchmarks/bench_rnn.py --out "$out/rnn.json"
        run bench_rwkv7 600 python benchmarks/bench_rwkv7.py --out "$out/rwkv7.json" ;;
    decode)
        # Compile every architecture's kernels first, all at once (a few tokens each, thrown away): the timed run
        # then finds them in Triton's cache and measures decoding, not compilation.
        mkdir -p "$out/warm"
        for arch in $(python -c "import hf_recurrent; print(*sorted(hf_recurrent.ARCHITECTURES))"); do
            run "warm/decode_$arch" 600 python benchmarks/bench_decode.py --archs "$arch" --no-peers --new-tokens 8 \
                --out "$out/warm/decode_$arch.json" &
        done
        wait
        run bench_decode 1800 python benchmarks/bench_decode.py --out "$out/decode.json" ${DECODE_ARGS:-}
        run profile_decode 600 python benchmarks/profile_decode.py --arch gla --out "$out/profile_decode_gla.json"
        run sweep_gemv 600 python benchmarks/sweep_gemv.py --arch gla --out "$out/sweep_gemv_gla.json"
        run bench_long_prefill 600 python benchmarks/bench_long_prefill.py --out "$out/long_prefill.json" ;;
    *) echo "unknown stage $stage (tests, kernels, decode)"; exit 2 ;;
    esac
done

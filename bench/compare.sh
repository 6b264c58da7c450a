#!/usr/bin/env bash
# llmft vs PyTorch on this machine, same run: training steps (gpt2, gpt2-medium) and generation.
# Builds nothing: expects bench_train_step and bench_generate in BUILD_DIR/bench (default
# build/release; configure it with -DCMAKE_BUILD_TYPE=Release). Prints every raw JSON line, then
# one JSON line per comparison with the ratio C++ / PyTorch (> 1: llmft is faster).
# PyTorch runs in its best configuration here (BLIS openmp + tcmalloc), see
# bench/pytorch/gpt2_bench.py. About 5-10 minutes on 2 cores.
# Usage: bench/compare.sh [BUILD_DIR] [STEPS]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/release}"
steps="${2:-3}"
train_bin="$build/bench/bench_train_step"
gen_bin="$build/bench/bench_generate"
for b in "$train_bin" "$gen_bin"; do
  if [[ ! -x "$b" ]]; then
    echo "error: $b not found; build it first: cmake -S . -B $build -G Ninja" \
      "-DCMAKE_BUILD_TYPE=Release && cmake --build $build --target bench_train_step bench_generate" >&2
    exit 1
  fi
done
threads="$(nproc)"
arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
blis="/usr/lib/$arch/blis-openmp"
tcmalloc="/usr/lib/$arch/libtcmalloc_minimal.so.4"
torch_env=(env OMP_NUM_THREADS="$threads")
if [[ -d "$blis" ]]; then
  torch_env+=(LD_LIBRARY_PATH="$blis" BLIS_NUM_THREADS="$threads")
fi
if [[ -f "$tcmalloc" ]]; then
  torch_env+=(LD_PRELOAD="$tcmalloc")
fi
py=(/usr/bin/python3 "$root/bench/pytorch/gpt2_bench.py")

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
run() {  # tag, command...: runs it, echoes its JSON lines, keeps them tagged for the summary
  local tag="$1"
  shift
  "$@" | while IFS= read -r line; do
    echo "$line"
    echo "$tag $line" >>"$out"
  done
}

echo "{\"context\": \"compare\", \"commit\": \"$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)\", \"threads\": $threads, \"load_avg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
for model in gpt2 gpt2-medium; do
  run "cpp_train_$model" "$train_bin" --model "$model" --steps "$steps" --warmup 1
  run "torch_train_$model" "${torch_env[@]}" "${py[@]}" --model "$model" --mode train \
    --steps "$steps" --warmup 1 --threads "$threads"
done
run cpp_generate "$gen_bin" gpt2-medium 32 2
run torch_generate "${torch_env[@]}" "${py[@]}" --model gpt2-medium --mode generate --steps 2 \
  --warmup 1 --new-tokens 8 --threads "$threads"

/usr/bin/python3 - "$out" <<'EOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    tag, _, js = line.partition(" ")
    try:
        d = json.loads(js)
    except ValueError:
        continue
    if "bench" in d:
        rows.setdefault(tag, []).append(d)

def first(tag, **match):
    for d in rows.get(tag, []):
        if all(d.get(k) == v for k, v in match.items()):
            return d
    return None

for model in ("gpt2", "gpt2-medium"):
    c, t = first(f"cpp_train_{model}", bench="train_step"), first(f"torch_train_{model}")
    if c and t:
        print(json.dumps({
            "compare": "train_step", "model": model,
            "cpp_real_tokens_per_s": round(c["real_tokens_per_s_median"], 2),
            "torch_real_tokens_per_s": t["real_tokens_per_s"],
            "ratio_tokens_per_s": round(c["real_tokens_per_s_median"] / t["real_tokens_per_s"], 3),
            "cpp_s_per_step": round(c["ms_per_step_median"] / 1e3, 3),
            "torch_s_per_step": t["median_s_per_step"],
            "cpp_peak_rss_gib": round(c["peak_rss_mb"] / 1024, 2),
            "torch_peak_rss_gib": t["peak_rss_gib"],
            "sgemm_baseline_gflops": round(c["sgemm_baseline_gflops"], 1)}))
t = first("torch_generate")
for streams in (1, 8, 16):
    c = first("cpp_generate", bench="generate", streams=streams)
    if c and t:
        print(json.dumps({
            "compare": "generate", "model": "gpt2-medium", "cpp_streams": streams,
            "cpp_decode_tok_s": c["decode_tok_s"],
            "torch_textbook_tok_s": t["tokens_per_s"],
            "ratio_tokens_per_s": round(c["decode_tok_s"] / t["tokens_per_s"], 3),
            "note": "PyTorch: textbook greedy loop without KV cache, 1 stream"}))
EOF
echo "{\"context\": \"compare\", \"load_avg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

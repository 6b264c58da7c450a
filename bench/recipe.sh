#!/usr/bin/env bash
# The recipe's workload (bundled dataset, seeded batch order, evaluation schedule, random weights)
# through llmft's finetuning loop, then the same steps through PyTorch, with the ratio.
# Builds nothing: expects BUILD_DIR/bench/bench_recipe (default build/release; configure with
# -DCMAKE_BUILD_TYPE=Release). PyTorch runs in its best configuration here when Debian's BLIS
# (OpenMP) and tcmalloc are installed, see bench/pytorch/recipe_bench.py.
# Usage: bench/recipe.sh [--precision fp32|bf16] [--steps K] [--model gpt2-medium]
#                        [--build BUILD_DIR] [--threads N]
#   --steps K: time the first K steps and extrapolate to the 232 steps (0 = run all of it:
#   ~20-40 minutes per side for gpt2-medium). Default 10.
# Prints both JSON lines, then one comparison line: ratio = PyTorch time / llmft time (> 1: llmft
# faster), for the whole recipe (estimated, without setup) and per phase (real tokens/s).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
precision=fp32
steps=10
model=gpt2-medium
build="$root/build/release"
threads="$(nproc)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --precision) precision="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$precision" in
  fp32) torch_flag=() ;;
  bf16) torch_flag=(--bf16) ;;
  *) echo "error: --precision $precision: expected fp32 or bf16" >&2; exit 2 ;;
esac
bin="$build/bench/bench_recipe"
if [[ ! -x "$bin" ]]; then
  echo "error: $bin not found; build it first: cmake -S . -B $build -G Ninja" \
    "-DCMAKE_BUILD_TYPE=Release && cmake --build $build --target bench_recipe" >&2
  exit 1
fi
arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
blis="/usr/lib/$arch/blis-openmp"
tcmalloc="/usr/lib/$arch/libtcmalloc_minimal.so.4"
torch_env=(env OMP_NUM_THREADS="$threads")
[[ -d "$blis" ]] && torch_env+=(LD_LIBRARY_PATH="$blis" BLIS_NUM_THREADS="$threads")
[[ -f "$tcmalloc" ]] && torch_env+=(LD_PRELOAD="$tcmalloc")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
plan="$work/plan.jsonl"

echo "{\"context\": \"recipe\", \"commit\": \"$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)\", \"model\": \"$model\", \"precision\": \"$precision\", \"steps\": $steps, \"threads\": $threads, \"load_avg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
"$bin" --model "$model" --precision "$precision" --max-steps "$steps" --threads "$threads" \
  --dump-batches "$plan" | tee "$work/llmft.json"
"${torch_env[@]}" /usr/bin/python3 "$root/bench/pytorch/recipe_bench.py" "$plan" \
  --threads "$threads" "${torch_flag[@]}" | tee "$work/torch.json"

/usr/bin/python3 - "$work/llmft.json" "$work/torch.json" <<'EOF'
import json, sys
c, t = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3])
work = lambda d: d["recipe_train_seconds"] + d["recipe_eval_seconds"] + d["recipe_sample_seconds"]
print(json.dumps({
    "compare": "recipe", "model": c["model"], "llmft_precision": c["precision"],
    "torch_precision": t["precision"], "steps_run": c["steps_run"],
    "extrapolated_from_steps": c["extrapolated_from_steps"],
    "llmft_recipe_minutes": round(work(c) / 60, 2), "torch_recipe_minutes": round(work(t) / 60, 2),
    "ratio_recipe": round(work(t) / work(c), 3),
    "ratio_train_tokens_per_s": round(c["train_real_tokens_per_s"] / t["train_real_tokens_per_s"], 3),
    "ratio_eval_tokens_per_s": round(c["eval_real_tokens_per_s"] / t["eval_real_tokens_per_s"], 3)
    if t["eval_real_tokens_per_s"] else None,
    "ratio_sample": round(t["recipe_sample_seconds"] / c["recipe_sample_seconds"], 3)
    if c["recipe_sample_seconds"] else None,
    "llmft_peak_rss_gib": round(c["peak_rss_gib"], 2), "torch_peak_rss_gib": round(t["peak_rss_gib"], 2),
    "note": "recipe minutes = steps + evaluations + samples (setup and writes excluded)"}))
EOF
echo "{\"context\": \"recipe\", \"load_avg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

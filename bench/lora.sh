#!/usr/bin/env bash
# LoRA against full finetuning, same run: bench_train_step alternating full and LoRA (rank 16,
# default targets) training steps on the recipe's batch shapes, REPEATS times each, then the ratio
# of the median step times and both peak memories.
# Usage: bench/lora.sh [--model gpt2-medium] [--precision bf16] [--repeats 3] [--steps 3]
set -euo pipefail
cd "$(dirname "$0")/.."
model=gpt2-medium precision=bf16 repeats=3 steps=3
while (($#)); do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=${BENCH_BIN:-build/release/bench/bench_train_step}  # BENCH_BIN: another build of it
[ -x "$bin" ] || { cmake --preset release >/dev/null && cmake --build --preset release --target bench_train_step; }
out=$(mktemp)
for ((i = 0; i < repeats; i++)); do
  "$bin" --model "$model" --precision "$precision" --steps "$steps" | tee -a "$out"
  "$bin" --model "$model" --precision "$precision" --steps "$steps" --lora 16 | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
full = [r for r in rows if r["lora_rank"] == 0]
lora = [r for r in rows if r["lora_rank"] > 0]
f = statistics.median(r["ms_per_step_median"] for r in full)
l = statistics.median(r["ms_per_step_median"] for r in lora)
print(json.dumps({"bench": "lora_vs_full", "model": full[0]["model"],
                  "precision": full[0]["precision"], "full_ms_per_step": f,
                  "lora_ms_per_step": l, "speedup": f / l,
                  "full_peak_rss_mb": max(r["peak_rss_mb"] for r in full),
                  "lora_peak_rss_mb": max(r["peak_rss_mb"] for r in lora),
                  "trainable_params": lora[0]["trainable_params"], "repeats": len(full)}))
PY
rm -f "$out"

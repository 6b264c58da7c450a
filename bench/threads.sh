#!/usr/bin/env bash
# How llmft scales with threads on this machine, and PyTorch at the largest count, same run:
# gpt2-medium training steps (fp32 and bf16, the recipe's batch shapes) and the test-set answers
# (bf16), at each thread count. Builds nothing: expects BUILD_DIR/bench/bench_train_step and
# bench_generate (default build/release). PyTorch (bench/pytorch/gpt2_bench.py) runs with the
# same batches; PYTHON names the interpreter that has torch (default /usr/bin/python3).
# Usage: bench/threads.sh [--build BUILD_DIR] [--threads "2 8 16"] [--steps 3]
#                         [--prompts N] [--new-tokens 256] [--no-torch]
#   --threads: the counts to run (default: 1, 2, half the cores and all of them)
#   --prompts N, --new-tokens M: answer the first N test prompts (0: all 110) with M new tokens
#   each (shorter runs for low thread counts; the same at every count)
# Prints every raw JSON line, then one summary line per workload and thread count: tokens/s,
# speed-up over the smallest count, and llmft / PyTorch where PyTorch ran.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/release"
cores="$(nproc)"
counts="$(printf '%s\n' 1 2 $((cores / 2)) "$cores" | awk '$1 >= 1' | sort -nu | tr '\n' ' ')"
steps=3
prompts=0
new_tokens=256
torch=1
python="${PYTHON:-/usr/bin/python3}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --threads) counts="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --prompts) prompts="$2"; shift 2 ;;
    --new-tokens) new_tokens="$2"; shift 2 ;;
    --no-torch) torch=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for b in bench_train_step bench_generate; do
  if [[ ! -x "$build/bench/$b" ]]; then
    echo "error: $build/bench/$b not found; build it first: cmake --preset release &&" \
      "cmake --build --preset release --target bench_train_step bench_generate" >&2
    exit 1
  fi
done
largest="$(printf '%s\n' $counts | sort -n | tail -1)"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
run() {  # threads, tag, command...: echoes the JSON lines, keeps them tagged for the summary
  local t="$1" tag="$2"
  shift 2
  OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" "$@" | while IFS= read -r line; do
    echo "$line"
    echo "$t $tag $line" >>"$out"
  done
}

echo "{\"context\": \"threads\", \"commit\": \"$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)\", \"cores\": $cores, \"counts\": \"$counts\", \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"load_avg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
for t in $counts; do
  for p in fp32 bf16; do
    run "$t" "llmft_train_$p" "$build/bench/bench_train_step" --model gpt2-medium --precision "$p" \
      --steps "$steps" --warmup 1 --threads "$t"
  done
  run "$t" llmft_generate "$build/bench/bench_generate" testset --precision bf16 \
    --single-tokens 0 --prompts "$prompts" --new-tokens "$new_tokens"
done
if [[ "$torch" == 1 ]]; then
  for p in fp32 bf16; do
    flag=()
    [[ "$p" == bf16 ]] && flag=(--bf16)
    run "$largest" "torch_train_$p" "$python" "$root/bench/pytorch/gpt2_bench.py" \
      --model gpt2-medium --mode train --steps "$steps" --warmup 1 --threads "$largest" "${flag[@]}"
  done
fi

"$python" - "$out" <<'EOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    t, tag, js = line.split(" ", 2)
    try:
        d = json.loads(js)
    except ValueError:
        continue
    if d.get("bench") in ("train_step", "generate_testset", "pytorch_train"):
        rows.setdefault((tag, int(t)), d)

def rate(d):
    return d.get("real_tokens_per_s_median") or d.get("real_tokens_per_s") or d.get("tok_s")

for work in ("train_fp32", "train_bf16", "generate"):
    mine = sorted((t, d) for (tag, t), d in rows.items() if tag == f"llmft_{work}")
    if not mine:
        continue
    base = rate(mine[0][1])
    for t, d in mine:
        line = {"summary": work, "threads": t, "llmft_tokens_per_s": round(rate(d), 1),
                "speedup_over_" + str(mine[0][0]) + "_threads": round(rate(d) / base, 2)}
        if work == "generate":
            line["prompts"] = d["prompts"]
            line["wall_s"] = d["wall_s"]
        torch_row = rows.get((f"torch_{work}", t))
        if torch_row:
            line["torch_tokens_per_s"] = round(rate(torch_row), 1)
            line["llmft_over_torch"] = round(rate(d) / rate(torch_row), 2)
        print(json.dumps(line))
EOF
echo "{\"context\": \"threads\", \"load_avg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

#!/usr/bin/env bash
# llmft dpo vs the reference's PyTorch DPO loop on this machine, same run, same batches (the first
# train-split batches of the bundled preference data, 8 pairs each): gpt2-medium shapes, fp32 and
# bf16 (PyTorch: CPU autocast), alternating runs, REPEAT times each. Prints every raw JSON line,
# then one JSON line per precision with the medians and the ratios (> 1: llmft is faster / leaner).
# llmft's time per step includes the reference scoring of its batch (each pair is scored once per
# run; a one-epoch run pays it once, like the PyTorch loop's reference forward).
# PyTorch runs in its best configuration here (BLIS openmp + tcmalloc when installed, all cores).
# Usage: bench/dpo_compare.sh [BUILD_DIR] [STEPS] [REPEAT] [PRECISIONS, default "bf16 fp32"]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/release}"
steps="${2:-3}"
repeat="${3:-3}"
precisions="${4:-bf16 fp32}"
bin="$build/bench/bench_dpo_step"
if [[ ! -x "$bin" ]]; then
  echo "error: $bin not found; build it first: cmake --preset release &&" \
    "cmake --build --preset release --target bench_dpo_step" >&2
  exit 1
fi
threads="$(nproc)"
arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
torch_env=(env OMP_NUM_THREADS="$threads")
[[ -d "/usr/lib/$arch/blis-openmp" ]] &&
  torch_env+=(LD_LIBRARY_PATH="/usr/lib/$arch/blis-openmp" BLIS_NUM_THREADS="$threads")
[[ -f "/usr/lib/$arch/libtcmalloc_minimal.so.4" ]] &&
  torch_env+=(LD_PRELOAD="/usr/lib/$arch/libtcmalloc_minimal.so.4")
batches="$(mktemp)"
out="$(mktemp)"
trap 'rm -f "$batches" "$out"' EXIT

echo "{\"context\": \"dpo_compare\", \"commit\": \"$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)\", \"threads\": $threads, \"load_avg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
for ((r = 0; r < repeat; ++r)); do
  for prec in $precisions; do
    "$bin" --model gpt2-medium --precision "$prec" --steps "$steps" --warmup 1 --dump "$batches" |
      tee -a "$out"
    flag=()
    [[ "$prec" == bf16 ]] && flag=(--bf16)
    "${torch_env[@]}" /usr/bin/python3 "$root/bench/pytorch/dpo_bench.py" --model gpt2-medium \
      --batches "$batches" --warmup 1 --threads "$threads" "${flag[@]}" | tee -a "$out"
  done
done

/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for prec in ("bf16", "fp32"):
    c = [r for r in rows if r["bench"] == "dpo_step" and r["precision"] == prec]
    t = [r for r in rows if r["bench"] == "pytorch_dpo_step" and r["precision"] == prec]
    if not c or not t:
        continue
    cm = statistics.median(r["ms_per_step_with_reference"] for r in c)
    cs = statistics.median(r["ms_per_step_median"] for r in c)
    tm = statistics.median(r["ms_per_step_median"] for r in t)
    cr = max(r["peak_rss_mb"] for r in c)
    tr = max(r["peak_rss_mb"] for r in t)
    print(json.dumps({"compare": "dpo_step", "model": "gpt2-medium", "precision": prec,
                      "runs": len(c), "cpp_ms_per_step_with_reference": round(cm, 1),
                      "cpp_ms_per_step_without_reference": round(cs, 1),
                      "torch_ms_per_step": round(tm, 1), "ratio": round(tm / cm, 2),
                      "cpp_peak_rss_mb": round(cr), "torch_peak_rss_mb": round(tr),
                      "memory_ratio": round(tr / cr, 2)}))
PY
echo "{\"context\": \"dpo_compare\", \"load_avg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

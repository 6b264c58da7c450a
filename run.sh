#!/usr/bin/env bash
# First command: install what is missing, build an optimised binary for this machine, and run the
# reference instruction-finetuning recipe (gpt2-medium, the bundled dataset, 2 epochs, test
# answers, judge when one answers). Extra arguments go to `llmft finetune` (see --help).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec ./build/release/llmft finetune "$@"

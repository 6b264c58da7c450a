#!/usr/bin/env bash
# First command: install what is missing, build an optimised binary, run the main job.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec ./build/release/llmft data stats data/instruction-data.json "$@"

#!/usr/bin/env bash
# Second command: install what is missing, build, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
cmake --preset ci >/dev/null
cmake --build --preset ci
# The npm clients the serve tests drive (tests/clients/package-lock.json).
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
# llama.cpp for the GGUF export test (tests/e2e/test_llama_cpp.cpp): node-llama-cpp's prebuilt CPU
# binary and Node.js 20, pinned in the lockfile; no install scripts, so nothing is built or fetched.
(cd tests/llama && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)
ctest --preset ci
# The same tests again, and each fuzz harness for a short fixed time, over a clang build with
# AddressSanitizer and UndefinedBehaviorSanitizer (the dev preset; docs/reliability.md).
cmake --preset dev >/dev/null
cmake --build --preset dev
ctest --preset dev

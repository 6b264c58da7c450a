#!/usr/bin/env bash
# Second command: install what is missing, build, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
cmake --preset ci >/dev/null
cmake --build --preset ci
ctest --preset ci

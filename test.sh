#!/usr/bin/env bash
# Second command: install what is missing, build, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
cmake --preset ci >/dev/null
cmake --build --preset ci
# The npm clients the serve tests drive (tests/clients/package-lock.json).
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
ctest --preset ci

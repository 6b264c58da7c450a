#!/usr/bin/env bash
# Installs the Debian 12 packages llmft builds and tests with, when any is missing.
set -euo pipefail
pkgs=(g++ cmake ninja-build pkg-config git
      nlohmann-json3-dev libfmt-dev libcli11-dev libcurl4-openssl-dev libcpp-httplib-dev libssl-dev
      libopenblas-dev libopenblas0-openmp libdnnl-dev libgtest-dev libicu-dev
      libopenmpi-dev openmpi-bin
      clang libclang-rt-dev libomp-dev
      chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the client tests (tests/clients) and install tests/llama (llama.cpp for the
# GGUF test, which runs the Node.js 20 pinned there); an installed node >= 18 of any origin will do.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "Installing missing packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

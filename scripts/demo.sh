#!/usr/bin/env bash
# The main job: builds Paygent and runs `paygent demo` (the $49 Pro-plan month, without and with
# Paygent, local-only mode on the embedded defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target paygent_cli -j2
exec build/paygent demo "$@"

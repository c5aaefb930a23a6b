#!/bin/sh
# paygent-proxy with the official npm clients: run_e2e.sh PROXY_BINARY FIXTURES_DIR
# Installs `openai` and `@anthropic-ai/sdk` into a scratch copy of this folder. Prints
# "SKIPPED: ..." (ctest reports the test as skipped) when node/npm are missing or the registry
# cannot be reached; fails on any wrong answer from the proxy.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proxy=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
fixtures=$(cd "$2" && pwd)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "SKIPPED: e2e: node and npm are not installed (scripts/install-deps.sh)"
  exit 0
fi
work=${PAYGENT_E2E_DIR:-${TMPDIR:-/tmp}/paygent-proxy-e2e}
mkdir -p "$work"
cp "$here/package.json" "$here/e2e.mjs" "$here/plans.json" "$work/"
if [ ! -d "$work/node_modules/openai" ] || [ ! -d "$work/node_modules/@anthropic-ai/sdk" ]; then
  if ! (cd "$work" && npm install --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
    echo "SKIPPED: e2e: npm install failed (registry unreachable?): $(tail -n 3 "$work/npm.log" | tr '\n' ' ')"
    exit 0
  fi
fi
cd "$work"
exec node e2e.mjs "$proxy" "$fixtures"

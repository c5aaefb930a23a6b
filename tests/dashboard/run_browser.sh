#!/bin/sh
# The dashboard in a real browser: run_browser.sh PAYGENTD PAYGENT SOURCE_DIR SCREENSHOT_DIR
# Starts paygentd (SQLite, a temporary data dir, loopback), fills two products as scripts/demo.sh
# does (the $49 Pro-plan month; the agents' revenue month), then drives Debian's Chromium through
# playwright-core (browser.mjs): sign-in, every view against the API's numbers, CSV export, the
# metric form, session expiry, and a customer's portal token. Screenshots of each view go to
# SCREENSHOT_DIR. Prints "SKIPPED: ..." (ctest reports a skip) without node/npm or chromium, or
# when the npm registry cannot be reached.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
paygentd=$1 paygent=$2 source=$3 shots=$4
chromium=${CHROMIUM:-/usr/bin/chromium}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "SKIPPED: dashboard browser test: node and npm are not installed (scripts/install-deps.sh)"
  exit 0
fi
if [ ! -x "$chromium" ]; then
  echo "SKIPPED: dashboard browser test: no Chromium at $chromium (scripts/install-deps.sh installs Debian's chromium)"
  exit 0
fi
work=${PAYGENT_DASHBOARD_TEST_DIR:-${TMPDIR:-/tmp}/paygent-dashboard-test}
mkdir -p "$work" "$shots"
cp "$here/package.json" "$here/browser.mjs" "$work/"
if [ ! -d "$work/node_modules/playwright-core" ]; then
  if ! (cd "$work" && npm install --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
    echo "SKIPPED: dashboard browser test: npm install failed (registry unreachable?): $(tail -n 3 "$work/npm.log" | tr '\n' ' ')"
    exit 0
  fi
fi

data=$(mktemp -d)
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
PAYGENTD_ADMIN_TOKEN="$token" "$paygentd" --data-dir "$data" --listen 127.0.0.1:0 >"$data/stdout" 2>"$data/stderr" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/^paygentd listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$data/stdout")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "paygentd did not start:"; cat "$data/stderr"; exit 1; }
url="http://127.0.0.1:$port"
key=$("$paygent" admin create-product --backend "$url" --admin-token "$token" --name demo)
"$paygent" demo --backend "$url" --api-key "$key" >"$data/demo.log"
key2=$("$paygent" admin create-product --backend "$url" --admin-token "$token" --name agents)
"$paygent" agents apply "$source/scripts/demo-agents.json" --url "$url" --key "$key2" >/dev/null
"$paygent" demo revenue --backend "$url" --api-key "$key2" >"$data/revenue.log"
cd "$work"
CHROMIUM="$chromium" node browser.mjs "$url" "$key" "$key2" "$shots"

#!/usr/bin/env bash
# The main job: builds Paygent, starts paygentd (SQLite in a temporary data dir) on loopback, runs
# `paygent demo` against it (the $49 Pro-plan month of November 2026, without and with Paygent),
# which ends by comparing paygentd's per-user totals for that month with the library's (exit 1 if
# they differ); then the revenue half (issue 10): a second product's agents and indicators from
# scripts/demo-agents.json (`paygent agents apply`), a month of four agents' events (per-minute voice,
# flat per call, cost-only, revenue-only; checked by `paygent demo revenue`) and the profit report
# (`paygent report profit`); and stops paygentd.
#   bash scripts/demo.sh           # with the backend
#   bash scripts/demo.sh --local   # local-only mode (no API key: a local SQLite store only)
#   bash scripts/demo.sh --serve   # then keep paygentd running to look at it in the dashboard
#                                  # (PAYGENT_DEMO_PORT=8080 to choose its port; Ctrl-C stops it)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target paygent_cli paygentd -j2

if [[ "${1:-}" == "--local" ]]; then
  exec build/paygent demo
fi

data=$(mktemp -d)
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PAYGENTD_ADMIN_TOKEN="$token" build/server/paygentd --data-dir "$data" --listen "127.0.0.1:${PAYGENT_DEMO_PORT:-0}" >"$data/stdout" &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$data/stdout" 2>/dev/null && break
  sleep 0.1
done
port=$(sed -n 's/^paygentd listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$data/stdout")
[[ -n "$port" ]] || { echo "paygentd did not start" >&2; exit 1; }
url="http://127.0.0.1:$port"
key=$(build/paygent admin create-product --backend "$url" --admin-token "$token" --name demo)
echo "paygentd is serving $url (data in $data); product 'demo' created."
build/paygent demo --backend "$url" --api-key "$key"

echo
echo "== The revenue half: agents, indicators, profit (product 'agents') =="
key2=$(build/paygent admin create-product --backend "$url" --admin-token "$token" --name agents)
build/paygent agents apply scripts/demo-agents.json --url "$url" --key "$key2"
build/paygent agents apply scripts/demo-agents.json --url "$url" --key "$key2"  # again: nothing changes
build/paygent demo revenue --backend "$url" --api-key "$key2"
echo
build/paygent report profit --from 2026-11-01 --to 2026-12-01 --by agent --url "$url" --key "$key2"

if [[ "${1:-}" == "--serve" ]]; then
  echo
  echo "== The dashboard: $url/dashboard#overview?from=2026-11-01&to=2026-12-01&by=day"
  echo "   sign in with $key   (the \$49 Pro-plan month)"
  echo "   or with      $key2   (agents, revenue and profit)"
  echo "   paygentd keeps running until Ctrl-C."
  wait "$pid"
fi

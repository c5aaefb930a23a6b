#!/usr/bin/env bash
# paygent-proxy built with GCC's profile-guided optimization, in build-pgo/ (its own build
# directory; build/ is left alone):
#   1. an instrumented build (-DPAYGENT_PGO=generate) of paygent-proxy and of its benchmark;
#   2. the training: bench/proxy_bench.cpp's workload against that paygent-proxy as a process of its
#      own (JSON and streamed chat completions through its upstream pool, every call metered, 1
#      then 50 clients, streams on new connections), on loopback against the benchmark's fake
#      provider; the run checks every call was answered and metered exactly, as always;
#   3. the same directory rebuilt with the counts the training left (-DPAYGENT_PGO=use), and the
#      result checked and timed by the same benchmark (rebuilt with the profile too).
# The result: build-pgo/proxy/paygent-proxy. Why: after an idle spell the proxy's request path runs
# from cold caches, and the profile lays out the code that path runs together, apart from the rest;
# the first byte of a stream then comes ~20 us sooner (docs/proxy.md, "Speed"). Code the training
# does not run (the other providers' routes, error paths) is optimized as without a profile.
# About twice a build's time (~11 minutes on 2 cores).
#   bash scripts/build-pgo.sh [training_requests_per_client=500]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=${PAYGENT_JOBS:-2}
dir=build-pgo
requests=${1:-500}
common=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" -DPAYGENT_BUILD_TESTS=OFF)
start=$SECONDS

echo "== 1/3 instrumented build ($dir, PAYGENT_PGO=generate)"
cmake -S . -B "$dir" "${common[@]}" -DPAYGENT_PGO=generate >/dev/null
cmake --build "$dir" -j"$jobs" --target paygent_proxy paygent_proxy_bench
# Counts left by an earlier training (of other sources, or added to by every run since) would be
# merged into this one's: start from none.
find "$dir" -name '*.gcda' -delete

echo "== 2/3 training ($requests requests per client; $((SECONDS - start)) s so far)"
# The benchmark stops the proxy process with SIGTERM: it exits normally and writes its counts.
"$dir/bench/paygent_proxy_bench" "$requests" "proxy process" >"$dir/pgo-training.log" 2>&1 || {
  cat "$dir/pgo-training.log"
  echo "build-pgo: the training run failed (above): no profile to build with" >&2
  exit 1
}
tail -n 1 "$dir/pgo-training.log"
profiles=$(find "$dir" -name '*.gcda' | wc -l)
if [ "$profiles" -eq 0 ]; then
  echo "build-pgo: the training left no .gcda counts in $dir" >&2
  exit 1
fi

echo "== 3/3 optimized build with the profile ($profiles object files counted; $((SECONDS - start)) s so far)"
cmake -S . -B "$dir" "${common[@]}" -DPAYGENT_PGO=use >/dev/null
cmake --build "$dir" -j"$jobs" --target paygent_proxy paygent_proxy_bench
"$dir/bench/paygent_proxy_bench" 200 "proxy process" | grep -E "^proxy process|^checked"
echo "build-pgo: $dir/proxy/paygent-proxy ($((SECONDS - start)) s)"

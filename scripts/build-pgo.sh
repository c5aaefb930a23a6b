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
# its gap to nginx's shrinks by ~13 us, and the 50-client latency ratio from ~1.3 to ~1.15
# (docs/proxy.md, "Speed"). Code the training does not run (the other providers' routes, TLS
# upstreams, error paths) is optimized as without a profile. About twice a build's time (~4.5
# minutes on 2 cores). After the sources change, run the script again: build-pgo/ is left at
# "use" with the counts of the sources it trained on, which GCC refuses for a changed function.
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
# The bench's switches are cleared: the training is of this build's proxy, on the usual workload.
bench=(env -u PAYGENT_PROXY_BENCH_BINARY -u PAYGENT_PROXY_BENCH_WARM_STREAMS -u PAYGENT_PROXY_BENCH_UNMETERED_STREAMS
       -u PAYGENT_PROXY_BENCH_THREADS -u PAYGENT_PROXY_BENCH_REUSE_PORT "$dir/bench/paygent_proxy_bench")
"${bench[@]}" "$requests" "proxy process" >"$dir/pgo-training.log" 2>&1 || {
  cat "$dir/pgo-training.log"
  echo "build-pgo: the training run failed (above): no profile to build with" >&2
  exit 1
}
tail -n 1 "$dir/pgo-training.log"
profiles=$(find "$dir" -name '*.gcda' | wc -l)
# The proxy process's own counts (its main() is in no other program): the training reached it.
if ! grep -q '^proxy process' "$dir/pgo-training.log" ||
   [ ! -f "$dir/proxy/CMakeFiles/paygent_proxy.dir/main.cpp.gcda" ]; then
  cat "$dir/pgo-training.log"
  echo "build-pgo: the training did not run $dir/proxy/paygent-proxy (no counts of its main.cpp)" >&2
  exit 1
fi

echo "== 3/3 optimized build with the profile ($profiles object files counted; $((SECONDS - start)) s so far)"
cmake -S . -B "$dir" "${common[@]}" -DPAYGENT_PGO=use >/dev/null
cmake --build "$dir" -j"$jobs" --target paygent_proxy paygent_proxy_bench
"${bench[@]}" 200 "proxy process" | grep -E "^proxy process|^checked"
echo "build-pgo: $dir/proxy/paygent-proxy ($((SECONDS - start)) s)"

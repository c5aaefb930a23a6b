#!/usr/bin/env bash
# The test suite: the product built as shipped (RelWithDebInfo) with the engine's suites and the
# multi-process integration tests run there, the library's, paygentd's and the proxy's suites
# under ASan+UBSan, then the guard's suite under TSan (-O2). Exits non-zero on the first failure.
#
# Each suite is compiled for the runs it needs, not for all three (compiling every suite twice,
# optimised and under the sanitizers, was a third of the time):
# - meter, plan, billing (the money arithmetic): optimised, as shipped, and under ASan+UBSan.
# - guard (the gate, reservations, the syncer): under ASan+UBSan, and at -O2 under TSan.
# - server (paygentd in process and as a process, SQLite and PostgreSQL) and proxy: ASan+UBSan.
# - integration (application processes, paygentd replicas, PostgreSQL, kill -9, the browser
#   dashboard): optimised, as shipped. Under ASan they took a third of its test time (one test
#   81 s), and the processes they drive run ASan-instrumented in the server suite already.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=2

# Each stage says how long the one before it took, and the run ends with the whole time.
stage_name="" stage_start=$SECONDS run_start=$SECONDS
stage() {
  if [ -n "$stage_name" ]; then echo "   ($stage_name: $((SECONDS - stage_start)) s)"; fi
  stage_name="$1" stage_start=$SECONDS
  [ -z "$1" ] || echo "== $1"
}

# -g1 (line tables: sanitizer reports and backtraces still name functions, files and lines)
# instead of -g: the full debug info of Beast's templates is a quarter to a third of the build's
# time (server/http_server.cpp: 49 s at -O2 -g, 32 s at -O2 -g1; 70 s / 52 s under ASan at -O0).
g1_release=(-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG")
# gold (binutils, installed with the compiler) instead of the default bfd linker: 21 programs
# and suites are linked per build; relinking server_tests took 2.8 s with bfd, 1.6 s with gold.
gold=(-DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=gold -DCMAKE_SHARED_LINKER_FLAGS=-fuse-ld=gold)

stage "build (RelWithDebInfo: the programs, the benchmarks), the engine's and integration suites"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo "${g1_release[@]}" "${gold[@]}" -DPAYGENT_TEST_SUITES="meter;plan;billing;integration" >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs") | tee build/ctest.log

stage "paygent demo (the main job must keep working)"
build/paygent demo >/dev/null

stage "a consumer project built against the installed package"
prefix=$(mktemp -d)
cmake --install build --prefix "$prefix" >/dev/null
cmake -S tests/consumer -B "$prefix/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer-build" -j"$jobs" >/dev/null
"$prefix/consumer-build/consumer"
"$prefix/bin/paygent" help >/dev/null   # the command the README uses is installed too
test -x "$prefix/bin/paygentd"
rm -rf "$prefix"

stage "packaging: pkg-config, version check, shared build, paygentd --check-config, .deb, unit"
bash scripts/test-packaging.sh build

stage "ASan + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-g1 "${gold[@]}" -DPAYGENT_SANITIZE=address,undefined \
  -DPAYGENT_BUILD_BENCH=OFF -DPAYGENT_BUILD_TOOLS=OFF -DPAYGENT_TEST_SUITES="meter;plan;billing;guard;server;proxy" >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j"$jobs") |
  tee build-asan/ctest.log

stage "TSan (the guard's suite)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo "${g1_release[@]}" "${gold[@]}" -DPAYGENT_SANITIZE=thread \
  -DPAYGENT_BUILD_BENCH=OFF -DPAYGENT_BUILD_TOOLS=OFF >/dev/null
cmake --build build-tsan --target guard_tests -j"$jobs"
# TSan maps memory at fixed addresses; some kernels' high mmap randomisation breaks that, so run
# without address randomisation when setarch can (it is part of util-linux).
run=()
if setarch "$(uname -m)" -R true 2>/dev/null; then run=(setarch "$(uname -m)" -R); fi
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "${run[@]}" build-tsan/tests/guard_tests | tee build-tsan/doctest.log

stage ""
echo "test.sh: $((SECONDS - run_start)) s in all"
# One closing line for all three runs (set -o pipefail has already stopped us on any failure).
# ctest counts a skipped test (the ../shared conformance pass, when ../shared is absent) among
# "out of N": count those apart.
ran=$(( $(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' build/ctest.log) +
        $(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' build-asan/ctest.log) ))
skipped=$(cat build/ctest.log build-asan/ctest.log | grep -c '\*\*\*Skipped' || true)
passed=$(( ran - skipped +
           $(sed -n 's/^\[doctest\] test cases: *\([0-9]*\) | *\([0-9]*\) passed.*/\2/p' build-tsan/doctest.log) ))
if ((skipped)); then
  echo "test.sh: $skipped tests skipped (each printed its reason: no ../shared/fixtures beside this clone, or no PostgreSQL)"
fi
echo "test.sh: all three runs green (RelWithDebInfo, ASan+UBSan, TSan)"
echo "$passed passed, 0 failed, $skipped skipped"


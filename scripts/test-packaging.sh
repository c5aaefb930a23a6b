#!/usr/bin/env bash
# The installed package, as its users meet it (issue 13, Packaging):
#   1. a consumer built with `pkg-config --cflags --libs paygent` against `cmake --install`;
#   2. find_package(paygent X) accepting and refusing versions as paygentConfigVersion.cmake says;
#   3. a shared build (BUILD_SHARED_LIBS=ON, the libraries only) that the consumer links and runs
#      against, through CMake and through pkg-config;
#   4. `paygentd --check-config`: exit 0 on a good setup, 1 naming every problem of a bad one;
#   5. the .deb (`cpack -G DEB`): its files, Depends and maintainer scripts; its unit accepted by
#      `systemd-analyze verify` (skipped, saying why, without systemd-analyze); and the unit's own
#      command lines (ExecStartPre, ExecStart) run from the unpacked package with its env file,
#      serving, then stopping on SIGTERM with status 0 (a container has no systemd to start it).
# Usage: scripts/test-packaging.sh [BUILD_DIR]   (default build/, configured and fully built:
# cpack installs from it). Exits non-zero on the first failure. ~1-2 minutes on 2 cores.
set -euo pipefail
# True when the command `$2...` succeeds and its output matches `$1`. Not `cmd | grep -q`: grep -q
# exits at its first match, the command may then die of SIGPIPE, and pipefail reports that as a
# failure (it did: "the pkg-config consumer does not load the installed libpaygent.so", from ldd).
output_has() {
  local pattern=$1 out
  shift
  out=$("$@") || return 1
  grep -q -- "$pattern" <<<"$out"
}
cd "$(dirname "$0")/.."
build=$(realpath "${1:-build}")
jobs=2
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test-packaging: FAIL: $*" >&2; exit 1; }
step_start=$SECONDS
step() { echo "-- $1 (at $((SECONDS - step_start)) s)"; }
version=$(sed -n 's/^project(paygent VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
minor=${version%.*}  # 0.1

step "1. pkg-config consumer (static libraries)"
prefix="$work/static"
cmake --install "$build" --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion paygent)" = "$version" ] || fail "pkg-config --modversion paygent is not $version"
# shellcheck disable=SC2046  # pkg-config's flags are words
g++ -std=c++20 tests/consumer/main.cpp -o "$work/consumer-pc" $(pkg-config --cflags --libs paygent)
output_has "hard gate" "$work/consumer-pc" || fail "the pkg-config consumer did not meet its hard gate"

step "2. find_package(paygent VERSION): accepts $minor and $version, refuses others"
for wanted in "$minor" "$version" 0.0 0.$((${minor#*.} + 1)) 1.0; do
  expect=refuse
  if [ "$wanted" = "$minor" ] || [ "$wanted" = "$version" ]; then expect=accept; fi
  log="$work/find-$wanted.log"
  if cmake -S tests/consumer -B "$work/find-$wanted" -DCMAKE_PREFIX_PATH="$prefix" \
       -DPAYGENT_WANTED_VERSION="$wanted" >"$log" 2>&1; then got=accept; else got=refuse; fi
  [ "$got" = "$expect" ] || { cat "$log"; fail "find_package(paygent $wanted) should $expect $version"; }
  if [ "$got" = refuse ]; then
    grep -q "paygent" "$log" && grep -q "$version" "$log" || { cat "$log"; fail "refusal of $wanted names no version"; }
  fi
  rm -rf "$work/find-$wanted"
done

step "3. shared libraries (BUILD_SHARED_LIBS=ON): build, install, link, run"
shared_build="$build-shared"
# -O0 without -g: this build checks linking and loading, and compiles in half the time.
cmake -S . -B "$shared_build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0 -DBUILD_SHARED_LIBS=ON -DPAYGENT_BUILD_TESTS=OFF \
  -DPAYGENT_BUILD_BENCH=OFF -DPAYGENT_BUILD_TOOLS=OFF -DPAYGENT_BUILD_SERVER=OFF -DPAYGENT_BUILD_PROXY=OFF >/dev/null
cmake --build "$shared_build" -j"$jobs" >/dev/null
shared="$work/shared"
cmake --install "$shared_build" --prefix "$shared" >/dev/null
for lib in paygent paygent_plan paygent_meter paygent_event paygent_decimal; do
  [ -f "$shared/lib/lib$lib.so.$version" ] || fail "lib$lib.so.$version is not installed"
  [ "$(readlink "$shared/lib/lib$lib.so")" = "lib$lib.so.$minor" ] || fail "lib$lib.so does not point at its soname"
  output_has "SONAME.*\[lib$lib.so.$minor\]" readelf -d "$shared/lib/lib$lib.so.$version" ||
    fail "lib$lib.so.$version has no SONAME lib$lib.so.$minor"
done
[ -z "$(ls "$shared"/lib/*.a 2>/dev/null)" ] || fail "a shared build installed static libraries"
grep -q '^Requires.private: simdjson' "$shared/lib/pkgconfig/paygent.pc" || fail "shared paygent.pc has no Requires.private"
cmake -S tests/consumer -B "$work/consumer-shared" -DCMAKE_PREFIX_PATH="$shared" >/dev/null
cmake --build "$work/consumer-shared" >/dev/null
output_has "NEEDED.*libpaygent.so.$minor" readelf -d "$work/consumer-shared/consumer" ||
  fail "the CMake consumer does not link libpaygent.so.$minor"
output_has "hard gate" "$work/consumer-shared/consumer" || fail "the shared CMake consumer failed"
# shellcheck disable=SC2046
g++ -std=c++20 tests/consumer/main.cpp -o "$work/consumer-pc-shared" \
  $(PKG_CONFIG_PATH="$shared/lib/pkgconfig" pkg-config --cflags --libs paygent)
output_has "hard gate" env LD_LIBRARY_PATH="$shared/lib" "$work/consumer-pc-shared" || fail "the shared pkg-config consumer failed"
output_has "libpaygent.so.$minor => $shared/lib" env LD_LIBRARY_PATH="$shared/lib" ldd "$work/consumer-pc-shared" ||
  fail "the pkg-config consumer does not load the installed libpaygent.so.$minor"

step "4. paygentd --check-config"
paygentd="$prefix/bin/paygentd"
out=$("$paygentd" --check-config --data-dir "$work/data-ok" --listen 127.0.0.1:0 --admin-token 0123456789abcdef0123)
grep -q "configuration OK" <<<"$out" || fail "--check-config refused a good setup: $out"
[ ! -e "$work/data-ok" ] || fail "--check-config created the data dir"
touch "$work/not-a-dir"
status=0
out=$(PAYGENTD_ADMIN_TOKEN='short token' "$paygentd" --check-config --data-dir "$work/not-a-dir/data" \
        --listen 127.0.0.1:70000 --threads many --secure-cookies maybe 2>&1) || status=$?
[ "$status" = 1 ] || fail "--check-config on a bad setup exited $status, not 1: $out"
for problem in "--data-dir: $work/not-a-dir/data" "--listen must be HOST:PORT" "--threads must be" \
               "--admin-token (PAYGENTD_ADMIN_TOKEN) has a character" "--admin-token (PAYGENTD_ADMIN_TOKEN) is 11 characters" \
               "--secure-cookies must be yes or no"; do
  grep -qF -- "$problem" <<<"$out" || fail "--check-config did not name \"$problem\": $out"
done
grep -q "short token" <<<"$out" && fail "--check-config printed the admin token"
status=0
out=$("$paygentd" --check-config --database 'postgresql://paygent@localhost:5432/paygent?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem' \
        --listen no-such-host.invalid:8080 2>&1) || status=$?
[ "$status" = 1 ] || fail "--check-config on a bad database exited $status, not 1: $out"
if output_has "--database URI" "$paygentd" --help; then
  grep -qE -- "--database: (sslrootcert /nonexistent/ca.pem is not readable|this paygentd was built without PostgreSQL)" <<<"$out" ||
    fail "--check-config did not name the unreadable sslrootcert: $out"
fi
grep -qF -- '--listen: cannot resolve "no-such-host.invalid"' <<<"$out" || fail "--check-config did not name the host: $out"

step "5. the .deb (cpack -G DEB)"
(cd "$build" && cpack -G DEB -B "$work/deb" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; fail "cpack -G DEB failed"; }
deb=$(ls "$work"/deb/paygent_"$version"_*.deb)
dpkg-deb -c "$deb" >"$work/deb-listing"
awk '{print $NF}' "$work/deb-listing" >"$work/deb-files"
for file in ./usr/bin/paygent ./usr/bin/paygentd ./usr/lib/systemd/system/paygentd.service ./etc/default/paygentd \
            ./usr/lib/pkgconfig/paygent.pc ./usr/lib/cmake/paygent/paygentConfigVersion.cmake \
            ./usr/lib/libpaygent.a ./usr/include/paygent/paygent.h; do
  grep -qxF "$file" "$work/deb-files" || fail ".deb lacks $file"
done
grep -q -- "^-rw------- root/root .* ./etc/default/paygentd$" "$work/deb-listing" || fail "the env file is not 0600 root"
depends=$(dpkg-deb -f "$deb" Depends)
for dependency in adduser libabsl libsimdjson libsqlite3 libssl3 libc6; do
  grep -q "$dependency" <<<"$depends" || fail "Depends lacks $dependency: $depends"
done
dpkg-deb -e "$deb" "$work/control"
grep -qxF /etc/default/paygentd "$work/control/conffiles" || fail "the env file is not a conffile"
for script in postinst prerm postrm; do
  [ -x "$work/control/$script" ] || fail ".deb has no $script"
  sh -n "$work/control/$script" || fail "$script is not valid sh"
done
grep -q "adduser --system" "$work/control/postinst" || fail "postinst does not create the paygentd user"
root="$work/root"
dpkg-deb -x "$deb" "$root"
unit="$root/usr/lib/systemd/system/paygentd.service"
for line in "User=paygentd" "StateDirectory=paygentd" "Restart=on-failure" "KillSignal=SIGTERM" \
            "EnvironmentFile=-/etc/default/paygentd" "ExecStart=/usr/bin/paygentd \$PAYGENTD_OPTS"; do
  grep -qxF "$line" "$unit" || fail "the unit lacks $line"
done
grep -qxF "PAYGENTD_DATA_DIR=/var/lib/paygentd" "$root/etc/default/paygentd" || fail "the env file has no data dir"
# The unit, its paths moved into the unpacked package (verify checks that ExecStart exists).
sed "s|/usr/bin/paygentd|$root/usr/bin/paygentd|g; s|/etc/default/paygentd|$root/etc/default/paygentd|g" \
  "$unit" >"$work/paygentd.service"
if command -v systemd-analyze >/dev/null; then
  # verify exits 0 on an unknown key or a bad value (it only warns): any output is a failure.
  verify=$(systemd-analyze verify "$work/paygentd.service" 2>&1) || fail "systemd-analyze verify: $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
  cp "$prefix/lib/systemd/system/paygentd.service" "$work/prefix-paygentd.service"
  verify=$(systemd-analyze verify "$work/prefix-paygentd.service" 2>&1) || fail "verify (cmake --install's unit): $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify warns on cmake --install's unit: $verify"
  exposure=$(systemd-analyze security --offline=true "$work/paygentd.service" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
  echo "   systemd-analyze verify: the unit is accepted; security exposure $exposure (0 best, 10 worst)"
else
  echo "   skipped systemd-analyze verify: no systemd-analyze here (apt-get install systemd)"
fi
# The unit's command lines, as systemd would run them, with the env file the package installs
# (its data dir and port moved to this test's).
pre=$(sed -n 's/^ExecStartPre=//p' "$work/paygentd.service")
start=$(sed -n 's/^ExecStart=//p' "$work/paygentd.service")
packaged_env() {
  set -a
  # shellcheck disable=SC1091
  . "$root/etc/default/paygentd"
  set +a
  export PAYGENTD_DATA_DIR="$work/var-lib-paygentd" PAYGENTD_LISTEN=127.0.0.1:0 PAYGENTD_ADMIN_TOKEN=0123456789abcdef0123
}
(packaged_env && ${pre//\$PAYGENTD_OPTS/$PAYGENTD_OPTS} >/dev/null) || fail "the unit's ExecStartPre refused the packaged settings"
(packaged_env && exec ${start//\$PAYGENTD_OPTS/$PAYGENTD_OPTS}) >"$work/paygentd.out" 2>"$work/paygentd.err" &
pid=$!
pids+=("$pid")
for _ in $(seq 100); do
  grep -q "listening on" "$work/paygentd.out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/paygentd.err"; fail "packaged paygentd exited at start"; }
  sleep 0.1
done
address=$(sed -n 's/^paygentd listening on //p' "$work/paygentd.out")
[ -n "$address" ] || fail "packaged paygentd did not listen"
exec 3<>"/dev/tcp/${address%:*}/${address##*:}"
printf 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
grep -q "200" <<<"$(head -1 <&3)" || fail "packaged paygentd did not answer /healthz"
exec 3<&-
# While it runs, --check-config names its port and still passes on its data dir.
status=0
out=$("$root/usr/bin/paygentd" --check-config --data-dir "$work/var-lib-paygentd" --listen "$address" 2>&1) || status=$?
[ "$status" = 1 ] && grep -qF -- "--listen: $address is in use" <<<"$out" || fail "--check-config missed the port in use: $out"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" = 0 ] || fail "packaged paygentd exited $status on SIGTERM (the unit's stop), not 0"
grep -q "stopped cleanly" "$work/paygentd.err" || fail "packaged paygentd did not stop cleanly"
echo "test-packaging: all green in $((SECONDS - step_start)) s ($(du -h "$deb" | cut -f1) .deb)"

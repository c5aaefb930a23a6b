#!/usr/bin/env bash
# Installs what Paygent builds and tests with, from Debian 12's packages. Safe to run again.
# libpq-dev: paygentd's PostgreSQL storage. postgresql-15: the server programs (initdb, postgres,
# under /usr/lib/postgresql/15/bin) that the PostgreSQL tests start on their own, as an
# unprivileged user on a loopback port in a temporary directory
# (tests/support/postgres_process.h). Debian may also create and start a "main" cluster on port
# 5432 when it installs the server; the tests neither use nor touch it.
# openssl: the command makes the throwaway certificates of the TLS tests (paygent-proxy's upstream,
# paygentd's https:// webhook receivers); ca-certificates: the trust store TLS clients verify with.
# dpkg-dev, file: `cpack -G DEB` computes Depends with dpkg-shlibdeps. systemd: only for
# `systemd-analyze verify` of paygentd's unit (scripts/test-packaging.sh); it installs in a
# container too, where it is not PID 1 and starts nothing.
# nodejs npm: paygent-proxy's end-to-end test with the official OpenAI and Anthropic Node SDKs
# (tests/proxy/e2e/run_e2e.sh; skipped without them). Optional: a machine that already has node
# and npm (say NodeSource's nodejs, which bundles npm and conflicts with Debian's) keeps its own,
# and a failed install of them only skips that test.
# chromium: the dashboard's browser test (tests/dashboard/run_browser.sh, driven through the
# playwright-core npm package); optional like node, and its test is skipped without it.
set -euo pipefail
packages=(build-essential cmake pkg-config libsimdjson-dev libabsl-dev libboost-dev doctest-dev
          libsqlite3-dev libssl-dev libbenchmark-dev libpq-dev postgresql-15
          dpkg-dev file systemd openssl ca-certificates)
# Each optional group installs on its own: one that fails skips only its own test.
optional=()
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || optional+=("nodejs npm")
[ -x /usr/bin/chromium ] || optional+=("chromium")
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
updated=0

# apt-get install of `$@`; its output (the server's maintainer scripts talk on stderr, e.g.
# "invoke-rc.d: could not determine current runlevel" where systemd is not running) is shown only
# when it fails.
install() {
  if ((updated == 0)); then
    $sudo_cmd apt-get update -qq
    updated=1
  fi
  local log status=0
  log=$(mktemp)
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >"$log" 2>&1 || status=$?
  ((status == 0)) || cat "$log" >&2
  rm -f "$log"
  return "$status"
}

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  install "${missing[@]}"
fi
for group in "${optional[@]}"; do
  echo "installing (optional): $group"
  # shellcheck disable=SC2086  # a group is a list of package names
  install $group || echo "install-deps: could not install $group; the tests that need it will be skipped" >&2
done

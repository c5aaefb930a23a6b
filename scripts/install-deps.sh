#!/usr/bin/env bash
# Installs what Paygent builds and tests with, from Debian 12's packages. Safe to run again.
# libpq-dev: paygentd's PostgreSQL storage. postgresql-15: the server programs (initdb, postgres,
# under /usr/lib/postgresql/15/bin) that the PostgreSQL tests start on their own, as an
# unprivileged user on a loopback port in a temporary directory
# (tests/support/postgres_process.h). Debian may also create and start a "main" cluster on port
# 5432 when it installs the server; the tests neither use nor touch it.
# dpkg-dev, file: `cpack -G DEB` computes Depends with dpkg-shlibdeps. systemd: only for
# `systemd-analyze verify` of paygentd's unit (scripts/test-packaging.sh); it installs in a
# container too, where it is not PID 1 and starts nothing.
# nodejs npm: paygent-proxy's end-to-end test with the official OpenAI and Anthropic Node SDKs
# (tests/proxy/e2e/run_e2e.sh; skipped without them).
set -euo pipefail
packages=(build-essential cmake pkg-config libsimdjson-dev libabsl-dev libboost-dev doctest-dev
          libsqlite3-dev libssl-dev libbenchmark-dev libpq-dev postgresql-15
          dpkg-dev file systemd nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # The server's maintainer scripts talk on stderr (e.g. "invoke-rc.d: could not determine current
  # runlevel" where systemd is not running): shown only when the install fails.
  log=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi

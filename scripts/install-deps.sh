#!/usr/bin/env bash
# Installs what Paygent builds and tests with, from Debian 12's packages. Safe to run again.
set -euo pipefail
packages=(build-essential cmake pkg-config libsimdjson-dev libabsl-dev libboost-dev doctest-dev
          libsqlite3-dev libssl-dev libbenchmark-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Installs the Debian packages myriad needs to build, run and test, when they
# are missing. As root it runs apt-get; otherwise it prints the exact command
# and fails, so nothing half-works.
set -euo pipefail

# build and run
PKGS=(gcc make pkg-config libc6-dev)
# libraries: PostgreSQL client, SQLite, Redis client, libsodium (password
# hashing), jansson (JSON parsing), zlib (WebSocket permessage-deflate)
PKGS+=(libpq-dev libsqlite3-dev libhiredis-dev libsodium-dev libjansson-dev zlib1g-dev)
# servers the tests start on free ports in temp dirs (never as services)
PKGS+=(postgresql redis-server sqlite3)
# tests: unit (cmocka), sanitizer/fuzz builds (clang + its runtimes),
# end-to-end (python3 + pytest, curl), differential parser test (libhttp-parser)
PKGS+=(clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest curl libhttp-parser-dev)
# load tests
PKGS+=(wrk)
# WebSocket: the e2e test's real client is npm ws (tests/e2e/ws_client, npm ci from its
# lock file). A nodejs from elsewhere (NodeSource) bundles npm and conflicts with
# Debian's npm package: ask for that only when there is no npm command.
PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)
# worker threads: addr2line resolves the stall watchdog's backtraces (its e2e test)
PKGS+=(binutils)
# observability (src/obs): promtool (prometheus) checks /metrics, a headless chromium
# draws the dashboard, valgrind runs scripts/valgrind.sh, gnuplot draws bench/soak's figure
PKGS+=(prometheus chromium valgrind gnuplot-nox)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "myriad: missing Debian packages: ${missing[*]}" >&2
  echo "myriad: run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "myriad: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

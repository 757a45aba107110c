#!/usr/bin/env bash
# valgrind memcheck over an end-to-end subset (`make valgrind`).
#
#   scripts/valgrind.sh [BUILD_DIR] [pytest files...]
#
# Runs the chosen end-to-end tests (default: the subset below) against the
# binary in BUILD_DIR (default build/release) started under
#
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
#            --error-exitcode=1
#
# through a wrapper given to the tests as MYRIAD_BIN. Every process the
# server runs (supervisor and forked workers alike) writes its own report to
# a temporary directory. The run fails if a test fails (a server that exits
# non-zero fails its test) or if any report shows an error, or bytes
# definitely or indirectly lost. "Still reachable" memory (process-wide
# singletons) is not a leak and is not counted.
#
# The subset avoids tests that measure time tightly (timeouts, the cluster's
# restart timing, the browser): under valgrind the server runs 20-50 times
# slower.
set -euo pipefail
cd "$(dirname "$0")/.."

O=${1:-build/release}
shift || true
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  TESTS=(tests/e2e/test_basic.py tests/e2e/test_body.py tests/e2e/test_parser.py
         tests/e2e/test_metrics.py)
fi

if ! command -v valgrind >/dev/null; then
  echo "valgrind: not installed (apt-get install -y valgrind)" >&2
  exit 1
fi
bin=$(realpath "$O/myriad")
[ -x "$bin" ] || { echo "valgrind: no binary at $O/myriad (run make first)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/myriad-valgrind.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/reports"
cat > "$tmp/myriad" <<EOF
#!/bin/sh
exec valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \\
  --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \\
  --log-file="$tmp/reports/vg.%p.log" "$bin" "\$@"
EOF
chmod +x "$tmp/myriad"

echo "valgrind: ${TESTS[*]} against $bin"
status=0
MYRIAD_BIN="$tmp/myriad" /usr/bin/python3 -m pytest -q -p no:cacheprovider "${TESTS[@]}" \
  || status=$?

# Reports: any error, or a definite or indirect loss, fails the run.
bad=0
reports=0
for r in "$tmp"/reports/vg.*.log; do
  [ -e "$r" ] || continue
  reports=$((reports + 1))
  if grep -qE "ERROR SUMMARY: [1-9]|(definitely|indirectly) lost: [1-9]|are (definitely|indirectly) lost" "$r"; then
    echo "valgrind: errors in $(basename "$r"):" >&2
    cat "$r" >&2
    bad=$((bad + 1))
  elif grep -q . "$r"; then
    # --quiet prints only errors; anything else is worth seeing
    echo "valgrind: note from $(basename "$r"):" >&2
    head -40 "$r" >&2
  fi
done
echo "valgrind: $reports processes checked, $bad with errors or leaks; pytest exit $status"
[ "$status" -eq 0 ] && [ "$bad" -eq 0 ] && [ "$reports" -gt 0 ]

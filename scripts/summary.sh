#!/usr/bin/env bash
# Sums the closing lines of the test runners in the given logs (cmocka via
# scripts/run-unit.sh: "unit: N passed, N failed"; pytest: "N passed[, N
# failed][, N errors] in Ts") and prints one line: "total: N passed, N failed".
set -u
passed=0; failed=0
for log in "$@"; do
  while IFS= read -r line; do
    p=$(sed -n 's/.*\b\([0-9][0-9]*\) passed.*/\1/p' <<<"$line")
    f=$(sed -n 's/.*\b\([0-9][0-9]*\) failed.*/\1/p' <<<"$line")
    e=$(sed -n 's/.*\b\([0-9][0-9]*\) error.*/\1/p' <<<"$line")
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0}))
  done < <(grep -E '^(unit: [0-9]+ passed|=* ?[0-9]+ (passed|failed))|^[0-9]+ passed' "$log")
done
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

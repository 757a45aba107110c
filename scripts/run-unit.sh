#!/usr/bin/env bash
# Runs every unit-test binary given and prints one closing line:
#   unit: N passed, N failed
# A binary counts as one failed test per failing cmocka case (at least one
# if it crashed or printed no summary).
set -u
shift   # build dir, unused
passed=0; failed=0
for t in "$@"; do
  out=$("$t" 2>&1); rc=$?
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  if [ $rc -ne 0 ]; then printf '%s\n' "$out"; echo "FAILED: $t (exit $rc)"; fi
done
echo "unit: $passed passed, $failed failed"
[ $failed -eq 0 ]

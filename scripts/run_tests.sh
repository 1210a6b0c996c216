#!/usr/bin/env bash
# Runs the whole suite: ctest in the main build (Catch2 unit tests, pytest interop tests, GPU tests
# that skip without a GPU) and the core/quant unit tests again under AddressSanitizer. Ends with one
# summary line: "fp8rl: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
passed=0 failed=0 skipped=0 rc=0

run_ctest() {  # run_ctest BUILD_DIR [ctest args...]
  local dir=$1
  shift
  local log
  log=$(mktemp)
  (cd "$dir" && ctest --output-on-failure -j"$jobs" "$@") 2>&1 | tee "$log"
  local st=${PIPESTATUS[0]}
  local line total f s
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  f=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$line")
  s=$(grep -cE '^\s*[0-9]+ - .*\(Skipped\)' "$log")
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "run_tests: ctest in $dir printed no summary"
    rc=1
    failed=$((failed + 1))
    return
  fi
  passed=$((passed + total - f - s))
  failed=$((failed + f))
  skipped=$((skipped + s))
  [ "$st" -eq 0 ] || rc=1
}

echo "== ctest (build) =="
run_ctest build
echo "== ctest under AddressSanitizer (build-asan, labels core|quant) =="
run_ctest build-asan -L 'core|quant'

echo "fp8rl: $passed passed, $failed failed, $skipped skipped"
exit $rc

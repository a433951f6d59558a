#!/usr/bin/env bash
# Runs every test program and tallies their "ok - ..." / "not ok - ..." lines.
# A program that exits non-zero without printing a "not ok" line counts as one failure.
# Ends with the line "N passed, N failed" and exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/.."
PY=${TEST_PYTHON:-/usr/bin/python3}
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_test() { # name command...
    local name=$1
    shift
    echo "# $name"
    "$@" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    local p f
    p=$(grep -c '^ok' "$log")
    f=$(grep -c '^not ok' "$log")
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok - $name exited with status $status"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

run_test kernels ./tests/test_kernels
# the same tests built for an AVX2 CPU without AVX-512 (make builds it where the compiler can)
if [ -x tests/test_kernels_avx2 ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    run_test "kernels, AVX2 build" ./tests/test_kernels_avx2
fi
run_test tokenizer ./tests/test_tokenizer tokenizer.bin tests/tokenizer_fixture.txt
for t in tests/test_*.py; do
    run_test "$(basename "$t")" "$PY" "$t"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

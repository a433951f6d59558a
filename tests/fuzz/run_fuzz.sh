#!/usr/bin/env bash
# Builds the libFuzzer targets with ASan + UBSan and runs each for SECONDS (default 60).
#   tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]      TARGET: fuzz_model fuzz_tokenizer fuzz_tokenizer_file
# Exits non-zero if a target fails to build or finds a crash, a leak, a timeout or an out-of-memory;
# the input that did it is saved as tests/fuzz/build/artifacts/TARGET-crash-... (replay: build/TARGET FILE).
# New corpus entries go to tests/fuzz/build/corpus/TARGET (not committed); the committed seeds are read
# from tests/fuzz/seeds/{model,tokenizer,tokenizer_file}. Env: CLANG (default clang), FUZZ_CFLAGS (extra flags,
# e.g. -march=native to fuzz the FMA path).
set -u
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_model fuzz_tokenizer fuzz_tokenizer_file)
CLANG=${CLANG:-clang}
ROOT=$(cd ../.. && pwd)
BUILD=build
mkdir -p "$BUILD/artifacts"

# -max_len per target: models need ~1-4 KB to reach a valid tiny shape, tokenizer files ~1.5 KB,
# texts are pre-tokenized piece by piece, so 4 KB covers long pieces.
max_len() {
    case $1 in
        fuzz_model) echo 8192 ;;
        fuzz_tokenizer) echo 4096 ;;
        fuzz_tokenizer_file) echo 4096 ;;
    esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
for t in "${TARGETS[@]}"; do
    if [ ! -f "$t.c" ]; then
        echo "run_fuzz: no target $t" >&2
        status=1
        continue
    fi
    echo "== $t: build"
    if ! "$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -ffp-contract=off \
        -std=gnu11 -Wall -Wextra -Wno-unused-function -Wno-unknown-pragmas -Wno-psabi ${FUZZ_CFLAGS:-} \
        -DTOKENIZER_PATH="\"$ROOT/tokenizer.bin\"" "$t.c" -o "$BUILD/$t" -lm; then
        echo "not ok - fuzz $t: build failed"
        status=1
        continue
    fi
    mkdir -p "$BUILD/corpus/$t"
    echo "== $t: ${SECONDS_PER_TARGET}s"
    "./$BUILD/$t" -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t-" "$BUILD/corpus/$t" "seeds/${t#fuzz_}" \
        > "$BUILD/$t.log" 2>&1
    rc=$?
    grep -E '^(#[0-9]+.*(DONE|INITED)|stat::number_of_executed_units|stat::peak_rss_mb)' "$BUILD/$t.log" | tail -3
    if [ $rc -ne 0 ]; then
        echo "not ok - fuzz $t: exit status $rc; log: tests/fuzz/$BUILD/$t.log"
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written|^[a-z].*outside|decode\(encode' "$BUILD/$t.log" | head -10
        status=1
    else
        echo "ok - fuzz $t: ${SECONDS_PER_TARGET}s without a crash"
    fi
done
exit $status

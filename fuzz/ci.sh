#!/usr/bin/env bash
# A short fuzz run of every target on the stable toolchain, as CI runs it (scripts/test.sh).
#
#   bash fuzz/ci.sh                    # 30 s per target
#   FUZZ_SECS=900 bash fuzz/ci.sh      # a longer run with the same build
#
# `cargo fuzz` needs a nightly toolchain (for its `-Zsanitizer` flags), which a fresh CI
# machine does not have and cannot fetch. libFuzzer itself does not: this script gives rustc
# the same coverage instrumentation `cargo fuzz build --sanitizer none` gives (sancov
# counters, comparison tracing, `--cfg fuzzing`, debug assertions and overflow checks on),
# builds the targets with stable cargo for an explicit `--target` (so build scripts stay
# uninstrumented), and runs each binary against a scratch corpus seeded from the fixtures.
# Without AddressSanitizer this finds panics, overflows, aborts, timeouts and runaway memory,
# which is what a `#![forbid(unsafe_code)]` crate can get wrong; the longer nightly runs with
# ASan are in RELIABILITY.md. Exits non-zero on the first crash and leaves its input in
# $FUZZ_OUT/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SECS=${FUZZ_SECS:-30}
HOST=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
OUT=${FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/aibridge-fuzz.XXXXXX")}
TARGETS=(sse_decoder stream_observers request_parsers mcp_editors)

export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
cargo build --release --locked --target "$HOST" --target-dir "$TARGET_DIR" --bins

bash seed.sh >/dev/null
status=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
    log="$OUT/$t.log"
    # New inputs go to the scratch corpus (first directory); the seeds are only read.
    if "$TARGET_DIR/$HOST/release/$t" "$OUT/corpus/$t" "corpus/$t" \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
        -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t/" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n1)
        echo "fuzz $t: ${SECS} s, ${execs:-?} executions, ${cov:-cov: ?}, 0 crashes"
    else
        echo "fuzz $t: FAILED (crash or error); last lines of $log:" >&2
        tail -n 40 "$log" >&2
        ls -l "$OUT/artifacts/$t/" >&2 || true
        status=1
    fi
done
exit $status

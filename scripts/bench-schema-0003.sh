#!/usr/bin/env bash
# Not run in CI. The same gateway binary on two databases: one as migrated, one with migration
# 0003's per-row work (the daily-spend insert trigger, the response-id index) dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
build
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
start_mock
# migrate the second database first, then drop the per-row work of 0003
start_gateway "$BIN/gateway" prep
kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
sqlite3 "$WORK/prep.db" "DROP TRIGGER aibridge_token_usages_spend_insert; DROP INDEX aibridge_token_usages_response_idx;"
mv "$WORK/prep.db" "$WORK/before.db"; rm -f "$WORK"/prep.db-*
start_gateway "$BIN/gateway" before
B=$(aibridge_target before)
start_gateway "$BIN/gateway" gateway
taskset -c "$LOAD_CPU" "$BIN/load_driver" --mock-pid "$MOCK_PID" --secs "${SECS:-4}" --reps "${REPS:-3}" \
  --workloads "${WORKLOADS:-small,small-c64}" --target "$(direct_target)" --target "$(aibridge_target)" --target "$B"

#!/usr/bin/env bash
# The load benchmark of BENCHMARKS.md: every workload direct to the mock upstream and
# through the example gateway (release build, SQLite recorder on, AIBRIDGE_TOKENS set),
# alternating, in one run. Prints the machine, the method and the table (markdown).
#
#   scripts/bench.sh                                # all workloads, 3 × 5 s each
#   SECS=3 REPS=2 WORKLOADS=small,rate3000 scripts/bench.sh
#
# Environment: SECS, REPS, WORKLOADS (see `load_driver` without arguments), GW_CPU and
# LOAD_CPU (the cores for the gateway and for mock + driver), JOBS (cargo build jobs),
# BASELINE_GATEWAY (path to another gateway binary, e.g. one built before a change: it runs
# as a target "before", for before/after figures in one run), GW_POLICY and BASELINE_POLICY
# (an AIBRIDGE_POLICY file for this build's gateways and for the "before" one: the same
# binary as BASELINE_GATEWAY with GW_POLICY alone measures the policy stage), GW_WORKERS and
# BASELINE_WORKERS (AIBRIDGE_WORKER_THREADS, the same way), GW_RECORD and BASELINE_RECORD
# (AIBRIDGE_RECORD_INTERCEPTION: awaited or queued), NULL_PROXY=0 (leave out the
# do-nothing proxy, examples/null_proxy.rs, that shows the floor of any extra HTTP hop).
# Not run in CI: it takes minutes and its figures depend on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

WORKLOADS=${WORKLOADS:-small,cc100k,stream200,stream5000,rate3000,responses200,chat200,paced,mcp1,hold}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

build
start_mock
EXTRA=()
if [ -n "${BASELINE_GATEWAY:-}" ]; then
  start_gateway "$BASELINE_GATEWAY" before
  EXTRA+=(--target "$(aibridge_target before)")
fi
start_gateway
GW_MAIN=$GW GW_MAIN_PID=$GW_PID
if [[ ",$WORKLOADS," == *,mcp1,* ]]; then
  # A second gateway with the MCP server: it runs only the MCP loop workload.
  start_mcp_server
  start_gateway "$BIN/gateway" gateway-mcp "$MCP_URL"
  EXTRA+=(--target "$(aibridge_target aibridge-mcp mcp=1)")
  GW=$GW_MAIN GW_PID=$GW_MAIN_PID
fi
if [ "${NULL_PROXY:-1}" = 1 ]; then
  start_null_proxy
  EXTRA+=(--target "$(null_target)")
fi

echo "# aibridge load benchmark"
echo
machine
echo "- mock: $MOCK (pid $MOCK_PID); gateway: $GW (pid $GW_PID)"
echo
taskset -c "$LOAD_CPU" "$BIN/load_driver" --mock-pid "$MOCK_PID" --secs "$SECS" --reps "$REPS" \
  --workloads "$WORKLOADS" \
  --target "$(direct_target)" \
  --target "$(aibridge_target)" "${EXTRA[@]}"
echo
# Stop the gateway as an operator would (SIGTERM: graceful shutdown drains the record
# queue), then count what it recorded: every interception ended, none lost.
kill -TERM "$GW_MAIN_PID"
wait "$GW_MAIN_PID" || true
recorded_rows

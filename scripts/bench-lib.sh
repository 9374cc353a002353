# Shared by scripts/bench.sh and scripts/bench-peers.sh: build, start the mock and the
# gateway pinned to their cores, and clean up. Source it; do not run it.

SECS=${SECS:-5}
REPS=${REPS:-3}
GW_CPU=${GW_CPU:-0}     # the gateway (and peers) run here
LOAD_CPU=${LOAD_CPU:-1} # the mock and the driver run here
JOBS=${JOBS:-1}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aibridge-bench.XXXXXX")
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Waits for a line matching $2 (an ERE with one http://… URL) in file $1; prints the URL.
wait_url() {
  local file=$1 what=$2 i
  for i in $(seq 1 600); do
    if grep -Eq "$what" "$file" 2>/dev/null; then
      grep -Eo 'http://[0-9.:]+' "$file" | head -n1
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for: $what (see $file)" >&2
  cat "$file" >&2
  return 1
}

build() {
  # The gateway with the features of README's run command (SQLite/PostgreSQL, MCP).
  cargo build --release -j "$JOBS" --features sqlite,postgres,mcp --example gateway \
    --example mock_upstream --example load_driver --example null_proxy --example mcp_test_server >&2
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$TARGET_DIR/release/examples
}

machine() {
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- kernel: $(uname -r); $(rustc --version)"
  echo "- aibridge: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "- pinning: gateway/peers on CPU $GW_CPU; mock and driver on CPU $LOAD_CPU (taskset)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

start_mock() {
  MOCK_LISTEN=127.0.0.1:0 MOCK_THREADS=1 taskset -c "$LOAD_CPU" "$BIN/mock_upstream" \
    >"$WORK/mock.out" 2>"$WORK/mock.err" &
  MOCK_PID=$!
  PIDS+=("$MOCK_PID")
  MOCK=$(wait_url "$WORK/mock.out" 'mock upstream listening')
}

# The MCP server of the `mcp1` workload (examples/mcp_test_server.rs), on the load core:
# like the mock, it stands for the outside world.
start_mcp_server() {
  taskset -c "$LOAD_CPU" "$BIN/mcp_test_server" --listen 127.0.0.1:0 \
    >"$WORK/mcp.out" 2>"$WORK/mcp.err" &
  MCP_PID=$!
  PIDS+=("$MCP_PID")
  MCP_URL=$(wait_url "$WORK/mcp.out" 'mcp test server listening')/mcp
}

# start_gateway [BINARY [NAME [MCP-URL]]]: the gateway (default: this build's), pinned to
# GW_CPU; with an MCP URL it injects that server's tools as `bmcp_bench_*`.
start_gateway() {
  local bin=${1:-$BIN/gateway} name=${2:-gateway} mcp=${3:-}
  # A policy file (AIBRIDGE_POLICY) for this gateway: BASELINE_POLICY for the "before"
  # one, GW_POLICY for the others; none when unset.
  local policy=${GW_POLICY:-}
  [ "$name" = before ] && policy=${BASELINE_POLICY:-}
  # AIBRIDGE_WORKER_THREADS likewise: BASELINE_WORKERS for "before", GW_WORKERS for the others.
  local workers=${GW_WORKERS:-}
  [ "$name" = before ] && workers=${BASELINE_WORKERS:-}
  # AIBRIDGE_RECORD_INTERCEPTION likewise: BASELINE_RECORD for "before", GW_RECORD for the others.
  local record=${GW_RECORD:-}
  [ "$name" = before ] && record=${BASELINE_RECORD:-}
  env -i PATH="$PATH" HOME="$HOME" \
    ${mcp:+AIBRIDGE_MCP_SERVERS="bench=$mcp"} \
    ${policy:+AIBRIDGE_POLICY="$policy"} \
    ${workers:+AIBRIDGE_WORKER_THREADS="$workers"} \
    ${record:+AIBRIDGE_RECORD_INTERCEPTION="$record"} \
    AIBRIDGE_LISTEN=127.0.0.1:0 \
    AIBRIDGE_DATABASE_URL="${GW_DATABASE_URL:-sqlite://$WORK/$name.db?mode=rwc}" \
    AIBRIDGE_TOKENS=tok-bench:bench \
    ANTHROPIC_API_KEY=sk-ant-mock \
    OPENAI_API_KEY=sk-openai-mock \
    ANTHROPIC_BASE_URL="$MOCK" \
    OPENAI_BASE_URL="$MOCK/v1" \
    RUST_LOG=warn \
    taskset -c "$GW_CPU" "$bin" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  GW_PID=$!
  PIDS+=("$GW_PID")
  GW=$(wait_url "$WORK/$name.out" 'aibridge gateway listening')
}

# The do-nothing proxy (examples/null_proxy.rs), pinned like the gateway: the floor.
start_null_proxy() {
  NULL_PROXY_LISTEN=127.0.0.1:0 NULL_PROXY_UPSTREAM="$MOCK" taskset -c "$GW_CPU" \
    "$BIN/null_proxy" >"$WORK/null.out" 2>"$WORK/null.err" &
  NULL_PID=$!
  PIDS+=("$NULL_PID")
  NULL=$(wait_url "$WORK/null.out" 'null proxy listening')
}

null_target() {
  echo "name=null-proxy,anthropic=$NULL,openai=$NULL/v1,pid=$NULL_PID"
}

direct_target() {
  echo "name=direct,anthropic=$MOCK,openai=$MOCK/v1,pid=$MOCK_PID"
}

# aibridge_target [NAME [EXTRA]]: the target spec of the gateway started last.
aibridge_target() {
  echo "name=${1:-aibridge},${2:+$2,}anthropic=$GW/api/v2/aibridge/anthropic,openai=$GW/api/v2/aibridge/openai/v1,pid=$GW_PID,header=authorization:Bearer tok-bench,metrics=$GW/metrics"
}

# Rows recorded by the gateway, as a check that the recorder was on.
recorded_rows() {
  python3 - "$WORK/${1:-gateway}.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
q = lambda t: db.execute(f"select count(*) from {t}").fetchone()[0]
print(f"- recorded by the gateway: {q('aibridge_interceptions')} interceptions "
      f"({db.execute('select count(*) from aibridge_interceptions where ended_at is not null').fetchone()[0]} ended), "
      f"{q('aibridge_token_usages')} token usages, {q('aibridge_user_prompts')} prompts")
PY
}

#!/usr/bin/env bash
# Peers side by side (BENCHMARKS.md, not CI): the workloads of scripts/bench.sh, direct,
# through aibridge, through Portkey's gateway (npm @portkey-ai/gateway) and through the
# LiteLLM proxy (PyPI litellm[proxy], without a database), all against the same mock and
# alternating in one run. The peers are installed into a cache directory outside the repo
# (PEERS_DIR, default ~/.cache/aibridge-bench-peers) on first use.
#
#   scripts/bench-peers.sh
#   PEERS=portkey WORKLOADS=small,rate3000 scripts/bench-peers.sh
#
# Environment: as scripts/bench.sh, plus PEERS (comma-separated: portkey,litellm),
# PORTKEY_VERSION and LITELLM_VERSION (pinned below), PEERS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

PORTKEY_VERSION=${PORTKEY_VERSION:-1.15.2}
LITELLM_VERSION=${LITELLM_VERSION:-1.106.12}
PEERS=${PEERS:-portkey,litellm}
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/aibridge-bench-peers}
# rate3000 last: a peer that cannot keep up leaves a backlog that it goes on working through
# on the shared core, which would slow every target of the workloads after it.
WORKLOADS=${WORKLOADS:-small,cc100k,stream200,stream5000,responses200,chat200,paced,rate3000}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() {
  local url=$1 i
  for i in $(seq 1 1200); do
    curl -fs -m 1 -o /dev/null "$url" && return 0
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2
  return 1
}

install_portkey() {
  local dir=$PEERS_DIR/portkey-$PORTKEY_VERSION
  if [ ! -f "$dir/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm init -y >/dev/null &&
      npm install --no-audit --no-fund "@portkey-ai/gateway@$PORTKEY_VERSION" >&2)
  fi
  PORTKEY_JS=$dir/node_modules/@portkey-ai/gateway/build/start-server.js
}

install_litellm() {
  local dir=$PEERS_DIR/litellm-$LITELLM_VERSION
  if [ ! -x "$dir/bin/litellm" ]; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" >&2
  fi
  LITELLM_BIN=$dir/bin/litellm
}

start_portkey() {
  local port
  port=$(free_port)
  NODE_ENV=production taskset -c "$GW_CPU" node "$PORTKEY_JS" --port="$port" --headless \
    >"$WORK/portkey.out" 2>&1 &
  PORTKEY_PID=$!
  PIDS+=("$PORTKEY_PID")
  PORTKEY=http://127.0.0.1:$port
  wait_http "$PORTKEY/"
}

start_litellm() {
  local port
  port=$(free_port)
  cat >"$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: "an/*"
    litellm_params:
      model: "anthropic/*"
      api_base: $MOCK
      api_key: sk-ant-mock
  - model_name: "oa/*"
    litellm_params:
      model: "openai/*"
      api_base: $MOCK/v1
      api_key: sk-openai-mock
general_settings:
  master_key: sk-litellm-bench
litellm_settings:
  turn_off_message_logging: true
YAML
  # Access logs off, as aibridge runs with RUST_LOG=warn.
  cat >"$WORK/litellm-log.yaml" <<'YAML'
version: 1
disable_existing_loggers: false
formatters:
  plain: {format: "%(levelname)s %(name)s %(message)s"}
handlers:
  err: {class: logging.StreamHandler, formatter: plain, stream: ext://sys.stderr}
loggers:
  uvicorn: {level: WARNING, handlers: [err]}
  uvicorn.error: {level: WARNING}
  uvicorn.access: {level: WARNING, handlers: [err], propagate: false}
YAML
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False LITELLM_LOG=ERROR \
    taskset -c "$GW_CPU" "$LITELLM_BIN" --config "$WORK/litellm.yaml" --host 127.0.0.1 \
    --port "$port" --num_workers 1 --log_config "$WORK/litellm-log.yaml" \
    >"$WORK/litellm.out" 2>&1 &
  LITELLM_PID=$!
  PIDS+=("$LITELLM_PID")
  LITELLM=http://127.0.0.1:$port
  wait_http "$LITELLM/health/liveliness"
}

build
TARGETS=()
start_mock
start_gateway
start_null_proxy
TARGETS+=(--target "$(direct_target)" --target "$(aibridge_target)" --target "$(null_target)")
STATUS=()
if [[ ",$PEERS," == *",portkey,"* ]]; then
  if install_portkey && start_portkey; then
    # Portkey picks the provider and the upstream base per request, from headers.
    TARGETS+=(--target "name=portkey,anthropic=$PORTKEY,openai=$PORTKEY/v1,pid=$PORTKEY_PID,header=authorization:Bearer sk-mock,aheader=x-portkey-provider:anthropic,aheader=x-portkey-custom-host:$MOCK/v1,aheader=x-api-key:sk-ant-mock,oheader=x-portkey-provider:openai,oheader=x-portkey-custom-host:$MOCK/v1")
    STATUS+=("- Portkey gateway @portkey-ai/gateway $PORTKEY_VERSION (node $(node --version), NODE_ENV=production, --headless): pid $PORTKEY_PID")
  else
    STATUS+=("- Portkey: could not be installed or started (see above)")
  fi
fi
if [[ ",$PEERS," == *",litellm,"* ]]; then
  if install_litellm && start_litellm; then
    TARGETS+=(--target "name=litellm,anthropic=$LITELLM,openai=$LITELLM/v1,pid=$LITELLM_PID,header=authorization:Bearer sk-litellm-bench,aprefix=an/,oprefix=oa/")
    STATUS+=("- LiteLLM proxy litellm[proxy]==$LITELLM_VERSION ($("$(dirname "$LITELLM_BIN")/python" --version), 1 uvicorn worker, no database, access log off): pid $LITELLM_PID")
  else
    STATUS+=("- LiteLLM: could not be installed or started (see above)")
  fi
fi

echo "# aibridge and peers"
echo
machine
printf '%s\n' "${STATUS[@]}"
echo
taskset -c "$LOAD_CPU" "$BIN/load_driver" --mock-pid "$MOCK_PID" --secs "$SECS" --reps "$REPS" \
  --workloads "$WORKLOADS" "${TARGETS[@]}"
echo
recorded_rows

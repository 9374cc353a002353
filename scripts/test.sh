#!/usr/bin/env bash
# Runs every test of the project:
#   1. cargo test --all-features        unit, integration and doc tests
#      + the 1-minute soak                 cargo run --example soak (exits non-zero on a failed check)
#   2. cargo build --all-features --example gateway --example mcp_test_server
#      the example gateway and the MCP test server used by the end-to-end tests
#      (and the gateway's own unit tests: cargo test --example gateway)
#   3. tests/e2e (pytest)               the official SDKs and Claude Code against the gateway,
#                                       in .venv (Claude Code from .e2e/node, install-deps.sh)
#   4. fuzz/ci.sh                       every fuzz target for FUZZ_SECS (default 30) seconds,
#                                       libFuzzer on the stable toolchain (FUZZ=0 skips it)
#
# Needs the Rust toolchain and python3 (3.11+) with venv support (Debian: python3-venv),
# PostgreSQL server binaries, Chromium and Claude Code (npm): `bash scripts/test.sh --install`
# installs them first.
# The Python packages come from tests/e2e/requirements.txt and are installed into .venv.
# Every step runs even if an earlier one failed (except the e2e tests, which need the
# gateway binary); the script prints a summary and exits non-zero if anything failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# `--install`: first install what the suite needs (scripts/install-deps.sh: python3-venv,
# PostgreSQL server binaries, Chromium, rustfmt/clippy, cargo-hack) on a fresh machine.
if [[ "${1:-}" == --install ]]; then
    bash scripts/install-deps.sh
fi

declare -a SUMMARY=()
FAILED=0

step() {
    printf '\n==> %s\n' "$*"
}

record() { # record NAME STATUS
    SUMMARY+=("$(printf '%-32s %s' "$1" "$2")")
    if [[ "$2" != ok ]]; then
        FAILED=1
    fi
}

print_summary() {
    printf '\n==> summary\n'
    for line in "${SUMMARY[@]}"; do
        printf '  %s\n' "$line"
    done
    if [[ $FAILED -eq 0 ]]; then
        printf 'all tests passed\n'
    else
        printf 'SOME TESTS FAILED\n'
    fi
}

# 1. Rust tests -------------------------------------------------------------------------------
step "cargo test --all-features"
if cargo test --all-features; then
    record "cargo test --all-features" ok
else
    record "cargo test --all-features" FAILED
fi

# 1b. Soak, the 1-minute variant (examples/soak.rs; the long run is in RELIABILITY.md) ----------
step "soak: 60 s, 200 concurrent streams (cargo run --example soak)"
if cargo run --all-features --example soak -- --duration 60 --concurrency 200; then
    record "soak (1 minute)" ok
else
    record "soak (1 minute)" FAILED
fi

# 2. The example gateway ----------------------------------------------------------------------
step "cargo test --all-features --example gateway"
if cargo test --all-features --example gateway; then
    record "cargo test --example gateway" ok
else
    record "cargo test --example gateway" FAILED
fi

# --all-features: the gateway needs sqlite and mcp (postgres for postgres:// URLs), and the
# same features as the steps above reuse their build of the library.
step "cargo build --all-features --example gateway --example mcp_test_server"
GATEWAY_BIN=""
MCP_SERVER_BIN=""
# The path of a built example, wherever the target directory is.
example_path() { # example_path NAME < cargo's JSON messages
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and target.get("name") == sys.argv[1] \
            and "example" in target.get("kind", []) and msg.get("executable"):
        print(msg["executable"])
' "$1"
}
if build_json=$(cargo build --all-features --example gateway --example mcp_test_server \
        --message-format=json-render-diagnostics); then
    GATEWAY_BIN=$(printf '%s\n' "$build_json" | example_path gateway)
    MCP_SERVER_BIN=$(printf '%s\n' "$build_json" | example_path mcp_test_server)
fi
if [[ -n "$GATEWAY_BIN" && -x "$GATEWAY_BIN" && -n "$MCP_SERVER_BIN" && -x "$MCP_SERVER_BIN" ]]; then
    record "cargo build --example gateway …" ok
    echo "gateway binary: $GATEWAY_BIN"
    echo "mcp test server binary: $MCP_SERVER_BIN"
else
    record "cargo build --example gateway …" FAILED
fi

# 3. End-to-end tests with the official SDKs --------------------------------------------------
step "python environment (.venv)"
venv_ok=1
if [[ ! -x .venv/bin/python || ! -x .venv/bin/pip ]]; then
    rm -rf .venv
    if ! python3 -m venv .venv; then
        echo "python3 -m venv failed; on Debian install python3-venv (apt-get install python3-venv)" >&2
        venv_ok=0
    fi
fi
if [[ $venv_ok -eq 1 ]] && ! .venv/bin/pip install -q --disable-pip-version-check \
        -r tests/e2e/requirements.txt; then
    venv_ok=0
fi
if [[ $venv_ok -eq 1 ]]; then
    record "python venv + requirements" ok
else
    record "python venv + requirements" FAILED
fi

step "pytest tests/e2e"
if [[ $venv_ok -eq 1 && -n "$GATEWAY_BIN" && -n "$MCP_SERVER_BIN" ]]; then
    if AIBRIDGE_GATEWAY_BIN="$GATEWAY_BIN" AIBRIDGE_MCP_SERVER_BIN="$MCP_SERVER_BIN" .venv/bin/python -m pytest -q -ra -p no:cacheprovider tests/e2e; then
        record "pytest tests/e2e" ok
    else
        record "pytest tests/e2e" FAILED
    fi
else
    echo "not run: it needs the example binaries and the Python environment"
    record "pytest tests/e2e" "NOT RUN"
fi

# 4. A short fuzz run (fuzz/ci.sh; the long runs are in RELIABILITY.md) -----------------------
if [[ "${FUZZ:-1}" != 0 ]]; then
    step "fuzz: ${FUZZ_SECS:-30} s per target (fuzz/ci.sh)"
    if bash fuzz/ci.sh; then
        record "fuzz (short run)" ok
    else
        record "fuzz (short run)" FAILED
    fi
fi

print_summary
exit "$FAILED"

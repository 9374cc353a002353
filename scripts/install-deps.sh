#!/usr/bin/env bash
# Installs what the whole test suite needs on a fresh Debian machine (run as root, or with
# sudo available): python3 with venv (the SDK end-to-end tests), PostgreSQL server binaries
# (the PostgreSQL recorder tests start throwaway clusters), Chromium (the usage page test),
# Claude Code, pinned, into .e2e/node with npm (the Claude Code end-to-end tests; node and npm
# from apt if missing), rustfmt and clippy, and cargo-hack (clippy over every feature
# combination). Skips what is already there. Used by `.ci/run` and by
# `bash scripts/test.sh --install`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The Claude Code CLI of tests/e2e/test_claude_code_cloud.py (the version the spec's client
# captures were made with, ../shared/spec/clients.md).
CLAUDE_CODE_VERSION=2.1.332
CLAUDE_CODE_DIR=.e2e/node

step() {
    printf '\n==> %s\n' "$*"
}

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then
    SUDO=sudo
fi

APT_UPDATED=0
apt_install() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        $SUDO apt-get update -q
        APT_UPDATED=1
    fi
    $SUDO apt-get install -y -q --no-install-recommends "$@"
}

step "system packages"
if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv
fi
# `python3 -m venv` needs ensurepip (Debian ships it in python3-venv): probe it for real.
probe=$(mktemp -d)
if ! python3 -m venv "$probe/venv" >/dev/null 2>&1; then
    apt_install python3-venv
fi
rm -rf "$probe"
python3 --version
# The PostgreSQL recorder tests start throwaway clusters with initdb/pg_ctl.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    apt_install postgresql
fi
# The usage page test (tests/e2e/test_usage_page.py) renders /usage in headless Chromium.
if ! command -v chromium >/dev/null; then
    apt_install chromium
fi
chromium --version

step "Claude Code ${CLAUDE_CODE_VERSION} (npm, into ${CLAUDE_CODE_DIR})"
# The npm package's postinstall puts its native binary (an optional dependency, per platform)
# in place of bin/claude.exe; node is only needed to install it.
if ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
claude_bin=$CLAUDE_CODE_DIR/node_modules/.bin/claude
if [[ "$("$claude_bin" --version 2>/dev/null || true)" != "$CLAUDE_CODE_VERSION "* ]]; then
    mkdir -p "$CLAUDE_CODE_DIR"
    npm install --prefix "$CLAUDE_CODE_DIR" --no-save --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"
fi
version=$("$claude_bin" --version)
echo "$claude_bin: $version"
if [[ "$version" != "$CLAUDE_CODE_VERSION "* ]]; then
    echo "expected Claude Code $CLAUDE_CODE_VERSION, got: $version" >&2
    exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
cargo --version
# cargo-hack runs clippy over every feature combination (about a minute to install from
# crates.io on two cores).
if ! cargo hack --version >/dev/null 2>&1; then
    cargo install cargo-hack --locked
fi
cargo hack --version


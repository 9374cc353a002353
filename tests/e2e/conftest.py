"""End-to-end fixtures: the fake upstream, the example gateway and its SQLite database.

The gateway binary comes from AIBRIDGE_GATEWAY_BIN (scripts/test.sh builds it with
`cargo build --all-features --example gateway` and exports its path); the MCP test
server (examples/mcp_test_server.rs) from AIBRIDGE_MCP_SERVER_BIN. Its interface is
the contract in the spec's example-gateway.md: configuration by environment only, one stdout
line `aibridge gateway listening on http://HOST:PORT`, exit code 0 after SIGTERM.

No fixed sleeps are used to synchronise: processes announce readiness on stdout, and the
database is polled for a condition (ended_at set) with a bounded deadline.
"""

import contextlib
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FAKE_UPSTREAM = HERE / "fake_upstream.py"

GATEWAY_TOKEN = "tok-alice"
ACTOR = "alice"
ANTHROPIC_KEY = "sk-ant-e2e-secret-key"
ANTHROPIC_KEY_HINT = "sk-a...-key"
OPENAI_KEY = "sk-openai-e2e-secret-key"
OPENAI_KEY_HINT = "sk-o...-key"
# A per-user GitHub Copilot token: Copilot is always ClientOnly (copilot.md), the gateway has
# no key of its own for it.
COPILOT_TOKEN = "ghu_test0123456789abcdefghij"
COPILOT_TOKEN_HINT = "ghu_...ghij"
SECRETS = (ANTHROPIC_KEY, OPENAI_KEY, GATEWAY_TOKEN, COPILOT_TOKEN)

STARTUP_DEADLINE = 30.0  # seconds for a process to announce its address
RECORD_DEADLINE = 15.0  # seconds for an interception's rows to be complete
SHUTDOWN_DEADLINE = 40.0  # the gateway must exit within 35 s of SIGTERM

LISTEN_RE = re.compile(r"^aibridge gateway listening on (http://\S+)$")
MCP_LISTEN_RE = re.compile(r"^mcp test server listening on (http://\S+)$")

# Environment variables the gateway reads (example-gateway.md); never inherited from the caller.
GATEWAY_ENV = (
    "AIBRIDGE_LISTEN", "AIBRIDGE_DATABASE_URL", "AIBRIDGE_TOKENS", "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "COPILOT_BASE_URL",
    "AIBRIDGE_MCP_SERVERS", "AIBRIDGE_MCP_ALLOW", "AIBRIDGE_MCP_DENY", "RUST_LOG",
    "AIBRIDGE_METRICS_TOKEN", "AIBRIDGE_HEADER_READ_TIMEOUT", "AIBRIDGE_IDLE_TIMEOUT",
    "AIBRIDGE_MAX_CONNECTIONS", "AIBRIDGE_POLICY",
)


class StdoutLines:
    """Drains a process's stdout on a thread (so the pipe never fills) and hands out lines."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = queue.Queue()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # EOF

    def first(self, deadline, what, log_path=None):
        """The first line, failing if the process exits first or the deadline passes."""
        try:
            line = self.lines.get(timeout=deadline)
        except queue.Empty:
            self.proc.kill()
            pytest.fail("%s printed nothing within %.0fs%s" % (what, deadline, _log_tail(log_path)))
        if line is None:
            rc = self.proc.wait()
            pytest.fail("%s exited (code %s) before announcing its address%s"
                        % (what, rc, _log_tail(log_path)))
        return line

    def rest(self):
        """The remaining lines, after the process has exited."""
        self.thread.join(timeout=SHUTDOWN_DEADLINE)
        out = []
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                out.append(line)
        return out


def _log_tail(path, n=40):
    if not path or not Path(path).exists():
        return ""
    lines = Path(path).read_text(errors="replace").splitlines()[-n:]
    return "\n--- %s (last %d lines) ---\n%s" % (path, len(lines), "\n".join(lines))


# --------------------------------------------------------------------------- fake upstream

class FakeUpstream:
    """The stdlib fake provider (fake_upstream.py), with its JSONL capture of requests."""

    def __init__(self, proc, url, log_path):
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def requests(self):
        """Every captured request so far (written before the fake answers)."""
        if not self.log_path.exists():
            return []
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def mark(self):
        return len(self.requests())

    def since(self, mark):
        return self.requests()[mark:]


@pytest.fixture(scope="session")
def fake_upstream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake")
    log_path = tmp / "capture.jsonl"
    stderr = open(tmp / "fake.stderr", "w")
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_UPSTREAM), "--port", "0", "--log", str(log_path)],
        stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    line = StdoutLines(proc).first(STARTUP_DEADLINE, "fake upstream", tmp / "fake.stderr")
    m = re.match(r"^fake upstream listening on (http://\S+)$", line)
    assert m, "unexpected fake upstream line: %r" % line
    yield FakeUpstream(proc, m.group(1), log_path)
    proc.terminate()
    proc.wait(timeout=SHUTDOWN_DEADLINE)
    stderr.close()


# --------------------------------------------------------------------------- MCP server

class McpServer:
    """The MCP test server (examples/mcp_test_server.rs) and its JSONL log of tools/call."""

    def __init__(self, proc, url, log_path):
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def calls(self):
        if not self.log_path.exists():
            return []
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def mark(self):
        return len(self.calls())

    def since(self, mark):
        return self.calls()[mark:]


def binary(var, build):
    path = os.environ.get(var)
    if not path:
        pytest.fail("%s is not set: run the e2e tests through scripts/test.sh, or build with "
                    "`%s` and export it" % (var, build))
    path = Path(path)
    if not path.is_absolute():
        path = REPO / path
    if not os.access(path, os.X_OK):
        pytest.fail("%s=%s does not exist or is not executable" % (var, path))
    return path


@pytest.fixture(scope="session")
def mcp_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcp")
    log_path = tmp / "calls.jsonl"
    stderr = open(tmp / "mcp.stderr", "w")
    exe = binary("AIBRIDGE_MCP_SERVER_BIN", "cargo build --example mcp_test_server")
    proc = subprocess.Popen([str(exe), "--log", str(log_path)], stdout=subprocess.PIPE,
                            stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    line = StdoutLines(proc).first(STARTUP_DEADLINE, "mcp test server", tmp / "mcp.stderr")
    m = MCP_LISTEN_RE.match(line)
    assert m, "unexpected mcp test server line: %r" % line
    yield McpServer(proc, m.group(1), log_path)
    proc.terminate()
    proc.wait(timeout=SHUTDOWN_DEADLINE)
    stderr.close()


# --------------------------------------------------------------------------- database

class Db:
    """Read access to the gateway's SQLite database (schema: spec recorder.md)."""

    def __init__(self, path):
        self.path = Path(path)

    def query(self, sql, params=()):
        # A fresh connection per query always sees the latest committed data (WAL mode).
        conn = sqlite3.connect(str(self.path), timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def count(self, table):
        return self.query("SELECT count(*) AS n FROM %s" % table)[0]["n"]

    def interception(self, interception_id):
        rows = self.query("SELECT * FROM aibridge_interceptions WHERE id = ?", (interception_id,))
        return rows[0] if rows else None

    def wait_ended(self, interception_id, deadline=RECORD_DEADLINE):
        """Polls until the interception row has ended_at set; after that its other rows are
        complete (recorder.md ordering guarantee). Fails after the deadline."""
        end = time.monotonic() + deadline
        while True:
            row = self.interception(interception_id)
            if row is not None and row["ended_at"] is not None:
                return row
            if time.monotonic() > end:
                pytest.fail("interception %s not ended within %.0fs; row: %r"
                            % (interception_id, deadline, row))
            time.sleep(0.05)

    def rows(self, table, interception_id):
        return self.query("SELECT * FROM %s WHERE interception_id = ? ORDER BY created_at"
                          % table, (interception_id,))

    def text_values(self):
        """Every non-NULL TEXT value of every aibridge_ table, as (table, column, value)."""
        out = []
        tables = [r["name"] for r in self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'aibridge%'")]
        for table in tables:
            for row in self.query("SELECT * FROM %s" % table):
                for col, value in row.items():
                    if isinstance(value, str):
                        out.append((table, col, value))
        return out


# --------------------------------------------------------------------------- gateway

class Gateway:
    def __init__(self, proc, url, db, stderr_path):
        self.proc = proc
        self.url = url
        self.db = db
        self.stderr_path = stderr_path

    @property
    def anthropic_base_url(self):
        return self.url + "/api/v2/aibridge/anthropic"

    @property
    def openai_base_url(self):
        return self.url + "/api/v2/aibridge/openai/v1"

    @property
    def copilot_base_url(self):
        return self.url + "/api/v2/aibridge/copilot"

    def logs(self):
        return _log_tail(self.stderr_path, 200)

    def stop(self):
        """SIGTERM, then wait for the exit code (must be 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=SHUTDOWN_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("gateway did not exit within %.0fs of SIGTERM%s"
                        % (SHUTDOWN_DEADLINE, self.logs()))
        return rc


def gateway_binary():
    return binary("AIBRIDGE_GATEWAY_BIN",
                  "cargo build --all-features --example gateway")


@contextlib.contextmanager
def running_gateway(tmp_dir, fake_url, extra_env=None):
    """Starts the example gateway against the fake upstream; yields a Gateway. On exit it
    sends SIGTERM and asserts exit code 0."""
    tmp_dir = Path(tmp_dir)
    db_path = tmp_dir / "e2e.db"
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_ENV}
    env.update({
        "AIBRIDGE_LISTEN": "127.0.0.1:0",
        "AIBRIDGE_DATABASE_URL": "sqlite://%s?mode=rwc" % db_path,
        "AIBRIDGE_TOKENS": "%s:%s" % (GATEWAY_TOKEN, ACTOR),
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": fake_url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": fake_url + "/v1",
        "COPILOT_BASE_URL": fake_url,
        "RUST_LOG": "info",
    })
    env.update(extra_env or {})
    stderr_path = tmp_dir / "gateway.stderr"
    stderr = open(stderr_path, "w")
    proc = subprocess.Popen([str(gateway_binary())], env=env, cwd=str(tmp_dir),
                            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                            text=True)
    try:
        stdout = StdoutLines(proc)
        line = stdout.first(STARTUP_DEADLINE, "gateway", stderr_path)
        m = LISTEN_RE.match(line)
        assert m, "unexpected first stdout line of the gateway: %r" % line
        gw = Gateway(proc, m.group(1), Db(db_path), stderr_path)
        yield gw
        rc = gw.stop()
        assert rc == 0, "gateway exited with code %s after SIGTERM%s" % (rc, gw.logs())
        extra = stdout.rest()
        assert not extra, "the gateway printed more than one stdout line: %r" % extra
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()


@pytest.fixture(scope="session")
def gateway(fake_upstream, tmp_path_factory):
    with running_gateway(tmp_path_factory.mktemp("gateway"), fake_upstream.url) as gw:
        yield gw


@pytest.fixture
def db(gateway):
    return gateway.db


@pytest.fixture
def anthropic_client(gateway):
    import anthropic

    return anthropic.Anthropic(base_url=gateway.anthropic_base_url, api_key=GATEWAY_TOKEN,
                               max_retries=0, timeout=30.0)


# --------------------------------------------------------------------------- assertions

def assert_no_secrets(db):
    """No full secret (upstream keys, the gateway token) in any text column of any table."""
    leaks = [(t, c) for (t, c, v) in db.text_values() for s in SECRETS if s in v]
    assert not leaks, "secrets stored in %r" % leaks


def usage_extras(usage):
    """The extras the spec derives from an Anthropic usage object (anthropic.md)."""
    extra = {}
    cache_creation = usage.get("cache_creation") or {}
    for field, name in (("ephemeral_5m_input_tokens", "cache_ephemeral_5m_input"),
                        ("ephemeral_1h_input_tokens", "cache_ephemeral_1h_input")):
        if isinstance(cache_creation.get(field), int):
            extra[name] = cache_creation[field]
    for name, value in (usage.get("server_tool_use") or {}).items():
        if isinstance(value, int) and not isinstance(value, bool):
            extra[name] = value
    return extra


def assert_token_row(row, message_id, usage):
    """One aibridge_token_usages row equals the usage dict the SDK received."""
    assert row["provider_response_id"] == message_id
    assert row["input_tokens"] == (usage.get("input_tokens") or 0)
    assert row["output_tokens"] == (usage.get("output_tokens") or 0)
    assert row["cache_read_input_tokens"] == (usage.get("cache_read_input_tokens") or 0)
    assert row["cache_write_input_tokens"] == (usage.get("cache_creation_input_tokens") or 0)
    assert json.loads(row["extra"]) == usage_extras(usage)

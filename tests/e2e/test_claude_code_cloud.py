"""Claude Code (the real CLI, `claude -p`) through the example gateway's `bedrock` and `vertex`
providers (cloud-anthropic.md), against the mock clouds of mock_cloud.py.

Claude Code speaks the Anthropic API to `…/api/v2/aibridge/bedrock` or `…/vertex` with the
gateway token as `ANTHROPIC_AUTH_TOKEN`; the gateway signs (SigV4) or authorizes (Google
token) the cloud call for the mapped model. Claude Code always streams, so both stream paths
run: Bedrock's EventStream re-encoded as SSE, Vertex's SSE relayed. Per cloud:

- a text turn (the default model, and `--model claude-haiku-4-5`, which maps to the small
  model): exit 0, the mock model's text as the result, one main-turn call at the mapped
  model's streaming path, correctly signed or authorized and (Bedrock) with a body Bedrock
  accepts, and its interception, prompt and token rows recorded with the mapped model;
- a tool round trip: the mock model answers with a `Read` tool call for a file the test
  wrote; Claude Code reads it and sends the `tool_result` back; the second call must carry
  the file's content, the result must be the mock's final text, and the tool call must be
  recorded on the first interception.

Main-turn calls are picked out by their body (Claude Code's main turn declares its tools;
background calls, e.g. a haiku-model title, do not), and matched to their records by the
message id the mock answered, never by call order. The mock answers any other call with
plain text.

The CLI is `@anthropic-ai/claude-code@2.1.332`, installed by scripts/install-deps.sh into
.e2e/node (or AIBRIDGE_CLAUDE_BIN). Each run gets an empty HOME and config directory, no
inherited environment but PATH, and CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, so it calls
nothing but the gateway. Without the CLI these tests fail under CI (CI set) and are skipped
with the reason otherwise.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ACTOR, GATEWAY_TOKEN, RECORD_DEADLINE, REPO
from mock_cloud import (AWS_SECRET, BEDROCK_MODEL, BEDROCK_SMALL, GOOGLE_TOKEN, TEXT,
                        VERTEX_MODEL, VERTEX_PROJECT, VERTEX_REGION, VERTEX_SMALL, cloud_gateway,
                        has_tool_result, message)

CLAUDE_VERSION = "2.1.332"
CLAUDE_BIN = REPO / ".e2e" / "node" / "node_modules" / ".bin" / "claude"
CLAUDE_DEADLINE = 120  # seconds for one `claude -p` run

BACKGROUND_TEXT = "Background answer."
FINAL_TEXT = "I read the note."
TOOL_CALL_ID = "toolu_cc_read1"
NOTE_CONTENT = "aibridge e2e note: the answer is 42 (marker 7f3c9a)"


def stream_path(name, model):
    """The cloud's streaming path for a mapped model."""
    if name == "bedrock":
        return "/model/%s/invoke-with-response-stream" % model
    return "/v1/projects/%s/locations/%s/publishers/anthropic/models/%s:streamRawPredict" % (
        VERTEX_PROJECT, VERTEX_REGION, model)


CLOUDS = [(name, model, stream_path(name, model))
          for name, model in (("bedrock", BEDROCK_MODEL), ("vertex", VERTEX_MODEL))]
SMALL = [(name, model, stream_path(name, model))
         for name, model in (("bedrock", BEDROCK_SMALL), ("vertex", VERTEX_SMALL))]


def claude_binary():
    path = Path(os.environ.get("AIBRIDGE_CLAUDE_BIN") or CLAUDE_BIN)
    if not path.is_absolute():
        path = REPO / path
    if os.access(path, os.X_OK):
        return path
    reason = ("Claude Code is not installed at %s: `bash scripts/install-deps.sh` installs "
              "@anthropic-ai/claude-code@%s there (or set AIBRIDGE_CLAUDE_BIN)"
              % (path, CLAUDE_VERSION))
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(reason)
    pytest.skip(reason)


class Script:
    """What the mock model does on Claude Code's main turn: a tool call (`tool_call`, an
    Anthropic tool_use block) until the conversation carries a tool result, else text."""

    def __init__(self):
        self.tool_call = None

    def answer(self, body, msg_id):
        if not body.get("tools"):
            return message(msg_id, [{"type": "text", "text": BACKGROUND_TEXT}], "end_turn")
        if has_tool_result(body):
            return message(msg_id, [{"type": "text", "text": FINAL_TEXT}], "end_turn")
        if self.tool_call is not None:
            return message(msg_id, [{"type": "text", "text": "Let me read the note."},
                                    self.tool_call], "tool_use")
        return message(msg_id, [{"type": "text", "text": TEXT}], "end_turn")


@pytest.fixture(scope="module")
def claude():
    return claude_binary()


@pytest.fixture(scope="module")
def cc_cloud(tmp_path_factory):
    script = Script()
    with cloud_gateway(tmp_path_factory.mktemp("cc-cloud"), script.answer) as (gw, cloud):
        yield gw, cloud, script


def run_claude(claude, tmp_path, base_url, prompt, *args):
    """`claude -p PROMPT --output-format json ARGS` in tmp_path/work with a fresh HOME;
    returns its parsed JSON result."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": GATEWAY_TOKEN,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    cmd = [str(claude), "-p", prompt, "--output-format", "json", *args]
    try:
        proc = subprocess.run(cmd, env=env, cwd=str(work), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=CLAUDE_DEADLINE)
    except subprocess.TimeoutExpired as e:
        pytest.fail("claude did not finish within %ds; stderr: %s"
                    % (CLAUDE_DEADLINE, e.stderr))
    assert proc.returncode == 0, "claude exited %d\nstdout: %s\nstderr: %s" % (
        proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail("claude printed no JSON result: %r" % proc.stdout[-4000:])
    return result


def main_turns(calls):
    """The calls of Claude Code's main turn: a messages call that declares tools."""
    return [c for c in calls if c["body"] is not None and c["body"].get("tools")]


def check_cloud_call(call, path):
    """The call reached the mapped model's streaming path, passed the mock's SigV4 or token
    check, was answered, and carries no gateway credential."""
    assert call["path"] == path
    assert call["problem"] is None and call["status"] == 200, call
    for name, value in call["headers"].items():
        assert GATEWAY_TOKEN not in value, "gateway token forwarded in %s" % name
    if path.startswith("/model/"):
        assert call["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ")
        assert call["body"]["anthropic_version"] == "bedrock-2023-05-31"
    else:
        assert call["headers"]["authorization"] == "Bearer " + GOOGLE_TOKEN
        assert call["body"]["anthropic_version"] == "vertex-2023-10-16"


def interception_of(db, reply_id):
    """The ended interception whose token row holds the message id the mock answered."""
    end = time.monotonic() + RECORD_DEADLINE
    while True:
        rows = db.query("SELECT interception_id FROM aibridge_token_usages "
                        "WHERE provider_response_id = ?", (reply_id,))
        if rows:
            assert len(rows) == 1, rows
            return db.wait_ended(rows[0]["interception_id"])
        if time.monotonic() > end:
            pytest.fail("no token row for message %s within %.0fs" % (reply_id, RECORD_DEADLINE))
        time.sleep(0.05)


def check_interception(db, row, name, model):
    assert row["provider_name"] == name
    assert row["model"] == model
    assert row["client"] == "Claude Code"
    assert row["initiator_id"] == ACTOR
    assert row["streaming"] == 1
    assert row["outcome"] == "completed", row
    tokens = db.rows("aibridge_token_usages", row["id"])
    assert len(tokens) == 1
    assert (tokens[0]["input_tokens"], tokens[0]["output_tokens"]) == (21, 9)


def tool_result_text(block):
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


@pytest.mark.parametrize("name,model,path,args",
                         [pytest.param(*c, (), id=c[0]) for c in CLOUDS]
                         + [pytest.param(*c, ("--model", "claude-haiku-4-5"), id=c[0] + "-haiku")
                            for c in SMALL])
def test_claude_code_text_turn(claude, cc_cloud, tmp_path, name, model, path, args):
    """The default model maps to the main cloud model; `--model claude-haiku-4-5` (Claude
    Code's haiku body: thinking with a budget, fewer betas) to the small one."""
    gw, cloud, script = cc_cloud
    script.tool_call = None
    mark = len(cloud.calls())
    result = run_claude(claude, tmp_path, "%s/api/v2/aibridge/%s" % (gw.url, name),
                                "say hello", *args)
    assert result.get("is_error") is False, result
    assert result["result"] == TEXT, result

    calls = cloud.calls()[mark:]
    assert calls, "the mock cloud received nothing"
    assert all(c["status"] == 200 and c["problem"] is None for c in calls), calls
    turns = main_turns(calls)
    assert len(turns) == 1, [c["path"] for c in calls]
    check_cloud_call(turns[0], path)
    assert not has_tool_result(turns[0]["body"])

    row = interception_of(gw.db, turns[0]["reply_id"])
    check_interception(gw.db, row, name, model)
    prompts = [p["prompt"] for p in gw.db.rows("aibridge_user_prompts", row["id"])]
    assert prompts == ["say hello"]
    assert gw.db.rows("aibridge_tool_usages", row["id"]) == []


@pytest.mark.parametrize("name,model,path", [pytest.param(*c, id=c[0]) for c in CLOUDS])
def test_claude_code_tool_round_trip(claude, cc_cloud, tmp_path, name, model, path):
    gw, cloud, script = cc_cloud
    note = tmp_path / "work" / "note.txt"
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(NOTE_CONTENT + "\n")
    tool_input = {"file_path": str(note)}
    script.tool_call = {"type": "tool_use", "id": TOOL_CALL_ID, "name": "Read",
                        "input": tool_input}
    mark = len(cloud.calls())
    try:
        result = run_claude(claude, tmp_path, "%s/api/v2/aibridge/%s" % (gw.url, name),
                                    "read note.txt", "--max-turns", "3")
    finally:
        script.tool_call = None
    assert result.get("is_error") is False, result
    assert result["result"] == FINAL_TEXT, result

    calls = cloud.calls()[mark:]
    assert all(c["status"] == 200 and c["problem"] is None for c in calls), calls
    turns = main_turns(calls)
    asking = [c for c in turns if not has_tool_result(c["body"])]
    answering = [c for c in turns if has_tool_result(c["body"])]
    assert len(asking) == 1 and len(answering) == 1, [c["path"] for c in calls]
    for call in asking + answering:
        check_cloud_call(call, path)

    # The second call carries Claude Code's tool_result with the file's content, after the
    # assistant turn that asked for it.
    body = answering[0]["body"]
    results = [b for b in body["messages"][-1]["content"]
               if isinstance(b, dict) and b.get("type") == "tool_result"]
    assert len(results) == 1
    assert results[0]["tool_use_id"] == TOOL_CALL_ID
    assert not results[0].get("is_error"), results[0]
    assert NOTE_CONTENT in tool_result_text(results[0])
    assistant = [m for m in body["messages"] if m.get("role") == "assistant"][-1]
    uses = [b for b in assistant["content"] if b.get("type") == "tool_use"]
    assert [(u["id"], u["name"], u["input"]) for u in uses] == [(TOOL_CALL_ID, "Read",
                                                                tool_input)]

    # Records: the tool call on the first interception, the second one answers it.
    first = interception_of(gw.db, asking[0]["reply_id"])
    check_interception(gw.db, first, name, model)
    tools = gw.db.rows("aibridge_tool_usages", first["id"])
    assert len(tools) == 1
    assert tools[0]["tool"] == "Read"
    assert tools[0]["tool_call_id"] == TOOL_CALL_ID
    assert tools[0]["provider_response_id"] == asking[0]["reply_id"]
    assert json.loads(tools[0]["input"]) == tool_input
    assert tools[0]["injected"] == 0
    second = interception_of(gw.db, answering[0]["reply_id"])
    check_interception(gw.db, second, name, model)
    assert second["correlating_tool_call_id"] == TOOL_CALL_ID
    assert gw.db.rows("aibridge_tool_usages", second["id"]) == []


def test_no_cloud_secret_in_logs_or_records_after_claude_code(claude, cc_cloud):
    gw, cloud, _ = cc_cloud
    assert main_turns(cloud.calls()), "no Claude Code call reached the mock cloud"
    logs = Path(gw.stderr_path).read_text()
    for secret in (AWS_SECRET, GOOGLE_TOKEN, GATEWAY_TOKEN):
        assert secret not in logs
        for value in gw.db.text_values():
            assert secret not in str(value)

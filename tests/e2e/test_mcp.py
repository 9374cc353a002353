"""MCP tool injection end to end: the official SDKs talk to the example gateway configured
with one MCP server (examples/mcp_test_server.rs, `AIBRIDGE_MCP_SERVERS=coder=URL`); the fake
upstream (mode "mcp") calls the injected `bmcp_coder_list_workspaces` tool on its first turn
and answers with text quoting the tool's result once it has it.

For Anthropic Messages, Chat Completions and Responses, blocking and streaming (through the
SDKs' stream helpers), each test checks that the SDK parses one coherent message with the
expected text and that no `bmcp_` name reaches the client; that the MCP server got exactly
one call with the model's arguments; that the upstream saw the injected tool (the denied one
left out) and then the tool result; and the SQLite rows: one injected tool row and two token
rows (spec: mcp.md, anthropic.md, openai-chat.md, openai-responses.md "MCP injection").
"""

import json

import anthropic
import openai
import pytest

from conftest import GATEWAY_TOKEN, running_gateway
from fake_upstream import MCP_LEAD_TEXT, MCP_TOOL_ARGS, mcp_final_text

INTERCEPTION_HEADER = "x-aibridge-interception-id"
MCP_MODE = {"x-fake-mode": "mcp"}
TOOL = "list_workspaces"
TOOL_ID = "bmcp_coder_list_workspaces"
DENIED_ID = "bmcp_coder_delete_workspace"
TOOL_RESULT = "workspaces of alice: dev-1, dev-2"
FINAL_TEXT = mcp_final_text(TOOL_RESULT)
PROMPT = "list my workspaces"
CLAUDE = "claude-sonnet-5"
GPT = "gpt-5"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a location.",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                     "required": ["location"]},
}
CHAT_WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a location.",
    "parameters": WEATHER_TOOL["input_schema"]}}
RESPONSES_WEATHER_TOOL = {"type": "function", "name": "get_weather",
                          "description": "Current weather for a location.",
                          "parameters": WEATHER_TOOL["input_schema"], "strict": False}


@pytest.fixture(scope="module")
def mcp_gateway(fake_upstream, mcp_server, tmp_path_factory):
    env = {"AIBRIDGE_MCP_SERVERS": "coder=%s" % mcp_server.url, "AIBRIDGE_MCP_DENY": "^delete_"}
    with running_gateway(tmp_path_factory.mktemp("mcp-gateway"), fake_upstream.url, env) as gw:
        yield gw


@pytest.fixture
def claude(mcp_gateway):
    return anthropic.Anthropic(base_url=mcp_gateway.anthropic_base_url, api_key=GATEWAY_TOKEN,
                               max_retries=0, timeout=30.0)


class LastResponse:
    """The last HTTP response the OpenAI SDK received (an httpx event hook): the stream
    helpers do not expose the response headers."""

    def __init__(self):
        self.response = None

    def hook(self, response):
        self.response = response

    def interception_id(self):
        return self.response.headers[INTERCEPTION_HEADER]


@pytest.fixture
def last_response():
    return LastResponse()


@pytest.fixture
def gpt(mcp_gateway, last_response):
    return openai.OpenAI(
        base_url=mcp_gateway.openai_base_url, api_key=GATEWAY_TOKEN, max_retries=0,
        timeout=30.0,
        http_client=openai.DefaultHttpxClient(event_hooks={"response": [last_response.hook]}))


class Marks:
    """Where the upstream capture and the MCP call log stood before a test's request."""

    def __init__(self, fake_upstream, mcp_server):
        self.fake_upstream = fake_upstream
        self.mcp_server = mcp_server
        self.upstream = fake_upstream.mark()
        self.mcp = mcp_server.mark()


@pytest.fixture
def marks(fake_upstream, mcp_server):
    return Marks(fake_upstream, mcp_server)


def tool_names(body):
    return [t.get("name") or (t.get("function") or {}).get("name") for t in body.get("tools") or []]


def assert_no_injected_name(*texts):
    for text in texts:
        assert "bmcp_" not in text, "an injected tool name reached the client: %s" % text


def check_exchange(marks, api, client_tools):
    """Two upstream calls carrying the injected tool (never the denied one); the second ends
    with the tool's result in the API's format. One tools/call on the MCP server."""
    calls = marks.fake_upstream.since(marks.upstream)
    assert len(calls) == 2, [c["path"] for c in calls]
    for call in calls:
        names = tool_names(call["body"])
        assert TOOL_ID in names and DENIED_ID not in names, names
        for name in client_tools:
            assert name in names
    second = calls[1]["body"]
    if api == "messages":
        last = second["messages"][-1]
        assert last["role"] == "user"
        assert last["content"][0]["type"] == "tool_result"
        assert last["content"][0]["content"] == [{"type": "text", "text": TOOL_RESULT}]
        assert last["content"][0]["is_error"] is False
        assistant = second["messages"][-2]["content"]
        assert [b["type"] for b in assistant] == ["text", "tool_use"]
        assert assistant[1]["name"] == TOOL_ID and assistant[1]["input"] == MCP_TOOL_ARGS
    elif api == "chat_completions":
        last = second["messages"][-1]
        assert last["role"] == "tool" and last["content"] == TOOL_RESULT
        assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == TOOL_ID
        assert second["parallel_tool_calls"] is False
    else:
        last = second["input"][-1]
        assert last["type"] == "function_call_output" and last["output"] == TOOL_RESULT
        assert second["input"][-2]["type"] == "function_call"
        assert second["input"][-2]["name"] == TOOL_ID
        assert second["parallel_tool_calls"] is False
    assert marks.mcp_server.since(marks.mcp) == [{"tool": TOOL, "arguments": MCP_TOOL_ARGS}]


def check_rows(db, iid, mcp_server, *, streaming, api):
    """One interception, completed; one prompt; two token rows; one injected tool row.
    Returns the token rows."""
    row = db.wait_ended(iid)
    assert row["outcome"] == "completed", row
    assert row["streaming"] == (1 if streaming else 0)
    assert row["api"] == api
    prompts = db.rows("aibridge_user_prompts", iid)
    assert [p["prompt"] for p in prompts] == [PROMPT]
    tokens = db.rows("aibridge_token_usages", iid)
    assert len(tokens) == 2, tokens
    assert len({t["provider_response_id"] for t in tokens}) == 2
    assert prompts[0]["provider_response_id"] == tokens[0]["provider_response_id"]
    tools = db.rows("aibridge_tool_usages", iid)
    assert len(tools) == 1, tools
    tool = tools[0]
    assert tool["injected"] == 1
    assert tool["provider_executed"] == 0
    assert tool["tool"] == TOOL
    assert tool["server_url"] == mcp_server.url
    assert json.loads(tool["input"]) == MCP_TOOL_ARGS
    assert tool["invocation_error"] is None
    assert tool["provider_response_id"] == tokens[0]["provider_response_id"]
    return tokens


def token_sums(tokens):
    return (sum(t["input_tokens"] + t["cache_read_input_tokens"] for t in tokens),
            sum(t["output_tokens"] for t in tokens))


# --------------------------------------------------------------------------- Anthropic

def test_anthropic_blocking(claude, marks, mcp_gateway, mcp_server):
    raw = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": PROMPT}],
        extra_headers=MCP_MODE)
    message = raw.parse()
    assert_no_injected_name(raw.http_response.text)
    # Blocking: the last upstream message, with the usage summed over both (S19).
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == FINAL_TEXT
    assert message.stop_reason == "end_turn"
    check_exchange(marks, "messages", [])
    tokens = check_rows(mcp_gateway.db, raw.headers[INTERCEPTION_HEADER], mcp_server,
                        streaming=False, api="messages")
    assert (message.usage.input_tokens, message.usage.output_tokens) == token_sums(tokens)
    assert message.id == tokens[1]["provider_response_id"]


def test_anthropic_streaming(claude, marks, mcp_gateway, mcp_server):
    with claude.messages.stream(
            model=CLAUDE, max_tokens=256, tools=[WEATHER_TOOL],
            messages=[{"role": "user", "content": PROMPT}], extra_headers=MCP_MODE) as stream:
        events = [event.model_dump_json() for event in stream]
        final = stream.get_final_message()
        headers = stream.response.headers
    assert_no_injected_name(final.model_dump_json(), *events)
    # Streaming: one message holding both iterations' text.
    assert [b.type for b in final.content] == ["text", "text"]
    assert [b.text for b in final.content] == [MCP_LEAD_TEXT, FINAL_TEXT]
    assert final.stop_reason == "end_turn"
    check_exchange(marks, "messages", ["get_weather"])
    tokens = check_rows(mcp_gateway.db, headers[INTERCEPTION_HEADER], mcp_server,
                        streaming=True, api="messages")
    assert (final.usage.input_tokens, final.usage.output_tokens) == token_sums(tokens)
    assert final.id == tokens[0]["provider_response_id"]


# --------------------------------------------------------------------------- Chat

def test_chat_blocking(gpt, marks, mcp_gateway, mcp_server):
    raw = gpt.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": PROMPT}], tools=[CHAT_WEATHER_TOOL],
        extra_headers=MCP_MODE)
    completion = raw.parse()
    assert_no_injected_name(raw.http_response.text)
    message = completion.choices[0].message
    assert message.role == "assistant"
    assert message.content == FINAL_TEXT
    assert not message.tool_calls
    assert completion.choices[0].finish_reason == "stop"
    check_exchange(marks, "chat_completions", ["get_weather"])
    tokens = check_rows(mcp_gateway.db, raw.headers[INTERCEPTION_HEADER], mcp_server,
                        streaming=False, api="chat_completions")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
        token_sums(tokens)


def test_chat_streaming(gpt, last_response, marks, mcp_gateway, mcp_server):
    with gpt.chat.completions.stream(
            model=GPT, messages=[{"role": "user", "content": PROMPT}],
            stream_options={"include_usage": True}, extra_headers=MCP_MODE) as stream:
        events = [event.model_dump_json() for event in stream]
        final = stream.get_final_completion()
    assert_no_injected_name(final.model_dump_json(), *events)
    message = final.choices[0].message
    assert message.role == "assistant"
    # One message: both iterations' text, concatenated as the deltas arrive.
    assert message.content == MCP_LEAD_TEXT + FINAL_TEXT
    assert not message.tool_calls
    assert final.choices[0].finish_reason == "stop"
    check_exchange(marks, "chat_completions", [])
    tokens = check_rows(mcp_gateway.db, last_response.interception_id(), mcp_server,
                        streaming=True, api="chat_completions")
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == token_sums(tokens)


# --------------------------------------------------------------------------- Responses

def message_texts(response):
    return [part.text for item in response.output if item.type == "message"
            for part in item.content]


def test_responses_blocking(gpt, marks, mcp_gateway, mcp_server):
    raw = gpt.responses.with_raw_response.create(
        model=GPT, input=PROMPT, tools=[RESPONSES_WEATHER_TOOL], extra_headers=MCP_MODE)
    response = raw.parse()
    # Also the echoed `tools` of the response object (S26).
    assert_no_injected_name(raw.http_response.text)
    assert [t.name for t in response.tools] == ["get_weather"]
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == FINAL_TEXT
    assert response.status == "completed"
    check_exchange(marks, "responses", ["get_weather"])
    tokens = check_rows(mcp_gateway.db, raw.headers[INTERCEPTION_HEADER], mcp_server,
                        streaming=False, api="responses")
    assert (response.usage.input_tokens, response.usage.output_tokens) == token_sums(tokens)
    # One lifecycle (S20, revised): the first upstream id.
    assert response.id == tokens[0]["provider_response_id"]


def test_responses_streaming(gpt, last_response, marks, mcp_gateway, mcp_server):
    """Streamed with `responses.create(stream=True)`: the SDK parses every event into its
    typed model. Every event carries the first upstream response's id (S20, revised), so
    the `responses.stream()` helper's accumulator accepts the stream too."""
    stream = gpt.responses.create(
        model=GPT, input=[{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
        stream=True, extra_headers=MCP_MODE)
    events = list(stream)
    assert_no_injected_name(*(event.model_dump_json() for event in events))
    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.created") == 1 and types.count("response.completed") == 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    added = [event.output_index for event in events if event.type == "response.output_item.added"]
    assert added == [0, 1]
    deltas = {}
    for event in events:
        if event.type == "response.output_text.delta":
            deltas[event.output_index] = deltas.get(event.output_index, "") + event.delta
    assert deltas == {0: MCP_LEAD_TEXT, 1: FINAL_TEXT}
    final = events[-1].response
    assert [item.type for item in final.output] == ["message", "message"]
    assert message_texts(final) == [MCP_LEAD_TEXT, FINAL_TEXT]
    assert final.status == "completed"
    assert final.tools == []
    check_exchange(marks, "responses", [])
    tokens = check_rows(mcp_gateway.db, last_response.interception_id(), mcp_server,
                        streaming=True, api="responses")
    assert (final.usage.input_tokens, final.usage.output_tokens) == token_sums(tokens)
    assert events[0].response.id == tokens[0]["provider_response_id"]
    # One lifecycle (S20, revised): the terminal event carries the first response's id.
    assert final.id == tokens[0]["provider_response_id"]


@pytest.mark.parametrize("iterations", [1, 2])
def test_responses_stream_helper_and_previous_response_id(gpt, marks, mcp_gateway, mcp_server,
                                                          iterations):
    """The `responses.stream()` helper accepts a stream in which the bridge ran its tool loop
    (one id from `response.created` to `response.completed`: the first upstream one, S20
    revised), and a follow-up whose `previous_response_id` is that id reaches the upstream as
    the loop's LAST upstream id: the fake upstream, which keeps each response's conversation
    under its id as the real one does, answers from the whole conversation (the tool
    results are in it only under the last id)."""
    headers = dict(MCP_MODE, **{"x-fake-mcp-calls": str(iterations)})
    with gpt.responses.stream(model=GPT, input=PROMPT, extra_headers=headers) as stream:
        events = list(stream)
        final = stream.get_final_response()
    ids = {event.response.id for event in events if hasattr(event, "response")}
    assert ids == {final.id}, ids
    assert final.output_text.endswith(FINAL_TEXT)
    assert final.tools == []
    calls = marks.fake_upstream.since(marks.upstream)
    assert len(calls) == iterations + 1
    follow = gpt.responses.create(model=GPT, input="what did the tool say?",
                                  previous_response_id=final.id,
                                  extra_headers={"x-fake-mode": "recall"})
    assert follow.output_text == "recall: " + " | ".join([TOOL_RESULT] * iterations)


# --------------------------------------------------------------------------- no injection

def test_haiku_gets_no_injected_tools(claude, marks, mcp_gateway, mcp_server):
    raw = claude.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
        extra_headers=MCP_MODE)
    assert raw.parse().content[0].text == "Hello from the fake upstream"
    calls = marks.fake_upstream.since(marks.upstream)
    assert len(calls) == 1
    assert calls[0]["body_len"] == len(raw.http_request.content)
    assert "tools" not in calls[0]["body"]
    assert mcp_server.since(marks.mcp) == []
    row = mcp_gateway.db.wait_ended(raw.headers[INTERCEPTION_HEADER])
    assert row["outcome"] == "completed"
    assert mcp_gateway.db.rows("aibridge_tool_usages", row["id"]) == []

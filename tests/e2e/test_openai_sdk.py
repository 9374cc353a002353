"""The official OpenAI Python SDK (Chat Completions, Responses, models) and a Copilot-style
client against the example gateway, which relays to the fake upstream and records into
SQLite. Each test checks what the SDK got, what reached the upstream and the rows recorded
for it (spec: openai-chat.md, openai-responses.md, copilot.md, routing.md, recorder.md,
example-gateway.md).

Every request the SDK makes is captured with an httpx response hook (`Exchanges`), so a test
knows the exact bytes the SDK sent and the headers it got back, streaming helpers included.
The fake upstream logs a SHA-256 of every request body and of every credential header, which
lets a test compare the bytes and the credential that reached it without storing a secret.
"""

import hashlib
import json
import re

import openai
import pytest

import fake_upstream as fake
from conftest import (
    ACTOR,
    COPILOT_TOKEN,
    COPILOT_TOKEN_HINT,
    GATEWAY_TOKEN,
    OPENAI_KEY,
    OPENAI_KEY_HINT,
    assert_no_secrets,
)

MODEL = "gpt-5"
COPILOT_MODEL = "claude-sonnet-4.5"
INTERCEPTION_HEADER = "x-aibridge-interception-id"
UUID_V7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
USER_AGENT = "OpenAI/Python %s" % openai.__version__
FAKE_REPLY = fake.REPLY_TEXT
WEATHER_PARAMETERS = {"type": "object", "properties": {"location": {"type": "string"}},
                      "required": ["location"]}
CHAT_WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a location.",
    "parameters": WEATHER_PARAMETERS}}
RESPONSES_WEATHER_TOOL = {"type": "function", "name": "get_weather",
                          "description": "Current weather for a location.",
                          "parameters": WEATHER_PARAMETERS, "strict": False}
FAKE_TOOL_INPUT = {"location": "Paris"}  # what the fake's get_weather call carries
TOOL_MODE = {"x-fake-mode": "tool"}
USAGE_ADDED_BY_BRIDGE = b',"stream_options":{"include_usage":true}'
GATEWAY_TOKEN_ERROR = {"error": {"message": "aibridge: missing or invalid gateway token",
                                 "type": "invalid_request_error", "param": None,
                                 "code": "invalid_api_key"}}
COPILOT_TOKEN_ERROR = {"error": {
    "message": "aibridge: this provider requires your own token in the Authorization header "
               "(Bearer)",
    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
BACKGROUND_ERROR = {"error": {"message": "aibridge: background responses are not supported",
                              "type": "invalid_request_error", "param": "background",
                              "code": "unsupported_parameter"}}


def sha256(value):
    return hashlib.sha256(value if isinstance(value, bytes) else value.encode()).hexdigest()


OPENAI_AUTH_SHA = sha256("Bearer " + OPENAI_KEY)
COPILOT_AUTH_SHA = sha256("Bearer " + COPILOT_TOKEN)


# --------------------------------------------------------------------------- clients

class Exchanges:
    """Every HTTP response the SDK received (with its request), via an httpx event hook."""

    def __init__(self):
        self.responses = []

    def hook(self, response):
        self.responses.append(response)

    def last(self):
        assert self.responses, "the SDK made no request"
        return self.responses[-1]

    def interception_id(self):
        return self.last().headers[INTERCEPTION_HEADER]

    def sent(self):
        """The body bytes of the last request the SDK sent."""
        return self.last().request.content


def make_client(base_url, api_key, exchanges, **kwargs):
    return openai.OpenAI(
        base_url=base_url, api_key=api_key, max_retries=0, timeout=30.0,
        http_client=openai.DefaultHttpxClient(event_hooks={"response": [exchanges.hook]}),
        **kwargs)


@pytest.fixture
def exchanges():
    return Exchanges()


@pytest.fixture
def client(gateway, exchanges):
    return make_client(gateway.openai_base_url, GATEWAY_TOKEN, exchanges)


# --------------------------------------------------------------------------- checks

def header(headers, name):
    """A header value from a captured [[name, value], ...] list (case-insensitive)."""
    values = [v for (n, v) in headers if n.lower() == name.lower()]
    assert len(values) <= 1, "header %s sent %d times" % (name, len(values))
    return values[0] if values else None


def check_upstream_call(fake_upstream, mark, expected_body, path, *, auth_sha=OPENAI_AUTH_SHA):
    """Exactly one upstream request since mark, carrying exactly expected_body and exactly
    the expected Authorization value."""
    calls = fake_upstream.since(mark)
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["method"] == "POST"
    assert call["path"] == path
    headers = call["headers"]
    assert call["secret_sha256"].get("authorization") == auth_sha, "wrong upstream credential"
    assert header(headers, "x-api-key") is None, "a client x-api-key went upstream"
    assert header(headers, "user-agent") == USER_AGENT
    assert header(headers, "accept-encoding") == "identity", "the bridge parses the response"
    assert not [n for (n, _) in headers if n.lower().startswith("x-forwarded")]
    assert call["body_len"] == len(expected_body)
    assert call["body_sha256"] == sha256(expected_body), \
        "upstream body differs from %r" % expected_body[:300]
    return call


def check_interception(db, interception_id, *, api, streaming, model=MODEL, correlating=None,
                       provider="openai", credential_kind="centralized",
                       credential_hint=OPENAI_KEY_HINT, outcome="completed", error=None):
    assert UUID_V7_RE.match(interception_id), interception_id
    row = db.wait_ended(interception_id)
    assert row["id"] == interception_id
    assert row["initiator_id"] == ACTOR
    assert row["provider"] == provider
    assert row["provider_name"] == provider
    assert row["api"] == api
    assert row["model"] == model
    assert row["streaming"] == (1 if streaming else 0)
    assert row["client"] == "Unknown"
    assert row["client_session_id"] is None
    assert row["user_agent"] == USER_AGENT
    assert row["credential_kind"] == credential_kind
    assert row["credential_hint"] == credential_hint
    assert row["correlating_tool_call_id"] == correlating
    assert json.loads(row["metadata"]) == {}
    assert row["outcome"] == outcome
    assert row["error"] == error
    assert TIMESTAMP_RE.match(row["started_at"]), row["started_at"]
    assert TIMESTAMP_RE.match(row["ended_at"]), row["ended_at"]
    assert row["started_at"] <= row["ended_at"]
    assert_no_secrets(db)
    return row


def prompts(db, interception_id):
    return [(r["prompt"], r["provider_response_id"])
            for r in db.rows("aibridge_user_prompts", interception_id)]


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def chat_extras(usage):
    """The extras openai-chat.md derives from a Chat usage object."""
    extra = {}
    for details, field, name in (
            ("prompt_tokens_details", "audio_tokens", "prompt_audio"),
            ("completion_tokens_details", "reasoning_tokens", "completion_reasoning"),
            ("completion_tokens_details", "audio_tokens", "completion_audio"),
            ("completion_tokens_details", "accepted_prediction_tokens",
             "completion_accepted_prediction"),
            ("completion_tokens_details", "rejected_prediction_tokens",
             "completion_rejected_prediction")):
        value = (usage.get(details) or {}).get(field)
        if _int(value):
            extra[name] = value
    return extra


def assert_chat_token_rows(db, interception_id, completion_id, usage):
    """Exactly one token row, equal to the Chat usage dict the upstream sent (D9)."""
    rows = db.rows("aibridge_token_usages", interception_id)
    assert len(rows) == 1, rows
    row = rows[0]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    assert row["provider_response_id"] == completion_id
    assert row["input_tokens"] == max(0, usage["prompt_tokens"] - cached)
    assert row["output_tokens"] == usage["completion_tokens"]
    assert row["cache_read_input_tokens"] == cached
    assert row["cache_write_input_tokens"] == 0
    assert json.loads(row["extra"]) == chat_extras(usage)


def assert_responses_token_rows(db, interception_id, response_id, usage):
    """Exactly one token row, equal to the Responses usage dict the upstream sent (D9)."""
    rows = db.rows("aibridge_token_usages", interception_id)
    assert len(rows) == 1, rows
    row = rows[0]
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    assert row["provider_response_id"] == response_id
    assert row["input_tokens"] == max(0, usage["input_tokens"] - cached)
    assert row["output_tokens"] == usage["output_tokens"]
    assert row["cache_read_input_tokens"] == cached
    assert row["cache_write_input_tokens"] == 0
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
    assert json.loads(row["extra"]) == ({"output_reasoning": reasoning} if _int(reasoning) else {})


def assert_one_client_tool_row(db, interception_id, response_id, name, call_id, tool_input):
    tools = db.rows("aibridge_tool_usages", interception_id)
    assert len(tools) == 1, tools
    tool = tools[0]
    assert tool["provider_response_id"] == response_id
    assert tool["tool"] == name
    assert tool["tool_call_id"] == call_id
    assert json.loads(tool["input"]) == tool_input
    assert tool["injected"] == 0
    assert tool["provider_executed"] == 0
    assert tool["server_url"] is None
    assert tool["invocation_error"] is None


def with_usage_request(sent):
    """The body the bridge must send upstream for a streaming Chat request without
    stream_options (S2): the original bytes with `"stream_options":{"include_usage":true}`
    added as a new last key, nothing else changed."""
    end = sent.rstrip().rindex(b"}")
    return sent[:end] + USAGE_ADDED_BY_BRIDGE + sent[end:]


def usage_dict(model_usage):
    return model_usage.model_dump(exclude_none=True)


# --------------------------------------------------------------------------- Chat Completions

def test_chat_blocking(client, exchanges, fake_upstream, db):
    mark = fake_upstream.mark()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "say hello"}],
        extra_headers={"x-fake-cached-tokens": "6"})
    completion = raw.parse()
    assert completion.choices[0].message.content == FAKE_REPLY
    assert completion.choices[0].finish_reason == "stop"
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/chat/completions")

    iid = raw.headers[INTERCEPTION_HEADER]
    check_interception(db, iid, api="chat_completions", streaming=False)
    assert prompts(db, iid) == [("say hello", completion.id)]
    usage = json.loads(raw.text)["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 6
    assert_chat_token_rows(db, iid, completion.id, usage)
    assert db.rows("aibridge_tool_usages", iid) == []
    assert db.rows("aibridge_model_thoughts", iid) == []


def test_chat_streaming_with_include_usage(client, exchanges, fake_upstream, db):
    mark = fake_upstream.mark()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "say hello"}], stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FAKE_REPLY
    # The client asked for usage: the usage-only chunk reaches it, last, exactly once.
    usage_chunks = [c for c in chunks if not c.choices and c.usage is not None]
    assert len(usage_chunks) == 1
    assert chunks[-1] is usage_chunks[0]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # The client already asked for usage: the body goes upstream unchanged.
    sent = exchanges.sent()
    assert b'"include_usage"' in sent
    check_upstream_call(fake_upstream, mark, sent, "/v1/chat/completions")

    iid = raw.headers[INTERCEPTION_HEADER]
    completion_id = chunks[0].id
    check_interception(db, iid, api="chat_completions", streaming=True)
    assert prompts(db, iid) == [("say hello", completion_id)]
    assert_chat_token_rows(db, iid, completion_id, usage_dict(usage_chunks[0].usage))
    assert db.rows("aibridge_tool_usages", iid) == []


def test_chat_stream_helper_without_stream_options(client, exchanges, fake_upstream, db):
    """The SDK's stream helper sends `stream: true` without stream_options. The bridge asks
    the upstream for usage itself (S2) and records it. By design of this project, the
    usage-only chunk the client did not ask for is withheld from it (the library's
    `ChatStream::withhold_usage_chunk`; NB: spec openai-chat.md S2 says it is relayed)."""
    mark = fake_upstream.mark()
    messages = [{"role": "user", "content": "say hello"}]
    with client.chat.completions.stream(model=MODEL, messages=messages) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    sent = exchanges.sent()
    assert b"stream_options" not in sent, "the SDK helper itself asked for usage"
    assert json.loads(sent)["stream"] is True
    assert final.choices[0].message.content == FAKE_REPLY
    assert final.choices[0].finish_reason == "stop"

    # Upstream: the client's bytes plus exactly `"stream_options":{"include_usage":true}`.
    call = check_upstream_call(fake_upstream, mark, with_usage_request(sent),
                               "/v1/chat/completions")
    assert list(call["body"])[-1] == "stream_options"
    assert call["body"]["stream_options"] == {"include_usage": True}

    # The client did not ask for usage: no usage-only chunk reached it ...
    assert chunks, "no chunk reached the SDK"
    assert not [c for c in chunks if not c.choices and c.usage is not None], \
        "a usage-only chunk reached a client that did not ask for it"
    assert all(c.usage is None for c in chunks)
    assert final.usage is None
    assert all(c.id == final.id for c in chunks)

    # ... but the usage the upstream sent is recorded.
    iid = exchanges.interception_id()
    check_interception(db, iid, api="chat_completions", streaming=True)
    assert prompts(db, iid) == [("say hello", final.id)]
    assert_chat_token_rows(db, iid, final.id, fake.chat_usage(call["body"]["messages"]))


def test_chat_tool_round_trip(client, exchanges, fake_upstream, db):
    question = [{"role": "user", "content": "weather?"}]

    # 1. Streamed answer with a tool call (the client asks for usage itself).
    mark = fake_upstream.mark()
    with client.chat.completions.stream(
            model=MODEL, messages=question, tools=[CHAT_WEATHER_TOOL],
            stream_options={"include_usage": True}, extra_headers=TOOL_MODE) as stream:
        first = stream.get_final_completion()
    first_id = exchanges.interception_id()
    call = check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/chat/completions")
    assert header(call["headers"], "x-fake-mode") == "tool"
    assert first.choices[0].finish_reason == "tool_calls"
    tool_calls = first.choices[0].message.tool_calls
    assert len(tool_calls) == 1
    tool_call = tool_calls[0]
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == FAKE_TOOL_INPUT
    assert tool_call.id.startswith("call_")

    check_interception(db, first_id, api="chat_completions", streaming=True)
    assert prompts(db, first_id) == [("weather?", first.id)]
    assert_one_client_tool_row(db, first_id, first.id, "get_weather", tool_call.id,
                               FAKE_TOOL_INPUT)
    assert first.usage is not None
    assert_chat_token_rows(db, first_id, first.id, usage_dict(first.usage))

    # 2. The tool result goes back (blocking); the model answers with text.
    mark = fake_upstream.mark()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, tools=[CHAT_WEATHER_TOOL], extra_headers=TOOL_MODE,
        messages=question + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": tool_call.id, "type": "function",
                 "function": {"name": "get_weather",
                              "arguments": tool_call.function.arguments}}]},
            {"role": "tool", "tool_call_id": tool_call.id, "content": "Sunny, 21 C"},
        ])
    final = raw.parse()
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == FAKE_REPLY
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/chat/completions")

    second_id = raw.headers[INTERCEPTION_HEADER]
    assert second_id != first_id
    check_interception(db, second_id, api="chat_completions", streaming=False,
                       correlating=tool_call.id)
    assert prompts(db, second_id) == [], "a tool continuation has no prompt"
    assert db.rows("aibridge_tool_usages", second_id) == []
    assert_chat_token_rows(db, second_id, final.id, json.loads(raw.text)["usage"])


def test_chat_upstream_error_is_relayed_verbatim(client, exchanges, fake_upstream, db):
    mark = fake_upstream.mark()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "say hello"}],
            extra_headers={"x-fake-error": "400"})
    err = info.value
    assert err.status_code == 400
    assert err.response.json() == {"error": {"message": "fake upstream error 400",
                                             "type": "invalid_request_error", "param": None,
                                             "code": None}}
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/chat/completions")

    iid = err.response.headers[INTERCEPTION_HEADER]
    check_interception(db, iid, api="chat_completions", streaming=False, outcome="failed",
                       error="upstream returned 400: invalid_request_error: "
                             "fake upstream error 400")
    assert [p for (p, _) in prompts(db, iid)] == ["say hello"], "prompt recorded (S14)"
    assert db.rows("aibridge_token_usages", iid) == []


# --------------------------------------------------------------------------- Responses

def test_responses_blocking(client, exchanges, fake_upstream, db):
    mark = fake_upstream.mark()
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="say hello", extra_headers={"x-fake-cached-tokens": "4"})
    response = raw.parse()
    assert response.output_text == FAKE_REPLY
    assert response.status == "completed"
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/responses")

    iid = raw.headers[INTERCEPTION_HEADER]
    check_interception(db, iid, api="responses", streaming=False)
    assert prompts(db, iid) == [("say hello", response.id)]
    usage = json.loads(raw.text)["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 4
    assert_responses_token_rows(db, iid, response.id, usage)
    assert db.rows("aibridge_tool_usages", iid) == []
    assert db.rows("aibridge_model_thoughts", iid) == []


def test_responses_streaming(client, exchanges, fake_upstream, db):
    mark = fake_upstream.mark()
    user_message = {"role": "user", "content": [{"type": "input_text", "text": "Hi there."},
                                                {"type": "input_text", "text": "say hello"}]}
    with client.responses.stream(model=MODEL, input=[user_message],
                                 extra_headers={"x-fake-cached-tokens": "3"}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert exchanges.last().headers["content-type"].startswith("text/event-stream")
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == FAKE_REPLY
    assert [e.sequence_number for e in events] == list(range(len(events))), "relayed as sent"
    assert final.output_text == FAKE_REPLY
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/responses")

    iid = exchanges.interception_id()
    check_interception(db, iid, api="responses", streaming=True)
    # Prompt of an input array: the input_text parts of the last (user) item, joined by \n.
    assert prompts(db, iid) == [("Hi there.\nsay hello", final.id)]
    usage = usage_dict(final.usage)
    assert usage["input_tokens_details"]["cached_tokens"] == 3
    assert_responses_token_rows(db, iid, final.id, usage)
    assert db.rows("aibridge_tool_usages", iid) == []


def test_responses_tool_round_trip(client, exchanges, fake_upstream, db):
    question = {"role": "user", "content": "weather?"}

    # 1. Streamed answer with a function call.
    mark = fake_upstream.mark()
    with client.responses.stream(model=MODEL, input=[question], tools=[RESPONSES_WEATHER_TOOL],
                                 extra_headers=TOOL_MODE) as stream:
        first = stream.get_final_response()
    first_id = exchanges.interception_id()
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/responses")
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    fn_call = calls[0]
    assert fn_call.name == "get_weather"
    assert json.loads(fn_call.arguments) == FAKE_TOOL_INPUT
    assert fn_call.call_id.startswith("call_")

    check_interception(db, first_id, api="responses", streaming=True)
    assert prompts(db, first_id) == [("weather?", first.id)]
    assert_one_client_tool_row(db, first_id, first.id, "get_weather", fn_call.call_id,
                               FAKE_TOOL_INPUT)
    assert_responses_token_rows(db, first_id, first.id, usage_dict(first.usage))

    # 2. The function output goes back (blocking); the model answers with text.
    mark = fake_upstream.mark()
    raw = client.responses.with_raw_response.create(
        model=MODEL, tools=[RESPONSES_WEATHER_TOOL], extra_headers=TOOL_MODE,
        input=[question, fn_call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": fn_call.call_id,
                "output": "Sunny, 21 C"}])
    final = raw.parse()
    assert final.output_text == FAKE_REPLY
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/responses")

    second_id = raw.headers[INTERCEPTION_HEADER]
    assert second_id != first_id
    check_interception(db, second_id, api="responses", streaming=False,
                       correlating=fn_call.call_id)
    assert prompts(db, second_id) == [], "a tool continuation has no prompt"
    assert db.rows("aibridge_tool_usages", second_id) == []
    assert_responses_token_rows(db, second_id, final.id, json.loads(raw.text)["usage"])


def test_responses_conversation_with_previous_response_id(client, exchanges, fake_upstream,
                                                          db):
    # 1. Blocking first turn.
    raw = client.responses.with_raw_response.create(model=MODEL, input="My name is Alice.")
    first = raw.parse()
    first_iid = raw.headers[INTERCEPTION_HEADER]
    assert first.output_text == FAKE_REPLY

    # 2. Streamed second turn chained on the id the SDK got. The fake knows only the ids it
    # issued (an unknown one gets 400 previous_response_not_found), so a rewritten id fails.
    mark = fake_upstream.mark()
    with client.responses.stream(model=MODEL, input="What is my name?",
                                 previous_response_id=first.id) as stream:
        second = stream.get_final_response()
    second_iid = exchanges.interception_id()
    call = check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/responses")
    assert call["body"]["previous_response_id"] == first.id
    assert second.previous_response_id == first.id
    assert second.id != first.id
    assert second.output_text == FAKE_REPLY

    check_interception(db, first_iid, api="responses", streaming=False)
    check_interception(db, second_iid, api="responses", streaming=True)
    assert prompts(db, first_iid) == [("My name is Alice.", first.id)]
    assert prompts(db, second_iid) == [("What is my name?", second.id)]
    assert_responses_token_rows(db, first_iid, first.id, json.loads(raw.text)["usage"])
    assert_responses_token_rows(db, second_iid, second.id, usage_dict(second.usage))

    # 3. An id the upstream never issued: its 400 reaches the SDK verbatim.
    mark = fake_upstream.mark()
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Who am I?",
                                previous_response_id="resp_unknown")
    err = info.value
    assert err.code == "previous_response_not_found"
    assert err.response.json() == {"error": {
        "message": "Previous response with id 'resp_unknown' not found.",
        "type": "invalid_request_error", "param": "previous_response_id",
        "code": "previous_response_not_found"}}
    check_upstream_call(fake_upstream, mark, exchanges.sent(), "/v1/responses")
    iid = err.response.headers[INTERCEPTION_HEADER]
    check_interception(db, iid, api="responses", streaming=False, outcome="failed",
                       error="upstream returned 400: previous_response_not_found: "
                             "Previous response with id 'resp_unknown' not found.")
    assert db.rows("aibridge_token_usages", iid) == []


def test_background_response_is_rejected(client, fake_upstream, db):
    before = db.count("aibridge_interceptions")
    mark = fake_upstream.mark()
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="say hello", background=True)
    err = info.value
    assert err.status_code == 400
    assert err.message.endswith("aibridge: background responses are not supported")
    assert err.code == "unsupported_parameter"
    assert err.param == "background"
    assert err.response.headers["content-type"].startswith("application/json")
    assert err.response.json() == BACKGROUND_ERROR
    assert fake_upstream.since(mark) == [], "rejected requests never reach the upstream"
    assert db.count("aibridge_interceptions") == before, "rejected requests are not recorded"


# --------------------------------------------------------------------------- passthrough, auth

def test_models_list_is_passthrough(client, exchanges, fake_upstream, db):
    tables = ("aibridge_interceptions", "aibridge_token_usages", "aibridge_user_prompts")
    before = {t: db.count(t) for t in tables}
    mark = fake_upstream.mark()
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "gpt-5" in ids and "gpt-4o-mini" in ids
    assert INTERCEPTION_HEADER not in exchanges.last().headers

    calls = fake_upstream.since(mark)
    assert [(c["method"], c["path"]) for c in calls] == [("GET", "/v1/models")]
    assert calls[0]["secret_sha256"].get("authorization") == OPENAI_AUTH_SHA
    assert {t: db.count(t) for t in tables} == before, "passthrough requests are not recorded"


def test_missing_or_wrong_gateway_token_is_rejected(gateway, client, exchanges, fake_upstream,
                                                    db):
    before = db.count("aibridge_interceptions")
    mark = fake_upstream.mark()
    messages = [{"role": "user", "content": "say hello"}]

    # No credential at all: the SDK is told to omit its Authorization header.
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=MODEL, messages=messages,
                                       extra_headers={"Authorization": openai.Omit()})
    assert "authorization" not in exchanges.last().request.headers
    err = info.value
    assert err.status_code == 401
    assert err.response.json() == GATEWAY_TOKEN_ERROR
    assert err.response.headers["www-authenticate"] == "Bearer"

    # A token the gateway does not know.
    wrong = make_client(gateway.openai_base_url, "tok-mallory", exchanges)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.responses.create(model=MODEL, input="say hello")
    assert info.value.response.json() == GATEWAY_TOKEN_ERROR
    assert info.value.response.headers["www-authenticate"] == "Bearer"

    assert fake_upstream.since(mark) == []
    assert db.count("aibridge_interceptions") == before


# --------------------------------------------------------------------------- Copilot

def copilot_client(gateway, exchanges):
    """A Copilot-style client: its Copilot token as `Authorization: Bearer` (what the SDK does
    with api_key), the gateway token in `x-api-key` (example-gateway.md)."""
    return make_client(gateway.copilot_base_url, COPILOT_TOKEN, exchanges,
                       default_headers={"x-api-key": GATEWAY_TOKEN,
                                        "Editor-Version": "vscode/1.99.0",
                                        "Copilot-Integration-Id": "vscode-chat"})


def test_copilot_chat_sends_the_clients_token_upstream(gateway, exchanges, fake_upstream, db):
    client = copilot_client(gateway, exchanges)
    mark = fake_upstream.mark()
    raw = client.chat.completions.with_raw_response.create(
        model=COPILOT_MODEL, messages=[{"role": "user", "content": "say hello"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == FAKE_REPLY

    # Upstream: {COPILOT_BASE_URL}/chat/completions with exactly the client's bearer token
    # (the gateway token was consumed by the gateway; x-api-key is never forwarded).
    call = check_upstream_call(fake_upstream, mark, exchanges.sent(), "/chat/completions",
                               auth_sha=COPILOT_AUTH_SHA)
    assert header(call["headers"], "editor-version") == "vscode/1.99.0"
    assert header(call["headers"], "copilot-integration-id") == "vscode-chat"

    iid = raw.headers[INTERCEPTION_HEADER]
    check_interception(db, iid, api="chat_completions", streaming=False, model=COPILOT_MODEL,
                       provider="copilot", credential_kind="byok",
                       credential_hint=COPILOT_TOKEN_HINT)
    assert prompts(db, iid) == [("say hello", completion.id)]
    assert_chat_token_rows(db, iid, completion.id, json.loads(raw.text)["usage"])


def test_copilot_without_bearer_token_is_rejected(gateway, exchanges, fake_upstream, db):
    client = copilot_client(gateway, exchanges)
    before = db.count("aibridge_interceptions")
    mark = fake_upstream.mark()
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(
            model=COPILOT_MODEL, messages=[{"role": "user", "content": "say hello"}],
            extra_headers={"Authorization": openai.Omit()})
    request = exchanges.last().request
    assert "authorization" not in request.headers and request.headers["x-api-key"]
    err = info.value
    assert err.status_code == 401
    assert err.response.headers["content-type"].startswith("application/json")
    assert err.response.json() == COPILOT_TOKEN_ERROR
    assert fake_upstream.since(mark) == []
    assert db.count("aibridge_interceptions") == before


def test_no_openai_or_copilot_secret_in_the_database(db):
    rows = db.query("SELECT provider, credential_kind, credential_hint "
                    "FROM aibridge_interceptions WHERE provider IN ('openai', 'copilot')")
    assert rows, "no OpenAI/Copilot interception recorded"
    assert_no_secrets(db)
    for row in rows:
        expected = ({"credential_kind": "centralized", "credential_hint": OPENAI_KEY_HINT}
                    if row["provider"] == "openai" else
                    {"credential_kind": "byok", "credential_hint": COPILOT_TOKEN_HINT})
        assert {k: row[k] for k in expected} == expected, row

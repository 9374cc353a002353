"""The official Anthropic Python SDK against the example gateway, which relays to the fake
upstream and records into SQLite. Each test checks what the SDK got, what reached the
upstream, and the rows recorded for it (spec: anthropic.md, routing.md, recorder.md,
example-gateway.md)."""

import json
import re
import time
import urllib.error
import urllib.request

import anthropic
import pytest

from conftest import (
    ACTOR,
    ANTHROPIC_KEY,
    ANTHROPIC_KEY_HINT,
    COPILOT_TOKEN_HINT,
    GATEWAY_TOKEN,
    OPENAI_KEY_HINT,
    RECORD_DEADLINE,
    assert_no_secrets,
    assert_token_row,
    running_gateway,
)

MODEL = "claude-sonnet-5"
INTERCEPTION_HEADER = "x-aibridge-interception-id"
UUID_V7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
# How the fake logs the configured key it received (first 8 chars + length).
MASKED_UPSTREAM_KEY = "%s***(len=%d)" % (ANTHROPIC_KEY[:8], len(ANTHROPIC_KEY))
FAKE_REPLY = "Hello from the fake upstream"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a location.",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                     "required": ["location"]},
}
GATEWAY_TOKEN_ERROR = {
    "type": "error",
    "error": {"type": "authentication_error",
              "message": "aibridge: missing or invalid gateway token"},
}


def header(headers, name):
    """A header value from a captured [[name, value], ...] list (case-insensitive)."""
    values = [v for (n, v) in headers if n.lower() == name.lower()]
    assert len(values) <= 1, "header %s sent %d times" % (name, len(values))
    return values[0] if values else None


def check_interception(db, interception_id, *, streaming, correlating=None,
                       outcome="completed", error=None):
    assert UUID_V7_RE.match(interception_id), interception_id
    row = db.wait_ended(interception_id)
    assert row["id"] == interception_id
    assert row["initiator_id"] == ACTOR
    assert row["provider"] == "anthropic"
    assert row["provider_name"] == "anthropic"
    assert row["api"] == "messages"
    assert row["model"] == MODEL
    assert row["streaming"] == (1 if streaming else 0)
    assert row["client"] == "Unknown"
    assert row["client_session_id"] is None
    assert row["user_agent"] == "Anthropic/Python %s" % anthropic.__version__
    assert row["credential_kind"] == "centralized"
    assert row["credential_hint"] == ANTHROPIC_KEY_HINT
    assert row["correlating_tool_call_id"] == correlating
    assert json.loads(row["metadata"]) == {}
    assert row["outcome"] == outcome
    assert row["error"] == error
    assert TIMESTAMP_RE.match(row["started_at"]), row["started_at"]
    assert TIMESTAMP_RE.match(row["ended_at"]), row["ended_at"]
    assert row["started_at"] <= row["ended_at"]
    assert_no_secrets(db)
    return row


def check_upstream_call(fake_upstream, mark, sent_bytes, path="/v1/messages"):
    """Exactly one upstream request since mark: the client's bytes, the configured key."""
    calls = fake_upstream.since(mark)
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["method"] == "POST"
    assert call["path"] == path
    headers = call["headers"]
    assert header(headers, "x-api-key") == MASKED_UPSTREAM_KEY
    assert header(headers, "authorization") is None, "the gateway token leaked upstream"
    assert header(headers, "user-agent") == "Anthropic/Python %s" % anthropic.__version__
    assert header(headers, "anthropic-version") is not None
    assert header(headers, "accept-encoding") == "identity", "the bridge parses the response"
    assert not [n for (n, _) in headers if n.lower().startswith("x-forwarded")]
    assert call["body_len"] == len(sent_bytes)
    assert call["body"] == json.loads(sent_bytes)
    return call


def prompts(db, interception_id):
    return [(r["prompt"], r["provider_response_id"])
            for r in db.rows("aibridge_user_prompts", interception_id)]


def test_blocking_message(anthropic_client, fake_upstream, db):
    mark = fake_upstream.mark()
    raw = anthropic_client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "say hello"}])
    message = raw.parse()
    assert message.content[0].text == FAKE_REPLY
    assert message.stop_reason == "end_turn"
    check_upstream_call(fake_upstream, mark, raw.http_request.content)

    iid = raw.headers[INTERCEPTION_HEADER]
    check_interception(db, iid, streaming=False)
    assert prompts(db, iid) == [("say hello", message.id)]
    tokens = db.rows("aibridge_token_usages", iid)
    assert len(tokens) == 1
    assert_token_row(tokens[0], message.id, raw.http_response.json()["usage"])
    assert db.rows("aibridge_tool_usages", iid) == []
    assert db.rows("aibridge_model_thoughts", iid) == []


def test_streaming_message(anthropic_client, fake_upstream, db):
    mark = fake_upstream.mark()
    with anthropic_client.messages.stream(
            model=MODEL, max_tokens=64,
            messages=[{"role": "user", "content": "say hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
        sent = stream.response.request.content
    assert text == FAKE_REPLY
    assert final.stop_reason == "end_turn"
    assert headers["content-type"].startswith("text/event-stream")
    check_upstream_call(fake_upstream, mark, sent)

    iid = headers[INTERCEPTION_HEADER]
    check_interception(db, iid, streaming=True)
    assert prompts(db, iid) == [("say hello", final.id)]
    tokens = db.rows("aibridge_token_usages", iid)
    assert len(tokens) == 1, "exactly one token row per streamed message (D9)"
    assert_token_row(tokens[0], final.id, final.usage.model_dump(exclude_none=True))
    assert db.rows("aibridge_tool_usages", iid) == []


def test_tool_round_trip(anthropic_client, fake_upstream, db):
    fake_tool_mode = {"x-fake-mode": "tool"}
    question = [{"role": "user", "content": "weather?"}]

    # 1. Streamed answer with a tool call.
    mark = fake_upstream.mark()
    with anthropic_client.messages.stream(
            model=MODEL, max_tokens=64, tools=[WEATHER_TOOL], messages=question,
            extra_headers=fake_tool_mode) as stream:
        first = stream.get_final_message()
        first_id = stream.response.headers[INTERCEPTION_HEADER]
        sent = stream.response.request.content
    call = check_upstream_call(fake_upstream, mark, sent)
    assert header(call["headers"], "x-fake-mode") == "tool"
    assert first.stop_reason == "tool_use"
    tool_uses = [b for b in first.content if b.type == "tool_use"]
    assert len(tool_uses) == 1
    tool_use = tool_uses[0]
    assert tool_use.name == "get_weather"

    check_interception(db, first_id, streaming=True)
    assert prompts(db, first_id) == [("weather?", first.id)]
    tools = db.rows("aibridge_tool_usages", first_id)
    assert len(tools) == 1
    tool = tools[0]
    assert tool["provider_response_id"] == first.id
    assert tool["tool"] == "get_weather"
    assert tool["tool_call_id"] == tool_use.id
    assert json.loads(tool["input"]) == tool_use.input
    assert tool["injected"] == 0
    assert tool["provider_executed"] == 0
    assert tool["server_url"] is None
    assert tool["invocation_error"] is None
    tokens = db.rows("aibridge_token_usages", first_id)
    assert len(tokens) == 1
    assert_token_row(tokens[0], first.id, first.usage.model_dump(exclude_none=True))

    # 2. The tool result goes back (blocking); the model answers with text.
    mark = fake_upstream.mark()
    raw = anthropic_client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, tools=[WEATHER_TOOL], extra_headers=fake_tool_mode,
        messages=question + [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                              for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                          "content": "Sunny, 21 C"}]},
        ])
    final = raw.parse()
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == FAKE_REPLY
    check_upstream_call(fake_upstream, mark, raw.http_request.content)

    second_id = raw.headers[INTERCEPTION_HEADER]
    assert second_id != first_id
    check_interception(db, second_id, streaming=False, correlating=tool_use.id)
    assert prompts(db, second_id) == [], "a tool continuation has no prompt"
    assert db.rows("aibridge_tool_usages", second_id) == []
    tokens = db.rows("aibridge_token_usages", second_id)
    assert len(tokens) == 1
    assert_token_row(tokens[0], final.id, raw.http_response.json()["usage"])


def test_count_tokens_and_models_are_passthrough(anthropic_client, fake_upstream, db):
    before = {t: db.count(t) for t in ("aibridge_interceptions", "aibridge_token_usages",
                                       "aibridge_user_prompts")}
    mark = fake_upstream.mark()

    raw = anthropic_client.messages.with_raw_response.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().input_tokens > 0
    assert INTERCEPTION_HEADER not in raw.headers
    models_raw = anthropic_client.models.with_raw_response.list()
    ids = [m.id for m in models_raw.parse().data]
    assert "claude-sonnet-4-5" in ids
    assert INTERCEPTION_HEADER not in models_raw.headers

    calls = fake_upstream.since(mark)
    assert [(c["method"], c["path"]) for c in calls] == [
        ("POST", "/v1/messages/count_tokens"), ("GET", "/v1/models")]
    for c in calls:
        assert header(c["headers"], "x-api-key") == MASKED_UPSTREAM_KEY
        assert header(c["headers"], "authorization") is None
    assert calls[0]["body_len"] == len(raw.http_request.content)
    assert {t: db.count(t) for t in before} == before, "passthrough requests are not recorded"


def test_empty_model_is_rejected_with_an_anthropic_error(anthropic_client, fake_upstream, db):
    before = db.count("aibridge_interceptions")
    mark = fake_upstream.mark()
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.messages.create(
            model="", max_tokens=64, messages=[{"role": "user", "content": "say hello"}])
    err = info.value
    assert err.status_code == 400
    assert err.response.headers["content-type"].startswith("application/json")
    assert err.body == {
        "type": "error",
        "error": {"type": "invalid_request_error",
                  "message": 'aibridge: "model" must be a non-empty string'},
    }
    assert fake_upstream.since(mark) == [], "rejected requests never reach the upstream"
    assert db.count("aibridge_interceptions") == before, "rejected requests are not recorded"


def test_wrong_or_missing_gateway_token_is_rejected(gateway, fake_upstream, db):
    before = db.count("aibridge_interceptions")
    mark = fake_upstream.mark()
    client = anthropic.Anthropic(base_url=gateway.anthropic_base_url, api_key="tok-mallory",
                                 max_retries=0, timeout=30.0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=MODEL, max_tokens=64,
                               messages=[{"role": "user", "content": "say hello"}])
    err = info.value
    assert err.status_code == 401
    assert err.body == GATEWAY_TOKEN_ERROR
    assert err.response.headers["www-authenticate"] == "Bearer"

    # No credential at all.
    req = urllib.request.Request(
        gateway.anthropic_base_url + "/v1/messages", method="POST",
        data=json.dumps({"model": MODEL, "max_tokens": 8,
                         "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 401
    assert info.value.headers["www-authenticate"] == "Bearer"
    assert json.loads(info.value.read()) == GATEWAY_TOKEN_ERROR

    assert fake_upstream.since(mark) == []
    assert db.count("aibridge_interceptions") == before


def test_gateway_token_in_x_api_key_is_accepted_and_removed(gateway, fake_upstream, db):
    mark = fake_upstream.mark()
    body = json.dumps({"model": MODEL, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "say hello"}]}).encode()
    req = urllib.request.Request(
        gateway.anthropic_base_url + "/v1/messages?beta=true", method="POST", data=body,
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                 "x-api-key": GATEWAY_TOKEN, "user-agent": "Anthropic/Python %s"
                 % anthropic.__version__})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        iid = resp.headers[INTERCEPTION_HEADER]
        payload = json.loads(resp.read())
    assert payload["content"][0]["text"] == FAKE_REPLY
    call = check_upstream_call(fake_upstream, mark, body, path="/v1/messages?beta=true")
    assert header(call["headers"], "x-api-key") == MASKED_UPSTREAM_KEY
    check_interception(db, iid, streaming=False)


def test_upstream_error_is_relayed_verbatim(anthropic_client, fake_upstream, db):
    mark = fake_upstream.mark()
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "say hello"}],
            extra_headers={"x-fake-error": "400"})
    err = info.value
    assert err.status_code == 400
    assert err.body["type"] == "error"
    assert err.body["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 205429 tokens > 200000 maximum"}
    assert err.body["request_id"].startswith("req_")
    assert len(fake_upstream.since(mark)) == 1, "x-should-retry: false ⇒ no retry"

    iid = err.response.headers[INTERCEPTION_HEADER]
    check_interception(
        db, iid, streaming=False, outcome="failed",
        error="upstream returned 400: invalid_request_error: "
              "prompt is too long: 205429 tokens > 200000 maximum")
    assert db.rows("aibridge_token_usages", iid) == []
    assert [p for (p, _) in prompts(db, iid)] == ["say hello"], "prompt recorded (S14)"


def test_healthz_and_metrics(gateway, anthropic_client, db):
    raw = anthropic_client.messages.with_raw_response.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "say hello"}])
    db.wait_ended(raw.headers[INTERCEPTION_HEADER])
    with urllib.request.urlopen(gateway.url + "/healthz", timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        assert resp.read() == b"ok\n"

    # interceptions_total is observed when an interception ends, which the client may see a
    # moment before the bridge does: poll for it (bounded).
    counter = re.compile(r'^interceptions_total\{[^}]*provider="anthropic"[^}]*\} [1-9]', re.M)
    deadline = time.monotonic() + RECORD_DEADLINE
    while True:
        with urllib.request.urlopen(gateway.url + "/metrics", timeout=30) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
            metrics = resp.read().decode()
        if counter.search(metrics) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert counter.search(metrics), metrics[:3000]
    assert ANTHROPIC_KEY not in metrics and GATEWAY_TOKEN not in metrics


def test_no_secret_anywhere_in_the_database(db):
    assert db.count("aibridge_interceptions") > 0
    assert_no_secrets(db)
    hints = {r["credential_hint"] for r in db.query(
        "SELECT credential_hint FROM aibridge_interceptions")}
    assert ANTHROPIC_KEY_HINT in hints
    # The gateway is shared with the OpenAI/Copilot tests, which may have run first.
    assert hints <= {ANTHROPIC_KEY_HINT, OPENAI_KEY_HINT, COPILOT_TOKEN_HINT}


def test_shutdown_drains_records_and_exits_zero(fake_upstream, tmp_path):
    # A gateway of its own: leaving the block sends SIGTERM and asserts exit code 0.
    with running_gateway(tmp_path, fake_upstream.url) as gw:
        client = anthropic.Anthropic(base_url=gw.anthropic_base_url, api_key=GATEWAY_TOKEN,
                                     max_retries=0, timeout=30.0)
        with client.messages.stream(model=MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": "say hello"}]) as s:
            final = s.get_final_message()
            iid = s.response.headers[INTERCEPTION_HEADER]
    # The process is gone; everything it recorded is in the file.
    row = gw.db.interception(iid)
    assert row is not None and row["ended_at"] is not None and row["outcome"] == "completed"
    tokens = gw.db.rows("aibridge_token_usages", iid)
    assert len(tokens) == 1
    assert_token_row(tokens[0], final.id, final.usage.model_dump(exclude_none=True))

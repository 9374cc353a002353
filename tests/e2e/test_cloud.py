"""The official Anthropic Python SDK through the example gateway's `bedrock` and `vertex`
providers (cloud-anthropic.md), against the mock clouds of mock_cloud.py: a mock Bedrock
that checks each call's SigV4 signature and answers blocking JSON or AWS EventStream, a mock
Vertex that requires the bearer token its mock token endpoint issued for the gateway's
service-account key, and answers JSON or SSE. One text turn (blocking and streaming), one
client tool round trip, /v1/models and count_tokens per cloud; the records carry the
mapped model.
"""

from pathlib import Path

import anthropic
import pytest

from conftest import GATEWAY_TOKEN, RECORD_DEADLINE
from mock_cloud import (AWS_SECRET, BEDROCK_MODEL, GOOGLE_TOKEN, TEXT, TOOL_TEXT, VERTEX_MODEL,
                        cloud_gateway as start_cloud_gateway)


@pytest.fixture(scope="module")
def cloud_gateway(tmp_path_factory):
    with start_cloud_gateway(tmp_path_factory.mktemp("cloud")) as (gw, cloud):
        yield gw, cloud


CLOUDS = [("bedrock", BEDROCK_MODEL), ("vertex", VERTEX_MODEL)]


def client(gw, name):
    return anthropic.Anthropic(base_url="%s/api/v2/aibridge/%s" % (gw.url, name),
                               api_key=GATEWAY_TOKEN, max_retries=0)


def recorded_model(gw, raw):
    iid = raw.headers["x-aibridge-interception-id"]
    return gw.db.wait_ended(iid, RECORD_DEADLINE)


@pytest.mark.parametrize("name,model", CLOUDS)
def test_text_turn_blocking_and_streaming(cloud_gateway, name, model):
    gw, cloud = cloud_gateway
    c = client(gw, name)
    raw = c.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64,
        messages=[{"role": "user", "content": "say hello"}])
    msg = raw.parse()
    assert msg.content[0].text == TEXT
    row = recorded_model(gw, raw)
    assert row["model"] == model and row["provider_name"] == name
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                           messages=[{"role": "user", "content": "say hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == TEXT
    assert final.usage.input_tokens == 21 and final.usage.output_tokens == 9


@pytest.mark.parametrize("name,model", CLOUDS)
@pytest.mark.parametrize("stream", [False, True])
def test_client_tool_round_trip(cloud_gateway, name, model, stream):
    gw, _ = cloud_gateway
    c = client(gw, name)
    tools = [{"name": "Read", "description": "Read a file",
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    messages = [{"role": "user", "content": "read a.txt"}]

    def ask():
        if stream:
            with c.messages.stream(model="claude-sonnet-4-5", max_tokens=64, tools=tools,
                                   messages=messages) as s:
                return s.get_final_message()
        return c.messages.create(model="claude-sonnet-4-5", max_tokens=64, tools=tools,
                                 messages=messages)

    first = ask()
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.name == "Read" and call.input == {"path": "a.txt"}
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "hi"}]}]
    second = ask()
    assert second.content[0].text == TOOL_TEXT


@pytest.mark.parametrize("name,model", CLOUDS)
def test_models_and_count_tokens(cloud_gateway, name, model):
    gw, _ = cloud_gateway
    c = client(gw, name)
    ids = [m.id for m in c.models.list()]
    assert model in ids
    n = c.messages.count_tokens(model="claude-sonnet-4-5",
                                messages=[{"role": "user", "content": "hi"}])
    assert n.input_tokens == 17


def test_no_aws_secret_or_google_token_in_logs_or_records(cloud_gateway):
    gw, cloud = cloud_gateway
    assert any(p.startswith("/model/") for p in cloud.paths())
    assert "/token" in cloud.paths()
    logs = Path(gw.stderr_path).read_text()
    for secret in (AWS_SECRET, GOOGLE_TOKEN):
        assert secret not in logs
        for value in gw.db.text_values():
            assert secret not in str(value)

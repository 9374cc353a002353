"""The official Anthropic Python SDK through the example gateway's `bedrock` and `vertex`
providers (cloud-anthropic.md), against mock clouds in this process: a mock Bedrock that
requires a SigV4 Authorization header and answers blocking JSON or AWS EventStream, a mock
Vertex that requires the bearer token its mock token endpoint issued for the gateway's
service-account key, and answers JSON or SSE. One text turn (blocking and streaming), one
client tool round trip, /v1/models and count_tokens per cloud; the records carry the
mapped model.
"""

import base64
import json
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import pytest

from conftest import GATEWAY_TOKEN, RECORD_DEADLINE, running_gateway

BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
BEDROCK_SMALL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
VERTEX_MODEL = "claude-sonnet-4-5@20250929"
GOOGLE_TOKEN = "ya29.e2e-google-token"
AWS_KEY_ID = "AKIAE2ETESTKEY000001"
AWS_SECRET = "e2eSECRETaccessKEY/000000000000000000"
TEXT = "Hello from the cloud."
TOOL_TEXT = "The file says hi."


def es_message(headers, payload):
    """One AWS EventStream message (string headers only)."""
    hb = b""
    for k, v in headers.items():
        kb, vb = k.encode(), v.encode()
        hb += bytes([len(kb)]) + kb + b"\x07" + struct.pack(">H", len(vb)) + vb
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + hb + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def answer(body, msg_id):
    """The Anthropic message for a request: a tool call for a declared tool until the
    conversation carries its result, else text."""
    last = body["messages"][-1]
    has_result = isinstance(last.get("content"), list) and any(
        b.get("type") == "tool_result" for b in last["content"])
    tools = body.get("tools") or []
    if tools and not has_result:
        content = [{"type": "tool_use", "id": "toolu_e2e1", "name": tools[0]["name"],
                    "input": {"path": "a.txt"}}]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": TOOL_TEXT if has_result else TEXT}]
        stop = "end_turn"
    return {"id": msg_id, "type": "message", "role": "assistant", "model": "claude",
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 21, "output_tokens": 9}}


def events(msg):
    """The Anthropic stream events of a message."""
    start = dict(msg, content=[], stop_reason=None, usage={"input_tokens": 21, "output_tokens": 1})
    out = [{"type": "message_start", "message": start}]
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            out.append({"type": "content_block_start", "index": i,
                        "content_block": {"type": "text", "text": ""}})
            out.append({"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": block["text"]}})
        else:
            out.append({"type": "content_block_start", "index": i,
                        "content_block": dict(block, input={})})
            out.append({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta",
                                  "partial_json": json.dumps(block["input"])}})
        out.append({"type": "content_block_stop", "index": i})
    out.append({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"]},
                "usage": {"output_tokens": 9}})
    out.append({"type": "message_stop"})
    return out


class MockCloud:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, ctype, data):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                with cloud.lock:
                    cloud.requests.append((self.path, dict(self.headers.items()), raw))
                    n = len(cloud.requests)
                auth = self.headers.get("authorization", "")
                if self.path == "/token":
                    return self.reply(200, "application/json", json.dumps(
                        {"access_token": GOOGLE_TOKEN, "expires_in": 3600}).encode())
                body = json.loads(raw)
                if self.path.startswith("/model/"):
                    if not auth.startswith("AWS4-HMAC-SHA256 Credential=%s/" % AWS_KEY_ID):
                        return self.reply(403, "application/json",
                                          b'{"message":"missing signature"}')
                    if self.path.endswith("/count-tokens"):
                        body = json.loads(base64.b64decode(body["input"]["invokeModel"]["body"]))
                    assert "model" not in body and "stream" not in body
                    assert body["anthropic_version"] == "bedrock-2023-05-31"
                    if self.path.endswith("/count-tokens"):
                        return self.reply(200, "application/json", b'{"inputTokens":17}')
                    msg = answer(body, "msg_b%d" % n)
                    if self.path.endswith("/invoke-with-response-stream"):
                        data = b"".join(es_message(
                            {":message-type": "event", ":event-type": "chunk",
                             ":content-type": "application/json"},
                            json.dumps({"bytes": base64.b64encode(
                                json.dumps(e).encode()).decode()}).encode())
                            for e in events(msg))
                        return self.reply(200, "application/vnd.amazon.eventstream", data)
                    return self.reply(200, "application/json", json.dumps(msg).encode())
                if "/publishers/anthropic/models/" in self.path:
                    if auth != "Bearer " + GOOGLE_TOKEN:
                        return self.reply(401, "application/json", json.dumps({"error": {
                            "code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}}).encode())
                    assert body["anthropic_version"] == "vertex-2023-10-16"
                    if self.path.endswith("/count-tokens:rawPredict"):
                        return self.reply(200, "application/json", b'{"input_tokens":17}')
                    assert "model" not in body
                    msg = answer(body, "msg_v%d" % n)
                    if self.path.endswith(":streamRawPredict"):
                        data = "".join("event: %s\ndata: %s\n\n" % (e["type"], json.dumps(e))
                                       for e in events(msg)).encode()
                        return self.reply(200, "text/event-stream", data)
                    return self.reply(200, "application/json", json.dumps(msg).encode())
                return self.reply(404, "application/json", b'{"message":"unknown path"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self):
        with self.lock:
            return [p for p, _, _ in self.requests]


@pytest.fixture(scope="module")
def cloud_gateway(tmp_path_factory):
    cloud = MockCloud()
    tmp = tmp_path_factory.mktemp("cloud")
    # The test-only key of the Rust tests (tests/fixtures/cloud), never a real account's.
    key = Path(__file__).resolve().parent.parent / "fixtures" / "cloud" / "test-sa-key.pem"
    sa = tmp / "sa.json"
    sa.write_text(json.dumps({
        "type": "service_account", "project_id": "e2e-project",
        "private_key_id": "k1", "private_key": key.read_text(),
        "client_email": "gw@e2e-project.iam.gserviceaccount.com",
        "token_uri": cloud.url + "/token",
    }))
    env = {
        "AIBRIDGE_BEDROCK_BASE_URL": cloud.url,
        "AIBRIDGE_BEDROCK_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AIBRIDGE_BEDROCK_MODEL": BEDROCK_MODEL,
        "AIBRIDGE_BEDROCK_SMALL_FAST_MODEL": BEDROCK_SMALL,
        "AIBRIDGE_VERTEX_PROJECT": "e2e-project",
        "AIBRIDGE_VERTEX_REGION": "us-east5",
        "AIBRIDGE_VERTEX_BASE_URL": cloud.url,
        "GOOGLE_APPLICATION_CREDENTIALS": str(sa),
        "AIBRIDGE_VERTEX_MODEL_MAP": "claude-*=" + VERTEX_MODEL,
    }
    with running_gateway(tmp, cloud.url, env) as gw:
        yield gw, cloud
    cloud.server.shutdown()


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

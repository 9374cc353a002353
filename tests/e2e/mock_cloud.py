"""Mock AWS Bedrock and Google Vertex AI, in the test process, shared by the cloud e2e tests
(test_cloud.py: the Anthropic Python SDK; test_claude_code_cloud.py: Claude Code).

The mock Bedrock recomputes the SigV4 signature of every call (canonical request, string to
sign, signing key: the AWS algorithm, written here independently of the gateway's signer) and
answers 403 if it differs; it answers 400 ValidationException to an InvokeModel body Bedrock
would reject (cloud-anthropic.md's rules: Anthropic-only fields and headers, unknown beta
flags, adaptive thinking); it answers blocking JSON or AWS EventStream. The mock Vertex issues
a bearer token at its token endpoint (the service-account key's `token_uri`), requires it on
every call and answers JSON or SSE. Every request is kept (`MockCloud.calls()`), with the
decoded Anthropic body, the signature check's verdict and the id of the message answered.

What the mock model answers is a function of the request body (`answer`), replaceable per
mock: `MockCloud(answer=…)`.
"""

import base64
import contextlib
import hashlib
import hmac
import json
import re
import struct
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import running_gateway

BEDROCK_REGION = "us-east-1"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
BEDROCK_SMALL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
VERTEX_PROJECT = "e2e-project"
VERTEX_REGION = "us-east5"
VERTEX_MODEL = "claude-sonnet-4-5@20250929"
VERTEX_SMALL = "claude-haiku-4-5@20251001"
GOOGLE_TOKEN = "ya29.e2e-google-token"
AWS_KEY_ID = "AKIAE2ETESTKEY000001"
AWS_SECRET = "e2eSECRETaccessKEY/000000000000000000"
TEXT = "Hello from the cloud."
TOOL_TEXT = "The file says hi."
USAGE = {"input_tokens": 21, "output_tokens": 9}

# The test-only service-account key of the Rust tests (tests/fixtures/cloud), never a real
# account's.
SA_KEY = Path(__file__).resolve().parent.parent / "fixtures" / "cloud" / "test-sa-key.pem"


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


def has_tool_result(body):
    """Whether the conversation's last message carries a tool_result block."""
    last = body["messages"][-1]
    return isinstance(last.get("content"), list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"])


def message(msg_id, content, stop):
    return {"id": msg_id, "type": "message", "role": "assistant", "model": "claude",
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": dict(USAGE)}


def answer(body, msg_id):
    """The Anthropic message for a request: a tool call for a declared tool until the
    conversation carries its result, else text."""
    tools = body.get("tools") or []
    result = has_tool_result(body)
    if tools and not result:
        return message(msg_id, [{"type": "tool_use", "id": "toolu_e2e1", "name": tools[0]["name"],
                                 "input": {"path": "a.txt"}}], "tool_use")
    return message(msg_id, [{"type": "text", "text": TOOL_TEXT if result else TEXT}], "end_turn")


def events(msg):
    """The Anthropic stream events of a message."""
    start = dict(msg, content=[], stop_reason=None,
                 usage=dict(msg["usage"], output_tokens=1))
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
                "usage": {"output_tokens": msg["usage"]["output_tokens"]}})
    out.append({"type": "message_stop"})
    return out


# --------------------------------------------------------------------------- SigV4 check

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})$")


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_problem(method, raw_path, headers, payload):
    """None if `headers` (an http.server message) carry a valid SigV4 signature of the request
    by AWS_KEY_ID/AWS_SECRET for service `bedrock` in BEDROCK_REGION, else what is wrong.
    Canonical URI: each path segment as sent, URI-encoded once more (the non-S3 rule)."""
    m = AUTH_RE.match(headers.get("authorization", ""))
    if not m:
        return "no SigV4 authorization header"
    if (m["key"], m["region"], m["service"]) != (AWS_KEY_ID, BEDROCK_REGION, "bedrock"):
        return "wrong credential scope %s/%s/%s" % (m["key"], m["region"], m["service"])
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(m["date"]):
        return "x-amz-date %r does not match the scope's date" % amz_date
    signed = m["signed"].split(";")
    if "host" not in signed or signed != sorted(signed):
        return "signed headers %r" % signed
    path, _, query = raw_path.partition("?")
    uri = "/".join(urllib.parse.quote(seg, safe="-_.~") for seg in path.split("/"))
    pairs = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join("%s=%s" % (urllib.parse.quote(k, safe="-_.~"),
                                          urllib.parse.quote(v, safe="-_.~")) for k, v in pairs)
    canonical_headers = ""
    for name in signed:
        values = headers.get_all(name)
        if values is None:
            return "signed header %s missing" % name
        canonical_headers += "%s:%s\n" % (name, ",".join(" ".join(v.split()) for v in values))
    payload_hash = hashlib.sha256(payload).hexdigest()
    canonical = "\n".join([method, uri, canonical_query, canonical_headers, m["signed"],
                           payload_hash])
    scope = "%s/%s/bedrock/aws4_request" % (m["date"], BEDROCK_REGION)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + AWS_SECRET).encode(), m["date"])
    for part in (BEDROCK_REGION, "bedrock", "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m["sig"]):
        return "signature mismatch"
    return None


# --------------------------------------------------------------------------- Bedrock's body rules

# The beta flags Bedrock accepts in `anthropic_beta` (cloud-anthropic.md).
BEDROCK_BETAS = {
    "computer-use-2025-01-24", "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14", "output-128k-2025-02-19", "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07", "context-management-2025-06-27", "effort-2025-11-24",
    "tool-search-tool-2025-10-19", "tool-examples-2025-10-29",
}


def bedrock_invoke_problem(headers, body):
    """None if an InvokeModel call is one Bedrock accepts (the rules of cloud-anthropic.md:
    no Anthropic-only field or header, known beta flags in the body, no adaptive thinking on
    a model without it), else what Bedrock would reject."""
    for name in ("x-api-key", "anthropic-version", "anthropic-beta"):
        if headers.get(name) is not None:
            return "header %s is not accepted" % name
    for key in ("model", "stream", "metadata", "service_tier", "container", "inference_geo"):
        if key in body:
            return "extraneous key [%s] is not permitted" % key
    if body.get("anthropic_version") != "bedrock-2023-05-31":
        return "anthropic_version must be bedrock-2023-05-31"
    betas = body.get("anthropic_beta", [])
    unknown = [b for b in betas if b not in BEDROCK_BETAS]
    if unknown:
        return "invalid beta flag(s) %s" % unknown
    if "output_config" in body and "effort-2025-11-24" not in betas:
        return "extraneous key [output_config] is not permitted"
    if "context_management" in body and "context-management-2025-06-27" not in betas:
        return "extraneous key [context_management] is not permitted"
    if (body.get("thinking") or {}).get("type") not in (None, "enabled", "disabled"):
        return "thinking.type %r is not supported by this model" % body["thinking"]["type"]
    return None


# --------------------------------------------------------------------------- the mock

class MockCloud:
    """Both clouds on one loopback port: Bedrock under /model/, Vertex under /v1/projects/,
    the Google token endpoint at /token."""

    def __init__(self, answer=answer):
        self.entries = []
        self.lock = threading.Lock()
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, entry, status, ctype, data, headers=None):
                entry["status"] = status
                self.send_response(status)
                self.send_header("content-type", ctype)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                entry = {"path": urllib.parse.unquote(self.path), "raw_path": self.path,
                         "headers": {k.lower(): v for k, v in self.headers.items()},
                         "raw": raw, "body": None, "reply_id": None, "status": None,
                         "problem": None}
                with cloud.lock:
                    cloud.entries.append(entry)
                    n = len(cloud.entries)
                try:
                    self.handle_call(entry, raw, n)
                except Exception as e:  # a failed expectation: answer it, keep it
                    entry["problem"] = "mock: %r" % e
                    self.reply(entry, 400, "application/json", json.dumps(
                        {"message": entry["problem"]}).encode())

            def handle_call(self, entry, raw, n):
                auth = self.headers.get("authorization", "")
                if self.path == "/token":
                    return self.reply(entry, 200, "application/json", json.dumps(
                        {"access_token": GOOGLE_TOKEN, "expires_in": 3600}).encode())
                body = json.loads(raw)
                if self.path.startswith("/model/"):
                    entry["problem"] = sigv4_problem("POST", self.path, self.headers, raw)
                    if entry["problem"]:
                        return self.reply(entry, 403, "application/json", json.dumps(
                            {"message": "The request signature we calculated does not match "
                                        "the signature you provided: " + entry["problem"]}
                        ).encode())
                    if self.path.endswith("/count-tokens"):
                        body = json.loads(base64.b64decode(body["input"]["invokeModel"]["body"]))
                    entry["body"] = body
                    assert "model" not in body and "stream" not in body
                    assert body["anthropic_version"] == "bedrock-2023-05-31"
                    if self.path.endswith("/count-tokens"):
                        return self.reply(entry, 200, "application/json", b'{"inputTokens":17}')
                    entry["problem"] = bedrock_invoke_problem(self.headers, body)
                    if entry["problem"]:
                        return self.reply(entry, 400, "application/json", json.dumps(
                            {"message": entry["problem"]}).encode(),
                            {"x-amzn-errortype": "ValidationException"})
                    msg = cloud.answer(body, "msg_b%d" % n)
                    entry["reply_id"] = msg["id"]
                    if self.path.endswith("/invoke-with-response-stream"):
                        data = b"".join(es_message(
                            {":message-type": "event", ":event-type": "chunk",
                             ":content-type": "application/json"},
                            json.dumps({"bytes": base64.b64encode(
                                json.dumps(e).encode()).decode()}).encode())
                            for e in events(msg))
                        return self.reply(entry, 200, "application/vnd.amazon.eventstream", data)
                    return self.reply(entry, 200, "application/json", json.dumps(msg).encode())
                if "/publishers/anthropic/models/" in self.path:
                    entry["body"] = body
                    if auth != "Bearer " + GOOGLE_TOKEN:
                        entry["problem"] = "bad token"
                        return self.reply(entry, 401, "application/json", json.dumps({"error": {
                            "code": 401, "message": "bad token",
                            "status": "UNAUTHENTICATED"}}).encode())
                    assert body["anthropic_version"] == "vertex-2023-10-16"
                    if self.path.endswith("/count-tokens:rawPredict"):
                        return self.reply(entry, 200, "application/json", b'{"input_tokens":17}')
                    assert "model" not in body
                    msg = cloud.answer(body, "msg_v%d" % n)
                    entry["reply_id"] = msg["id"]
                    if self.path.endswith(":streamRawPredict"):
                        data = "".join("event: %s\ndata: %s\n\n" % (e["type"], json.dumps(e))
                                       for e in events(msg)).encode()
                        return self.reply(entry, 200, "text/event-stream", data)
                    return self.reply(entry, 200, "application/json", json.dumps(msg).encode())
                return self.reply(entry, 404, "application/json", b'{"message":"unknown path"}')

        self.answer = answer
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def calls(self):
        """Every request so far, in arrival order (dicts: path (decoded), raw_path, headers
        (lower-case names), raw, body, reply_id, status, problem)."""
        with self.lock:
            return list(self.entries)

    def paths(self):
        return [e["path"] for e in self.calls()]


@contextlib.contextmanager
def cloud_gateway(tmp, answer=answer):
    """A MockCloud and the example gateway with its `bedrock` and `vertex` providers pointed at
    it; yields (gateway, cloud). Bedrock maps with the main / small-fast pair; Vertex maps
    haiku models to VERTEX_SMALL and every other Claude model to VERTEX_MODEL."""
    cloud = MockCloud(answer)
    sa = Path(tmp) / "sa.json"
    sa.write_text(json.dumps({
        "type": "service_account", "project_id": VERTEX_PROJECT,
        "private_key_id": "k1", "private_key": SA_KEY.read_text(),
        "client_email": "gw@e2e-project.iam.gserviceaccount.com",
        "token_uri": cloud.url + "/token",
    }))
    env = {
        "AIBRIDGE_BEDROCK_BASE_URL": cloud.url,
        "AIBRIDGE_BEDROCK_REGION": BEDROCK_REGION,
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AIBRIDGE_BEDROCK_MODEL": BEDROCK_MODEL,
        "AIBRIDGE_BEDROCK_SMALL_FAST_MODEL": BEDROCK_SMALL,
        "AIBRIDGE_VERTEX_PROJECT": VERTEX_PROJECT,
        "AIBRIDGE_VERTEX_REGION": VERTEX_REGION,
        "AIBRIDGE_VERTEX_BASE_URL": cloud.url,
        "GOOGLE_APPLICATION_CREDENTIALS": str(sa),
        "AIBRIDGE_VERTEX_MODEL_MAP": "claude-haiku-*=%s,claude-*=%s" % (VERTEX_SMALL,
                                                                          VERTEX_MODEL),
    }
    try:
        with running_gateway(tmp, cloud.url, env) as gw:
            yield gw, cloud
    finally:
        cloud.server.shutdown()

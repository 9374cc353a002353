#!/usr/bin/env python3
"""Capture-and-reply fake upstream for AI gateway testing (stdlib only).

Listens on 127.0.0.1, logs every request (method, path+query, all headers,
full body) as one JSON line to a capture file, and answers plausibly as:

  Anthropic  POST /v1/messages            JSON, or SSE when "stream": true
             POST /v1/messages/count_tokens  {"input_tokens": N}
  OpenAI     POST /v1/chat/completions    JSON, or SSE (+usage chunk, [DONE])
             POST /v1/responses           JSON, or SSE (response.* events)
  both       GET  /v1/models              a list readable by both SDKs
  other      logged, 404 JSON

Paths are matched by suffix, so any mount prefix works (/v1/messages,
/anthropic/v1/messages, /openai/v1/responses, ...).

Usage:
  python3 fake_upstream.py [--port 0] --log capture.jsonl [--mode text|tool]
           [--port-file FILE]

Once bound it prints exactly one line to stdout and flushes it:
  fake upstream listening on http://127.0.0.1:PORT
(--port 0, the default, picks a free port.)

--mode tool: the first model turn of a conversation answers with a tool call
(Anthropic tool_use / OpenAI tool_calls / Responses function_call) for one of
the tools the request declared; once the request carries the tool's result,
the answer is plain text. The mode can also be chosen per request with the
header "x-fake-mode: tool".

--mode mcp (or "x-fake-mode: mcp"): the fake model uses a tool the gateway injected from an
MCP server (a declared tool whose name starts with "bmcp_", the first in request order). As
long as the request carries no tool result, it answers with the text MCP_LEAD_TEXT followed
by a call of that tool with the arguments MCP_TOOL_ARGS (Anthropic text + tool_use blocks;
Chat content then tool_calls; Responses a message item then a function_call item); once the
request ends with a tool result, it answers with the text mcp_final_text(result), which
quotes the result it received. Without an injected tool it answers plain text.

The header "x-fake-error: STATUS" (e.g. 400, 429, 529) makes the fake answer a bridged POST
(messages, chat completions, responses) with that status, "x-should-retry: false" and a
provider-shaped error body: Anthropic for /messages, OpenAI otherwise. The Anthropic 400 body
is the "prompt is too long" error of the spec.

The header "x-fake-cached-tokens: N" (OpenAI Chat and Responses) adds N cached prompt tokens:
prompt_tokens/input_tokens grow by N and *_tokens_details.cached_tokens is N. The usage the
fake answers is computed by chat_usage() / responses_usage(), which tests may import.

Responses: every response id the fake issued is remembered; a request whose
"previous_response_id" is not one of them gets the API's 400 previous_response_not_found.

Secrets are masked in the capture: values of headers whose name contains
key/authorization/token/cookie/secret keep their first 8 characters only; the capture adds
"secret_sha256" (lower-case header name -> SHA-256 hex of the full value) so a test can check
the exact value without the secret being written anywhere. "body_sha256" is the SHA-256 hex
of the body bytes as received (before any content-encoding is undone).
"""
import argparse
import base64
import gzip
import hashlib
import json
import re
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

REPLY_TEXT = "Hello from the fake upstream"
MCP_PREFIX = "bmcp_"
MCP_TOOL_ARGS = {"owner": "alice"}
MCP_LEAD_TEXT = "Let me look that up."


def mcp_final_text(result):
    """The fake model's answer once it has the MCP tool's result."""
    return "The tool says: %s" % result
SECRET_HEADER_RE = re.compile(r"key|authorization|token|cookie|secret", re.I)
PREFERRED_TOOLS = ["Glob", "LS", "Read", "Grep", "shell", "shell_command",
                   "exec_command", "Bash", "get_weather"]

LOG_LOCK = threading.Lock()
COUNTER = {"n": 0}
ISSUED_RESPONSES = set()  # Responses ids handed out (previous_response_id must be one of them)
# The conversation stored under each Responses id, as the real API keeps it: the stored
# conversation of `previous_response_id`, then the request's input, then the output.
STORED_RESPONSES = {}


def mask(value):
    if len(value) <= 8:
        return "***"
    return value[:8] + "***(len=%d)" % len(value)


def rough_tokens(obj):
    try:
        return max(1, len(json.dumps(obj)) // 4)
    except Exception:
        return 1


def new_id(prefix):
    return prefix + uuid.uuid4().hex[:24]


def sha256_hex(value):
    return hashlib.sha256(value if isinstance(value, bytes) else value.encode()).hexdigest()


def chat_usage(messages, cached=0):
    """The Chat Completions usage the fake answers for these request messages."""
    ptok = rough_tokens(messages) + cached
    return {"prompt_tokens": ptok, "completion_tokens": 7, "total_tokens": ptok + 7,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0}}


def responses_usage(inp, cached=0):
    """The Responses usage the fake answers for this request input."""
    in_tok = rough_tokens(inp) + cached
    return {"input_tokens": in_tok, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": in_tok + 7}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeUpstream/1.0"

    # ------------------------------------------------------------ plumbing
    def log_message(self, fmt, *args):  # quiet stderr
        sys.stderr.write("[fake] %s %s\n" % (self.command, self.path))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _decode(self, raw):
        enc = (self.headers.get("Content-Encoding") or "").lower().strip()
        note = None
        data = raw
        try:
            if enc == "gzip":
                data = gzip.decompress(raw)
            elif enc == "deflate":
                data = zlib.decompress(raw)
            elif enc == "zstd":
                try:
                    import zstandard  # optional
                    data = zstandard.ZstdDecompressor().decompress(
                        raw, max_output_size=64 << 20)
                except ImportError:
                    note = "zstd body not decoded (pip install zstandard)"
                    data = None
            elif enc:
                note = "unknown content-encoding %s" % enc
                data = None
        except Exception as e:  # noqa
            note = "decode error: %r" % e
            data = None
        return data, note

    def _capture(self, raw):
        data, note = self._decode(raw)
        headers = []
        secret_sha256 = {}
        for k, v in self.headers.items():
            if SECRET_HEADER_RE.search(k):
                headers.append([k, mask(v)])
                secret_sha256[k.lower()] = sha256_hex(v)
            else:
                headers.append([k, v])
        rec = {
            "seq": None,
            "ts": time.time(),
            "method": self.command,
            "path": self.path,
            "client": "%s:%s" % self.client_address[:2],
            "http_version": self.request_version,
            "headers": headers,
            "body_len": len(raw),
            "body_sha256": sha256_hex(raw),
            "secret_sha256": secret_sha256,
        }
        body_json = None
        if note:
            rec["body_note"] = note
            rec["body_b64"] = base64.b64encode(raw).decode()
        elif data:
            try:
                body_json = json.loads(data)
                rec["body"] = body_json
            except Exception:
                try:
                    rec["body_text"] = data.decode("utf-8")
                except UnicodeDecodeError:
                    rec["body_b64"] = base64.b64encode(data).decode()
        with LOG_LOCK:
            COUNTER["n"] += 1
            rec["seq"] = COUNTER["n"]
            with open(self.server.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return body_json

    def _send_json(self, code, obj, extra_headers=None):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", new_id("req_"))
        self.send_header("x-request-id", new_id("req_"))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _start_sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", new_id("req_"))
        self.send_header("x-request-id", new_id("req_"))
        self.end_headers()

    def _chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_sse(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _event(self, name, obj):
        self._chunk("event: %s\ndata: %s\n\n" % (name, json.dumps(obj)))

    def _data(self, obj):
        self._chunk("data: %s\n\n" % (obj if isinstance(obj, str) else json.dumps(obj)))

    def _cached(self):
        try:
            return max(0, int(self.headers.get("x-fake-cached-tokens") or 0))
        except ValueError:
            return 0

    def _mode(self):
        return (self.headers.get("x-fake-mode") or self.server.mode).lower()

    # ------------------------------------------------------------ dispatch
    def _route(self):
        raw = self._read_body()
        body = self._capture(raw)
        p = urlsplit(self.path).path.rstrip("/")
        # accept any mount prefix: /v1/messages, /anthropic/v1/messages, /x/chat/completions ...
        for suffix in ("/messages/count_tokens", "/messages", "/chat/completions",
                       "/responses", "/models"):
            if p.endswith(suffix):
                p = suffix
                break
        else:
            i = p.find("/models/")
            if i >= 0:
                p = p[i:]
        m = self.command
        fake_error = self.headers.get("x-fake-error")
        if fake_error and m == "POST" and p in ("/messages", "/chat/completions", "/responses"):
            return self.fake_error(int(fake_error), anthropic=(p == "/messages"))
        if m == "POST" and p == "/messages":
            return self.anthropic_messages(body or {})
        if m == "POST" and p == "/messages/count_tokens":
            return self._send_json(200, {"input_tokens": rough_tokens(body)})
        if m == "POST" and p == "/chat/completions":
            return self.chat_completions(body or {})
        if m == "POST" and p == "/responses":
            return self.openai_responses(body or {})
        if m in ("GET", "HEAD") and p == "/models":
            return self.models()
        if m in ("GET", "HEAD") and p.startswith("/models/"):
            mid = p[len("/models/"):]
            return self._send_json(200, self._model_obj(mid))
        return self._send_json(404, {
            "type": "error",
            "error": {"type": "not_found_error",
                      "message": "fake upstream: no route for %s %s" % (m, self.path)}})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _route

    # ------------------------------------------------------------ errors
    def fake_error(self, status, anthropic):
        if anthropic:
            kind = {400: "invalid_request_error", 401: "authentication_error",
                    429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            message = {400: "prompt is too long: 205429 tokens > 200000 maximum",
                       529: "Overloaded"}.get(status, "fake upstream error %d" % status)
            body = {"type": "error", "error": {"type": kind, "message": message},
                    "request_id": new_id("req_")}
        else:
            kind = "invalid_request_error" if status < 500 else "server_error"
            body = {"error": {"message": "fake upstream error %d" % status, "type": kind,
                              "param": None, "code": None}}
        self._send_json(status, body, {"x-should-retry": "false"})

    # ------------------------------------------------------------ models
    @staticmethod
    def _model_obj(mid):
        return {"id": mid, "object": "model", "type": "model",
                "display_name": mid, "created": 1700000000,
                "created_at": "2025-01-01T00:00:00Z", "owned_by": "fake"}

    def models(self):
        ids = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1",
               "gpt-5", "gpt-5-codex", "gpt-4o-mini"]
        data = [self._model_obj(i) for i in ids]
        self._send_json(200, {"object": "list", "data": data, "has_more": False,
                              "first_id": ids[0], "last_id": ids[-1]})

    # ------------------------------------------------------------ anthropic
    @staticmethod
    def _anthropic_has_tool_result(body):
        msgs = body.get("messages") or []
        if not msgs:
            return False
        last = msgs[-1]
        c = last.get("content")
        return isinstance(c, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in c)

    @staticmethod
    def _text_of(content):
        """A tool result's text: a string, or the texts of a list of text parts."""
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return ""

    @classmethod
    def _anthropic_tool_result(cls, body):
        """The text of the last message's tool_result block, or None."""
        msgs = body.get("messages") or []
        c = msgs[-1].get("content") if msgs else None
        if not isinstance(c, list):
            return None
        results = [b for b in c if isinstance(b, dict) and b.get("type") == "tool_result"]
        return cls._text_of(results[-1].get("content")) if results else None

    @staticmethod
    def _mcp_tool(names):
        injected = [n for n in names if n and n.startswith(MCP_PREFIX)]
        return injected[0] if injected else None

    @staticmethod
    def _pick_tool(names):
        for n in PREFERRED_TOOLS:
            if n in names:
                return n
        return names[0] if names else None

    @staticmethod
    def _tool_input(name):
        if name == "Glob":
            return {"pattern": "*"}
        if name == "LS":
            return {"path": "/tmp"}
        if name == "Read":
            return {"file_path": "/etc/hostname"}
        if name == "Grep":
            return {"pattern": "hello"}
        if name == "Bash":
            return {"command": "echo hi", "description": "say hi"}
        if name in ("shell",):
            return {"command": ["echo", "hi"]}
        if name in ("shell_command",):
            return {"command": "echo hi"}
        if name in ("exec_command",):
            return {"cmd": "echo hi"}
        return {"location": "Paris"}

    def anthropic_messages(self, body):
        model = body.get("model", "claude-fake")
        names = [t.get("name") for t in (body.get("tools") or []) if isinstance(t, dict) and t.get("name")]
        tool = None
        if self._mode() == "tool" and names and not self._anthropic_has_tool_result(body):
            tool = self._pick_tool(names)
        mcp_tool = self._mcp_tool(names) if self._mode() == "mcp" else None
        mcp_result = self._anthropic_tool_result(body) if self._mode() == "mcp" else None
        in_tok = rough_tokens(body.get("messages"))
        usage = {"input_tokens": in_tok, "output_tokens": 7,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        msg_id = new_id("msg_")
        if tool:
            tinput = self._tool_input(tool)
            content = [{"type": "text", "text": "Let me use a tool."},
                       {"type": "tool_use", "id": new_id("toolu_"), "name": tool, "input": tinput}]
            stop = "tool_use"
        elif mcp_tool and mcp_result is None:
            content = [{"type": "text", "text": MCP_LEAD_TEXT},
                       {"type": "tool_use", "id": new_id("toolu_"), "name": mcp_tool,
                        "input": MCP_TOOL_ARGS}]
            stop = "tool_use"
        elif mcp_result is not None:
            content = [{"type": "text", "text": mcp_final_text(mcp_result)}]
            stop = "end_turn"
        else:
            content = [{"type": "text", "text": REPLY_TEXT}]
            stop = "end_turn"
        if not body.get("stream"):
            return self._send_json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": usage})
        self._start_sse()
        self._event("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": dict(usage, output_tokens=1)}})
        self._event("ping", {"type": "ping"})
        for i, block in enumerate(content):
            if block["type"] == "text":
                self._event("content_block_start", {"type": "content_block_start", "index": i,
                            "content_block": {"type": "text", "text": ""}})
                words = block["text"].split(" ")
                for j, w in enumerate(words):
                    piece = w if j == 0 else " " + w
                    self._event("content_block_delta", {"type": "content_block_delta", "index": i,
                                "delta": {"type": "text_delta", "text": piece}})
            else:
                self._event("content_block_start", {"type": "content_block_start", "index": i,
                            "content_block": {"type": "tool_use", "id": block["id"],
                                              "name": block["name"], "input": {}}})
                js = json.dumps(block["input"])
                half = len(js) // 2
                for part in (js[:half], js[half:]):
                    self._event("content_block_delta", {"type": "content_block_delta", "index": i,
                                "delta": {"type": "input_json_delta", "partial_json": part}})
            self._event("content_block_stop", {"type": "content_block_stop", "index": i})
        self._event("message_delta", {"type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"input_tokens": in_tok, "output_tokens": 7,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
        self._event("message_stop", {"type": "message_stop"})
        self._end_sse()

    # ------------------------------------------------------------ openai chat
    def chat_completions(self, body):
        model = body.get("model", "gpt-fake")
        tools = [t.get("function", {}).get("name") for t in (body.get("tools") or [])
                 if isinstance(t, dict)]
        tools = [t for t in tools if t]
        msgs = body.get("messages") or []
        has_result = bool(msgs) and msgs[-1].get("role") == "tool"
        tool = self._pick_tool(tools) if (self._mode() == "tool" and tools and not has_result) else None
        text = None if tool else REPLY_TEXT
        if self._mode() == "mcp":
            mcp_tool = self._mcp_tool(tools)
            if has_result:
                text = mcp_final_text(self._text_of(msgs[-1].get("content")))
            elif mcp_tool:
                tool, text = mcp_tool, MCP_LEAD_TEXT
        cid = new_id("chatcmpl-")
        created = int(time.time())
        usage = chat_usage(msgs, self._cached())
        call = None
        if tool:
            args = MCP_TOOL_ARGS if tool.startswith(MCP_PREFIX) else self._tool_input(tool)
            call = {"id": new_id("call_"), "type": "function",
                    "function": {"name": tool, "arguments": json.dumps(args)}}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": text}
            if call:
                msg["tool_calls"] = [call]
            return self._send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": msg, "logprobs": None,
                             "finish_reason": "tool_calls" if call else "stop"}],
                "usage": usage, "system_fingerprint": "fp_fake"})
        self._start_sse()

        def chunk(delta, finish=None):
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_fake",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}
        self._data(chunk({"role": "assistant", "content": ""}))
        if call and text:
            for j, w in enumerate(text.split(" ")):
                self._data(chunk({"content": w if j == 0 else " " + w}))
        if call:
            args = call["function"]["arguments"]
            self._data(chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                              "function": {"name": call["function"]["name"],
                                                           "arguments": ""}}]}))
            self._data(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}))
            self._data(chunk({}, "tool_calls"))
        else:
            for j, w in enumerate(text.split(" ")):
                self._data(chunk({"content": w if j == 0 else " " + w}))
            self._data(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._data({"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": usage})
        self._data("[DONE]")
        self._end_sse()

    # ------------------------------------------------------------ openai responses
    def openai_responses(self, body):
        model = body.get("model", "gpt-fake")
        tools = []
        for t in body.get("tools") or []:
            if isinstance(t, dict):
                n = t.get("name") or (t.get("function") or {}).get("name")
                if n and t.get("type") in ("function", "custom", None):
                    tools.append(n)
        inp = body.get("input")
        has_result = isinstance(inp, list) and bool(inp) and isinstance(inp[-1], dict) and \
            inp[-1].get("type") in ("function_call_output", "custom_tool_call_output")
        tool = self._pick_tool(tools) if (self._mode() == "tool" and tools and not has_result) else None
        text = None if tool else REPLY_TEXT
        if self._mode() == "mcp":
            mcp_tool = self._mcp_tool(tools)
            # `x-fake-mcp-calls: N`: the fake model calls the injected tool N times in a row.
            want = int(self.headers.get("x-fake-mcp-calls") or 1)
            done = sum(1 for i in inp if isinstance(i, dict) and i.get("type") == "function_call_output") \
                if isinstance(inp, list) else 0
            if has_result and (done >= want or not mcp_tool):
                text = mcp_final_text(self._text_of(inp[-1].get("output")))
            elif mcp_tool:
                tool, text = mcp_tool, MCP_LEAD_TEXT
        prev = body.get("previous_response_id")
        prior = STORED_RESPONSES.get(prev, []) if prev is not None else []
        if self._mode() == "recall":
            # What the stored conversation holds: every tool output in it, in order.
            outputs = [self._text_of(i.get("output")) for i in prior + (inp if isinstance(inp, list) else [])
                       if isinstance(i, dict) and i.get("type") == "function_call_output"]
            text = "recall: " + " | ".join(outputs)
        if prev is not None and prev not in ISSUED_RESPONSES:
            return self._send_json(400, {"error": {
                "message": "Previous response with id '%s' not found." % prev,
                "type": "invalid_request_error", "param": "previous_response_id",
                "code": "previous_response_not_found"}})
        rid = new_id("resp_")
        with LOG_LOCK:
            ISSUED_RESPONSES.add(rid)
        created = int(time.time())
        usage = responses_usage(inp, self._cached())
        items = []
        if text:
            items.append({"id": new_id("msg_"), "type": "message", "status": "completed",
                          "role": "assistant",
                          "content": [{"type": "output_text", "text": text, "annotations": [],
                                       "logprobs": []}]})
        if tool:
            args = MCP_TOOL_ARGS if tool.startswith(MCP_PREFIX) else self._tool_input(tool)
            items.append({"id": new_id("fc_"), "type": "function_call", "status": "completed",
                          "call_id": new_id("call_"), "name": tool,
                          "arguments": json.dumps(args)})
        with LOG_LOCK:
            STORED_RESPONSES[rid] = prior + (inp if isinstance(inp, list) else
                                             [{"role": "user", "content": inp}]) + items
        base = {"id": rid, "object": "response", "created_at": created, "model": model,
                "status": "completed", "error": None, "incomplete_details": None,
                "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
                "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "temperature": body.get("temperature"), "top_p": body.get("top_p"),
                "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
                "store": body.get("store", True), "previous_response_id": body.get("previous_response_id"),
                "reasoning": body.get("reasoning"), "text": {"format": {"type": "text"}},
                "truncation": "disabled", "output": items, "usage": usage}
        if not body.get("stream"):
            return self._send_json(200, base)
        self._start_sse()
        seq = {"n": 0}

        def ev(name, obj):
            obj = dict({"type": name, "sequence_number": seq["n"]}, **obj)
            seq["n"] += 1
            self._event(name, obj)
        pending = dict(base, status="in_progress", output=[], usage=None)
        ev("response.created", {"response": pending})
        ev("response.in_progress", {"response": pending})
        for i, item in enumerate(items):
            if item["type"] == "function_call":
                ev("response.output_item.added", {"output_index": i, "item": dict(item, arguments="", status="in_progress")})
                ev("response.function_call_arguments.delta", {"item_id": item["id"], "output_index": i,
                                                              "delta": item["arguments"]})
                ev("response.function_call_arguments.done", {"item_id": item["id"], "output_index": i,
                                                             "arguments": item["arguments"]})
            else:
                itext = item["content"][0]["text"]
                ev("response.output_item.added", {"output_index": i, "item": dict(item, content=[], status="in_progress")})
                ev("response.content_part.added", {"item_id": item["id"], "output_index": i, "content_index": 0,
                                                   "part": {"type": "output_text", "text": "", "annotations": []}})
                for j, w in enumerate(itext.split(" ")):
                    ev("response.output_text.delta", {"item_id": item["id"], "output_index": i,
                                                      "content_index": 0, "delta": w if j == 0 else " " + w,
                                                      "logprobs": []})
                ev("response.output_text.done", {"item_id": item["id"], "output_index": i,
                                                 "content_index": 0, "text": itext, "logprobs": []})
                ev("response.content_part.done", {"item_id": item["id"], "output_index": i, "content_index": 0,
                                                  "part": item["content"][0]})
            ev("response.output_item.done", {"output_index": i, "item": item})
        ev("response.completed", {"response": base})
        self._end_sse()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--log", default="capture.jsonl")
    ap.add_argument("--mode", default="text", choices=["text", "tool", "mcp"])
    ap.add_argument("--port-file", help="write the bound port here")
    ap.add_argument("--tls-cert", help="serve HTTPS with this cert (PEM)")
    ap.add_argument("--tls-key", help="key for --tls-cert")
    a = ap.parse_args()
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    srv.log_path = a.log
    srv.mode = a.mode
    if a.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    if a.port_file:
        with open(a.port_file, "w") as f:
            f.write(str(port))
    sys.stderr.write("[fake] listening on http://%s:%d log=%s mode=%s\n" % (a.host, port, a.log, a.mode))
    sys.stderr.flush()
    sys.stdout.write("fake upstream listening on http://%s:%d\n" % (a.host, port))
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

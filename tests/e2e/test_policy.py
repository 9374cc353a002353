"""The policy of the example gateway (AIBRIDGE_POLICY, issue 12) through the official SDKs.

One gateway runs with a policy file and one gateway token per actor, so each rule is tested
on an actor of its own:

- a denied model (403, `permission_error`, OpenAI code `model_not_allowed`),
- an exhausted token budget and an exhausted dollar budget (403, `budget_exceeded`),
  and a model without a price under a dollar budget,
- a rate limit (429 `rate_limit_error`, `rate_limit_exceeded`, `Retry-After` in whole
  seconds), and what the SDKs do with it when they retry,

each for the Anthropic SDK (Messages) and the OpenAI SDK (Chat Completions), blocking and
streaming; the denial is recorded (outcome `denied`, the message in `error`, no prompt),
nothing reaches the upstream, and `/usage` lists it. An allowed request through the policy
gateway is compared byte for byte with the same request sent directly to the fake upstream.
The file is reloaded when it changes, and a bad new version keeps the policy in force.

Budgets are enforced "deny the next request once spent >= limit": the spend of a request is
known once its record is written, and the policy's ledger sees it at the latest at its next
refresh from the database (2 s by default). The tests wait for it with a bounded poll
(`until_denied`), never a fixed sleep.
"""

import json
import re
import time
import urllib.request

import anthropic
import openai
import pytest

from conftest import running_gateway

# Tokens of the policy gateway: one actor per rule.
ACTORS = {
    "tok-models": "models-user",
    "tok-tokens": "tokens-user",
    "tok-usd": "usd-user",
    "tok-rate": "rate-user",
    "tok-free": "free-user",
}
PRICED_MODEL = "claude-e2e-priced"  # priced by the file at $1 per input/output token
UNPRICED_MODEL = "claude-e2e-unpriced"
GPT_MODEL = "gpt-e2e"

POLICY = """
# The e2e policy (tests/e2e/test_policy.py).
[default]
models = ["claude-*", "gpt-*"]
deny_models = ["*-preview"]

[actors."tokens-user"]
budget = { tokens = 1, per = "day" }

[actors."usd-user"]
budget = { usd = 1.0, per = "month" }

[actors."rate-user"]
rate = { requests = 1, per = "minute" }

[actors."free-user"]
rate = { requests = 1, per = "second" }

[prices."claude-e2e-priced"]
input = 1000000.0
output = 1000000.0
cache_read = 0.0
cache_write = 0.0

[prices."gpt-e2e"]
input = 1000000.0
output = 1000000.0
cache_read = 0.0
cache_write = 0.0
"""

POLICY_DEADLINE = 15.0  # seconds for a spend to be enforced (refresh lag is 2 s)
RESET_RE = r"resets at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
ID_RE = re.compile(rb"(msg_|chatcmpl-|toolu_|call_|resp_|req_)[0-9a-f]{24}")
CREATED_RE = re.compile(rb'"created": ?\d+')


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def policy_gateway(fake_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy")
    path = tmp / "policy.toml"
    path.write_text(POLICY)
    tokens = ",".join("%s:%s" % kv for kv in ACTORS.items())
    with running_gateway(tmp, fake_upstream.url,
                         {"AIBRIDGE_POLICY": str(path), "AIBRIDGE_TOKENS": tokens}) as gw:
        gw.policy_path = path
        yield gw


def anthropic_client(gw, token, retries=0):
    return anthropic.Anthropic(base_url=gw.anthropic_base_url, api_key=token,
                               max_retries=retries, timeout=30.0)


def openai_client(gw, token, retries=0, hook=None):
    kwargs = {}
    if hook is not None:
        kwargs["http_client"] = openai.DefaultHttpxClient(event_hooks={"response": [hook]})
    return openai.OpenAI(base_url=gw.openai_base_url, api_key=token, max_retries=retries,
                         timeout=30.0, **kwargs)


def ask_anthropic(client, model, stream=False):
    kwargs = dict(model=model, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    if stream:
        with client.messages.stream(**kwargs) as s:
            return s.get_final_message()
    return client.messages.create(**kwargs)


def ask_openai(client, model, stream=False):
    kwargs = dict(model=model, messages=[{"role": "user", "content": "hi"}])
    if stream:
        out = client.chat.completions.create(stream=True, **kwargs)
        return list(out)
    return client.chat.completions.create(**kwargs)


def check_denied_record(db, error, actor, message, model):
    """The interception of the denied request (its id is in the error response's
    x-aibridge-interception-id header): ended with outcome `denied`, the message in
    `error`, no prompt, no tokens, no tool calls."""
    row = db.wait_ended(error.response.headers["x-aibridge-interception-id"])
    assert row["initiator_id"] == actor
    assert row["outcome"] == "denied"
    assert row["error"] == message
    assert row["model"] == model
    for table in ("aibridge_user_prompts", "aibridge_token_usages", "aibridge_tool_usages"):
        assert db.rows(table, row["id"]) == [], table
    return row


def check_anthropic_denial(e, status, kind, pattern):
    assert e.status_code == status, e
    body = e.response.json()
    assert set(body) == {"type", "error"}
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    assert re.fullmatch(pattern, body["error"]["message"]), body
    # The SDK's exception carries the message for the user.
    assert body["error"]["message"] in str(e)
    return body["error"]["message"]


def check_openai_denial(e, status, kind, code, pattern):
    assert e.status_code == status, e
    body = e.response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["param"], err["code"]) == (kind, None, code)
    assert re.fullmatch(pattern, err["message"]), body
    assert e.code == code
    assert err["message"] in str(e)
    return err["message"]


def until_denied(send, deadline=POLICY_DEADLINE):
    """Sends requests (send() returns normally when allowed) until one is denied with a
    403; returns that exception. Bounded."""
    end = time.monotonic() + deadline
    while True:
        try:
            send()
        except (anthropic.PermissionDeniedError, openai.PermissionDeniedError) as e:
            return e
        if time.monotonic() > end:
            pytest.fail("no request was denied within %.0fs" % deadline)
        time.sleep(0.1)


# --------------------------------------------------------------------------- model access

@pytest.mark.parametrize("stream", [False, True])
def test_denied_model_anthropic(policy_gateway, fake_upstream, stream):
    client = anthropic_client(policy_gateway, "tok-models")
    mark = fake_upstream.mark()
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        ask_anthropic(client, "claude-next-preview", stream)
    msg = check_anthropic_denial(
        info.value, 403, "permission_error",
        r'aibridge: model "claude-next-preview" is not allowed for "models-user"')
    assert fake_upstream.since(mark) == [], "a denied request went upstream"
    row = check_denied_record(policy_gateway.db, info.value, "models-user", msg,
                              "claude-next-preview")
    assert row["streaming"] == (1 if stream else 0)


@pytest.mark.parametrize("stream", [False, True])
def test_denied_model_openai(policy_gateway, fake_upstream, stream):
    client = openai_client(policy_gateway, "tok-models")
    mark = fake_upstream.mark()
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask_openai(client, "o3-mini", stream)
    msg = check_openai_denial(
        info.value, 403, "permission_error", "model_not_allowed",
        r'aibridge: model "o3-mini" is not allowed for "models-user"')
    assert fake_upstream.since(mark) == []
    check_denied_record(policy_gateway.db, info.value, "models-user", msg, "o3-mini")


def test_a_denied_403_is_not_retried_by_the_sdks(policy_gateway):
    """Both SDKs treat 403 as final even with retries on: one request reaches the gateway."""
    seen = []
    hook = {"response": [seen.append]}
    a = anthropic.Anthropic(base_url=policy_gateway.anthropic_base_url, api_key="tok-models",
                            max_retries=3, timeout=30.0,
                            http_client=anthropic.DefaultHttpxClient(event_hooks=hook))
    with pytest.raises(anthropic.PermissionDeniedError):
        ask_anthropic(a, "claude-x-preview")
    assert [r.status_code for r in seen] == [403]
    seen.clear()
    with pytest.raises(openai.PermissionDeniedError):
        ask_openai(openai_client(policy_gateway, "tok-models", retries=3, hook=seen.append),
                   "o1-preview")
    assert [r.status_code for r in seen] == [403]


# --------------------------------------------------------------------------- budgets

@pytest.mark.parametrize("stream", [False, True])
def test_exhausted_token_budget(policy_gateway, stream):
    a = anthropic_client(policy_gateway, "tok-tokens")
    o = openai_client(policy_gateway, "tok-tokens")
    pattern = (r"aibridge: token budget of 1 per day exhausted \(\d+ used\); " + RESET_RE)
    e = until_denied(lambda: ask_anthropic(a, "claude-sonnet-4-5", stream))
    msg = check_anthropic_denial(e, 403, "permission_error", pattern)
    check_denied_record(policy_gateway.db, e, "tokens-user", msg, "claude-sonnet-4-5")
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask_openai(o, GPT_MODEL, stream)
    check_openai_denial(info.value, 403, "permission_error", "budget_exceeded", pattern)


@pytest.mark.parametrize("stream", [False, True])
def test_exhausted_dollar_budget(policy_gateway, stream):
    a = anthropic_client(policy_gateway, "tok-usd")
    o = openai_client(policy_gateway, "tok-usd")
    pattern = (r"aibridge: USD budget of 1\.00 per month exhausted \(\d+\.\d\d spent\); "
               + RESET_RE)
    e = until_denied(lambda: ask_anthropic(a, PRICED_MODEL, stream))
    msg = check_anthropic_denial(e, 403, "permission_error", pattern)
    check_denied_record(policy_gateway.db, e, "usd-user", msg, PRICED_MODEL)
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask_openai(o, GPT_MODEL, stream)
    check_openai_denial(info.value, 403, "permission_error", "budget_exceeded", pattern)
    # The recorded cost is the file's price: $1 per input and output token.
    cost = policy_gateway.db.query(
        "SELECT t.cost_usd, t.input_tokens + t.output_tokens AS n FROM aibridge_token_usages t"
        " JOIN aibridge_interceptions i ON i.id = t.interception_id"
        " WHERE i.initiator_id = 'usd-user' AND i.model = ?", (PRICED_MODEL,))
    assert cost and all(r["cost_usd"] == pytest.approx(r["n"]) for r in cost), cost


def test_unpriced_model_under_a_dollar_budget(policy_gateway, fake_upstream):
    mark = fake_upstream.mark()
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        ask_anthropic(anthropic_client(policy_gateway, "tok-usd"), UNPRICED_MODEL)
    check_anthropic_denial(info.value, 403, "permission_error",
                           r'aibridge: model "%s" has no price.*' % UNPRICED_MODEL)
    assert fake_upstream.since(mark) == []


# --------------------------------------------------------------------------- rate limits

@pytest.mark.parametrize("stream", [False, True])
def test_rate_limit(policy_gateway, fake_upstream, stream):
    """1 request per minute: at most one request is allowed, the next gets a 429 with a
    Retry-After in whole seconds (more than 0, at most 60)."""
    a = anthropic_client(policy_gateway, "tok-rate")
    o = openai_client(policy_gateway, "tok-rate")
    try:
        ask_anthropic(a, "claude-sonnet-4-5", stream)
    except anthropic.RateLimitError:
        pass  # the earlier parameter already used the minute's request
    mark = fake_upstream.mark()
    pattern = r"aibridge: rate limit of 1 requests per minute exceeded; retry in (\d+) s"
    with pytest.raises(anthropic.RateLimitError) as info:
        ask_anthropic(a, "claude-sonnet-4-5", stream)
    msg = check_anthropic_denial(info.value, 429, "rate_limit_error", pattern)
    retry_after = info.value.response.headers["retry-after"]
    assert re.fullmatch(r"[0-9]+", retry_after) and 0 < int(retry_after) <= 60
    assert msg.endswith("retry in %s s" % retry_after)
    check_denied_record(policy_gateway.db, info.value, "rate-user", msg, "claude-sonnet-4-5")
    with pytest.raises(openai.RateLimitError) as info:
        ask_openai(o, GPT_MODEL, stream)
    check_openai_denial(info.value, 429, "rate_limit_error", "rate_limit_exceeded", pattern)
    assert fake_upstream.since(mark) == []


def test_sdks_retry_a_429_after_its_retry_after(policy_gateway):
    """With retries on, the SDK waits the Retry-After (1 s here) and sends again, and the
    retry is allowed. The OpenAI SDK's hook sees each attempt; both SDKs honour a
    Retry-After of up to 60 s instead of their own 0.5 s-based backoff."""
    # Empty the bucket (1 per second): a request until one is refused.
    o0 = openai_client(policy_gateway, "tok-free")
    end = time.monotonic() + POLICY_DEADLINE
    while True:
        try:
            ask_openai(o0, GPT_MODEL)
        except openai.RateLimitError:
            break
        assert time.monotonic() < end, "the rate limit never refused a request"
    seen = []
    started = time.monotonic()
    ask_openai(openai_client(policy_gateway, "tok-free", retries=2, hook=seen.append), GPT_MODEL)
    waited = time.monotonic() - started
    statuses = [r.status_code for r in seen]
    assert statuses[-1] == 200 and set(statuses[:-1]) <= {429}, statuses
    if statuses[0] == 429:
        retry_after = int(seen[0].headers["retry-after"])
        assert retry_after == 1
        # Lower bound only: the SDK waited at least the Retry-After before the retry.
        assert waited >= retry_after * (len(statuses) - 1) * 0.9, (waited, statuses)


# --------------------------------------------------------------------------- allowed path

def normalized(raw):
    return CREATED_RE.sub(b'"created": 0', ID_RE.sub(rb"\1X", raw))


@pytest.mark.parametrize("stream", [False, True])
def test_allowed_request_is_unchanged_byte_for_byte(policy_gateway, fake_upstream, stream):
    """The same bytes sent through the policy gateway and directly to the fake: the fake
    receives identical bodies, and the client gets identical bytes back (ids and the
    `created` time the fake makes up anew each time normalised)."""
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": stream,
                       "messages": [{"role": "user", "content": "byte for byte"}]},
                      separators=(",", ":")).encode()
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}

    def post(url, key):
        req = urllib.request.Request(url, data=body, headers=dict(headers, **{"x-api-key": key}))
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers["content-type"], resp.read()

    mark = fake_upstream.mark()
    direct = post(fake_upstream.url + "/v1/messages", "direct")
    via = post(policy_gateway.anthropic_base_url + "/v1/messages", "tok-models")
    assert direct[0] == via[0] == 200
    calls = fake_upstream.since(mark)
    assert len(calls) == 2
    assert calls[0]["body_sha256"] == calls[1]["body_sha256"]
    assert calls[1]["body_len"] == len(body)
    assert normalized(via[2]) == normalized(direct[2])
    assert via[1] == direct[1]


# --------------------------------------------------------------------------- usage page

def test_usage_page_lists_the_denials(policy_gateway):
    """The denials recorded above show up on /usage per user and reason."""
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        ask_anthropic(anthropic_client(policy_gateway, "tok-models"), "claude-a-preview")
    db = policy_gateway.db
    db.wait_ended(info.value.response.headers["x-aibridge-interception-id"])
    # Every interception's end is recorded (the ends are written after the answers).
    end = time.monotonic() + POLICY_DEADLINE
    while db.query("SELECT id FROM aibridge_interceptions WHERE ended_at IS NULL"):
        assert time.monotonic() < end, "interceptions still without an end"
        time.sleep(0.05)
    req = urllib.request.Request(policy_gateway.url + "/usage?days=1",
                                 headers={"authorization": "Bearer tok-models"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        page = resp.read().decode()
    rows = re.findall(
        r'<tr><td class="label">([^<]*)</td><td><code>([a-z_]+)</code></td>'
        r'<td class="num">([0-9,]+)</td></tr>', page)
    got = {(u, r): int(n.replace(",", "")) for (u, r, n) in rows}
    want = {}
    for row in db.query("SELECT initiator_id, error FROM aibridge_interceptions"
                        " WHERE outcome = 'denied'"):
        e = row["error"]
        reason = ("rate_limit" if e.startswith("aibridge: rate limit of ")
                  else "model" if " is not allowed for " in e
                  else "budget" if (" budget of " in e or " has no price" in e)
                  else "other")
        key = (row["initiator_id"], reason)
        want[key] = want.get(key, 0) + 1
    assert got == want
    assert ("models-user", "model") in got
    # A policy with budgets is loaded: the budgets section lists the budgeted actors.
    assert 'id="budgets-table"' in page
    assert "tokens-user" in page and "1 tokens per day" in page
    assert "usd-user" in page and "$1.00 per month" in page


# --------------------------------------------------------------------------- reload

def test_bad_new_version_keeps_the_policy_and_a_good_one_applies(policy_gateway):
    """Runs last in this module: it rewrites the file. A bad version is logged and the
    policy in force stays; a good version applies (within the poll period)."""
    path = policy_gateway.policy_path
    a = anthropic_client(policy_gateway, "tok-models")
    path.write_text(POLICY + "\n[default]\nbogus = 1\n")
    end = time.monotonic() + POLICY_DEADLINE
    while "policy file: the new version is invalid" not in policy_gateway.logs():
        assert time.monotonic() < end, "the bad version was not reported" + policy_gateway.logs()
        time.sleep(0.1)
    with pytest.raises(anthropic.PermissionDeniedError):
        ask_anthropic(a, "claude-z-preview")
    # Now allow previews for this actor.
    path.write_text(POLICY + '\n[actors."models-user"]\ndeny_models = []\n')
    end = time.monotonic() + POLICY_DEADLINE
    while True:
        try:
            ask_anthropic(a, "claude-z-preview")
            break
        except anthropic.PermissionDeniedError:
            assert time.monotonic() < end, "the new version was not applied" + policy_gateway.logs()
            time.sleep(0.1)


def test_bad_policy_file_stops_the_gateway_naming_the_line(fake_upstream, tmp_path):
    import os
    import subprocess

    from conftest import GATEWAY_ENV, gateway_binary

    path = tmp_path / "policy.toml"
    path.write_text('[default]\nmodels = ["claude-*"]\nmodles = ["x"]\n')
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_ENV}
    env.update({"AIBRIDGE_LISTEN": "127.0.0.1:0", "AIBRIDGE_POLICY": str(path),
                "AIBRIDGE_DATABASE_URL": "sqlite://%s?mode=rwc" % (tmp_path / "db"),
                "ANTHROPIC_BASE_URL": fake_upstream.url})
    proc = subprocess.run([str(gateway_binary())], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60,
                          text=True)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert "AIBRIDGE_POLICY=%s" % path in proc.stderr
    assert "line 3" in proc.stderr and "unknown field `modles`" in proc.stderr, proc.stderr

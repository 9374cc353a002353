"""The usage report page (`GET /usage` of the example gateway) rendered in headless Chromium.

A gateway is started on a fresh SQLite database (its migrations create the schema), the
database is seeded with SQL inserts matching the schema (spec recorder.md), and the page is
loaded with `chromium --headless --dump-dom`. The tables are parsed out of the DOM and every
number shown is compared with totals computed here, independently of the SQL, from the seed.

Needs the `chromium` binary (Debian package `chromium`; .ci/run installs it). Without it the
tests FAIL: they never pass silently. `AIBRIDGE_USAGE_SCREENSHOT=/path/page.png` also saves
a full-page screenshot of the seeded report.
"""

import base64
import datetime
import html.parser
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import ACTOR, GATEWAY_TOKEN, REPO, running_gateway

CHROMIUM_DEADLINE = 90  # seconds for one headless page load

SQL_DIR = REPO / "examples" / "usage" / "sql"
QUERY_DOCS = REPO / "docs" / "usage-queries.md"

XSS_USER = '<script>alert("user")</script> & co'
XSS_MODEL = "model<b>bold</b>'\""
XSS_SESSION = "sess-<img src=x onerror=alert(1)>"
XSS_TOOL = "<svg onload=alert(2)>"

# (user, model, client, session, age in hours, outcome, token rows (input, output,
#  cache read, cache write[, cost_usd]; no cost = NULL, an unpriced model), tool calls (tool,
#  injected, provider_executed, error)).
# Ages put rows inside 24 h, 7 days, 30 days and 90 days. Totals are all distinct so the
# order of the rows is fully determined.
SEED = [
    ("alice", "claude-sonnet-4-5", "Claude Code", "sess-a1", 1, "completed",
     [(1200, 340, 50000, 2000, 0.75), (300, 80, 51000, 0, 0.3)],
     [("Read", False, False, None), ("Bash", False, False, None)]),
    ("alice", "claude-sonnet-4-5", "Claude Code", "sess-a1", 2, "completed",
     [(10, 20, 0, 0)],
     [("coder_list_workspaces", True, False, None)]),
    ("alice", "gpt-5-codex", "Codex", "sess-a2", 30, "failed",
     [(5000, 1000, 0, 0, 2.5)],
     [("shell", False, False, None)]),
    ("bob", "gpt-5-codex", "Codex", "sess-b1", 50, "completed",
     [(700, 7000, 1234567, 0, 1234.567891)],
     [("shell", False, False, None), ("shell", False, False, None),
      ("coder_list_templates", True, False, "context deadline exceeded")]),
    ("bob", "claude-haiku-4-5", "Unknown", None, 100, "completed",
     [(42, 43, 0, 0)],
     [("web_search", False, True, None)]),
    (XSS_USER, XSS_MODEL, "Cursor", XSS_SESSION, 5, "completed",
     [(1, 2, 3, 4)],
     [(XSS_TOOL, False, False, None)]),
    ("carol", "claude-sonnet-4-5", "Claude Code", "sess-c1", 24 * 10, "completed",
     [(999, 998, 0, 0, 0.001)],
     [("Read", False, False, None)]),
    ("dave", "gpt-4o", "Unknown", None, 24 * 45, "cancelled",
     [(5, 6, 7, 8, 0.02)],
     []),
    ("alice", "claude-sonnet-4-5", "Claude Code", "sess-a3", 0.5, None, [], []),  # in flight
    ("erin", "claude-opus-4-1", "Claude Code", "sess-e1", 24 * 200, "completed",  # too old
     [(1, 1, 1, 1, 100.0)],
     [("Read", False, False, None)]),
]

# Requests the policy denied: (user, model, age in hours, error as the bridge records it).
DENIED = [
    ("bob", "claude-opus-4-1", 3,
     'aibridge: model "claude-opus-4-1" is not allowed for "bob"'),
    ("bob", "claude-opus-4-1", 4,
     'aibridge: model "claude-opus-4-1" is not allowed for "bob"'),
    ("alice", "claude-sonnet-4-5", 6,
     "aibridge: token budget of 100000 per day exhausted (100007 used); "
     "resets at 2026-12-08T00:00:00Z"),
    ("alice", "gpt-5-codex", 40,
     "aibridge: USD budget of 50.00 per month exhausted (50.20 spent); "
     "resets at 2027-01-01T00:00:00Z"),
    ("carol", "local-llm", 60,
     'aibridge: model "local-llm" has no price, so it cannot be used under a USD budget '
     "of 5.00 per day"),
    ("carol", "claude-sonnet-4-5", 0.2,
     "aibridge: rate limit of 120 requests per minute exceeded; retry in 1 s"),
    ("dave", "gpt-4o", 24 * 20, "office hours are over"),
    ("erin", "gpt-4o", 24 * 200, "office hours are over"),  # too old
]


# --------------------------------------------------------------------------- seeding

def ts(t):
    """The schema's SQLite timestamp text: UTC RFC 3339, 6 fractional digits, Z."""
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seed(db_path, now):
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        for n, (user, model, client, session, age, outcome, tokens, tools) in enumerate(SEED):
            started = now - datetime.timedelta(hours=age)
            iid = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name,"
                " api, model, streaming, client, client_session_id, user_agent, credential_kind,"
                " metadata, started_at, ended_at, outcome)"
                " VALUES (?, ?, 'anthropic', 'anthropic', 'messages', ?, 1, ?, ?, 'seed/1.0',"
                " 'centralized', '{}', ?, ?, ?)",
                (iid, user, model, client, session, ts(started),
                 None if outcome is None else ts(started + datetime.timedelta(seconds=9)),
                 outcome))
            for k, t in enumerate(tokens):
                (inp, out, cr, cw), cost = t[:4], (t[4] if len(t) > 4 else None)
                conn.execute(
                    "INSERT INTO aibridge_token_usages (id, interception_id,"
                    " provider_response_id, input_tokens, output_tokens, cache_read_input_tokens,"
                    " cache_write_input_tokens, extra, created_at, cost_usd)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
                    (str(uuid.uuid4()), iid, "msg_%d_%d" % (n, k), inp, out, cr, cw,
                     ts(started + datetime.timedelta(seconds=1 + k)), cost))
            for k, (tool, injected, provider_executed, error) in enumerate(tools):
                conn.execute(
                    "INSERT INTO aibridge_tool_usages (id, interception_id, provider_response_id,"
                    " tool, tool_call_id, server_url, input, injected, provider_executed,"
                    " invocation_error, created_at) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, ?)",
                    (str(uuid.uuid4()), iid, "msg_%d" % n, tool, "call_%d_%d" % (n, k),
                     "https://coder.example.com/mcp" if injected else None,
                     int(injected), int(provider_executed), error,
                     ts(started + datetime.timedelta(seconds=2 + k))))
        for (user, model, age, error) in DENIED:
            started = now - datetime.timedelta(hours=age)
            conn.execute(
                "INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name,"
                " api, model, streaming, client, user_agent, credential_kind, metadata,"
                " started_at, ended_at, outcome, error)"
                " VALUES (?, ?, 'anthropic', 'anthropic', 'messages', ?, 0, 'Unknown',"
                " 'seed/1.0', 'centralized', '{}', ?, ?, 'denied', ?)",
                (str(uuid.uuid4()), user, model, ts(started), ts(started), error))
        conn.commit()
    finally:
        conn.close()


def usd(cost, unpriced):
    """A cost as the page shows it: unpriced tokens are never counted as $0."""
    def dollars(c):
        if 0 < c < 0.005:
            return "<$0.01"
        return "${:,.2f}".format(c)
    if cost is None:
        return "unpriced" if unpriced else dollars(0.0)
    return dollars(cost) + (" + unpriced" if unpriced else "")


def denial_reason(error):
    """The reason the page derives from a denial message (docs/usage-queries.md)."""
    if error.startswith("aibridge: rate limit of "):
        return "rate_limit"
    if re.match(r'aibridge: model ".*" is not allowed for ".*"', error):
        return "model"
    if re.match(r"aibridge: (token|USD) budget of ", error) or re.match(
            r'aibridge: model ".*" has no price', error):
        return "budget"
    return "other"


def expected_denials(days):
    counts = {}
    for (user, _model, age, error) in DENIED:
        if age < days * 24:
            key = (user, denial_reason(error))
            counts[key] = counts.get(key, 0) + 1
    return sorted(([u, r, n] for (u, r), n in counts.items()), key=lambda r: (-r[2], r[0], r[1]))


def expected_costs(days):
    """{dim: {label: (cost or None, unpriced tokens)}}, and per UTC day
    {YYYY-MM-DD: (tokens, cost or None, unpriced tokens)}, for the last `days` days."""
    now = datetime.datetime.now(datetime.timezone.utc)
    per = {"user": {}, "model": {}, "client": {}}
    daily = {}
    for (user, model, client, _s, age, _o, tokens, _c) in SEED:
        if age >= days * 24:
            continue
        started = now - datetime.timedelta(hours=age)
        for k, t in enumerate(tokens):
            n = sum(t[:4])
            cost = t[4] if len(t) > 4 else None
            day = (started + datetime.timedelta(seconds=1 + k)).strftime("%Y-%m-%d")
            for acc in [per["user"].setdefault(user, [None, 0]),
                        per["model"].setdefault(model, [None, 0]),
                        per["client"].setdefault(client, [None, 0])]:
                if cost is None:
                    acc[1] += n
                else:
                    acc[0] = (acc[0] or 0.0) + cost
            d = daily.setdefault(day, [0, None, 0])
            d[0] += n
            if cost is None:
                d[2] += n
            else:
                d[1] = (d[1] or 0.0) + cost
    return per, daily


def expected_days(days):
    """The UTC days the per-day chart covers: from the period start to today."""
    now = datetime.datetime.now(datetime.timezone.utc)
    first = (now - datetime.timedelta(days=days)).date()
    return [(first + datetime.timedelta(days=i)).strftime("%Y-%m-%d")
            for i in range((now.date() - first).days + 1)]


def expected(days):
    """What the page must show for the last `days` days, computed from SEED."""
    rows = [r for r in SEED if r[4] < days * 24]
    per = {"user": {}, "model": {}, "client": {}}
    sessions = {}
    tools = {}
    for (user, model, client, session, _age, _outcome, tokens, calls) in rows:
        for dim, key in (("user", user), ("model", model), ("client", client)):
            if tokens:
                acc = per[dim].setdefault(key, [0, 0, 0, 0, 0, 0])
                acc[0] += 1
                for (inp, out, cr, cw) in (t[:4] for t in tokens):
                    for i, v in enumerate((inp, out, cr, cw, inp + out + cr + cw)):
                        acc[1 + i] += v
        if session is not None:
            acc = sessions.setdefault((session, user, client), [0, 0])
            acc[0] += 1
            acc[1] += sum(sum(t[:4]) for t in tokens)
        for (tool, injected, provider_executed, error) in calls:
            kind = "injected" if injected else "provider" if provider_executed else "client"
            acc = tools.setdefault((tool, kind), [0, 0])
            acc[0] += 1
            acc[1] += error is not None
    token_tables = {
        dim: sorted(([k] + v for k, v in d.items()), key=lambda r: (-r[6], r[0]))
        for dim, d in per.items()
    }
    session_rows = sorted((list(k) + v for k, v in sessions.items()),
                          key=lambda r: (-r[4], -r[3], r[0], r[1], r[2]))[:20]
    tool_rows = sorted((list(k) + v for k, v in tools.items()),
                       key=lambda r: (-r[2], r[0], r[1]))
    denied = [d for d in DENIED if d[2] < days * 24]
    overview = {
        "interceptions": len(rows) + len(denied),
        "users": len({r[0] for r in rows} | {d[0] for d in denied}),
        "sessions": len({r[3] for r in rows if r[3] is not None}),
        "tokens": sum(sum(sum(t[:4]) for t in r[6]) for r in rows),
        "tool-calls": sum(len(r[7]) for r in rows),
        "failed": sum(1 for r in rows if r[5] == "failed"),
        "denied": len(denied),
    }
    return token_tables, session_rows, tool_rows, overview


# --------------------------------------------------------------------------- chromium

def chromium_binary():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: the usage page tests render /usage in headless "
                "Chromium. Install it (Debian/Ubuntu: `apt-get install -y chromium`; .ci/run "
                "does this) and run the tests again.")


def chromium(url, *extra):
    """Runs headless Chromium on url with the given extra flags; returns stdout."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="aibridge-chromium-") as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-extensions",
               "--user-data-dir=" + profile, *extra, url]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, timeout=CHROMIUM_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail("chromium did not finish loading %s within %ds" % (url, CHROMIUM_DEADLINE))
    assert proc.returncode == 0, "chromium failed (%d): %s" % (
        proc.returncode, proc.stderr.decode(errors="replace")[-2000:])
    return proc.stdout.decode()


def dump_dom(url):
    dom = chromium(url, "--dump-dom")
    assert "<html" in dom, "chromium returned no DOM for %s: %r" % (url, dom[:500])
    return dom


def screenshot(url, path):
    chromium(url, "--screenshot=" + str(path), "--window-size=1100,3600", "--hide-scrollbars",
             "--force-device-scale-factor=1")
    assert Path(path).is_file() and Path(path).stat().st_size > 0, "no screenshot written"


def authed(url, token=GATEWAY_TOKEN):
    """url with HTTP Basic credentials (user name ignored, the gateway token as password)."""
    return url.replace("http://", "http://usage:%s@" % token, 1)


class Page(html.parser.HTMLParser):
    """The parts of the report DOM the tests check: tables by id (header, body and footer
    rows as lists of cell texts), elements by id (text), the start tags seen, and the
    chart bars (<g> elements per SVG)."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tables = {}
        self.by_id = {}
        self.tags = []
        self.attr_names = set()
        self.charts = []
        self.empty_notes = []
        self._table = None
        self._part = None
        self._row = None
        self._cell = None
        self._ids = []  # stack of (tag, id, text parts)
        self._empty = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.attr_names.update(attrs)
        if attrs.get("id"):
            self._ids.append((tag, attrs["id"], []))
        if tag == "table":
            self._table = {"head": [], "body": [], "foot": []}
            self.tables[attrs.get("id")] = self._table
        elif tag in ("thead", "tbody", "tfoot") and self._table is not None:
            self._part = {"thead": "head", "tbody": "body", "tfoot": "foot"}[tag]
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "svg" and "chart" in (attrs.get("class") or ""):
            self.charts.append({"label": attrs.get("aria-label"), "bars": 0})
        elif tag == "g" and self.charts:
            self.charts[-1]["bars"] += 1
        elif tag == "p" and "empty" in (attrs.get("class") or ""):
            self._empty = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table[self._part].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._empty is not None:
            self.empty_notes.append("".join(self._empty).strip())
            self._empty = None
        if self._ids and self._ids[-1][0] == tag:
            _, ident, parts = self._ids.pop()
            self.by_id[ident] = " ".join(p.strip() for p in parts if p.strip())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._empty is not None:
            self._empty.append(data)
        for (_, _, parts) in self._ids:
            parts.append(data)


def number(text):
    assert re.fullmatch(r"-?[0-9][0-9,]*", text), "not a number: %r" % text
    return int(text.replace(",", ""))


def numbers(row, start):
    return row[:start] + [number(c) for c in row[start:]]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def seeded(fake_upstream, tmp_path_factory):
    """A gateway (token mode) on a database seeded with SEED."""
    tmp = tmp_path_factory.mktemp("usage")
    with running_gateway(tmp, fake_upstream.url) as gw:
        seed(gw.db.path, datetime.datetime.now(datetime.timezone.utc))
        yield gw


def get(url, headers=None):
    """(status, headers, body) of a GET, also for error statuses."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


# --------------------------------------------------------------------------- tests

def check_report(page, days):
    token_tables, session_rows, tool_rows, overview = expected(days)
    costs, daily = expected_costs(days)
    for dim in ("user", "model", "client"):
        table = page.tables.get("tokens-by-" + dim)
        assert table is not None, "no tokens-by-%s table" % dim
        assert table["head"] == [[{"user": "User", "model": "Model", "client": "Client"}[dim],
                                  "Requests", "Input", "Output", "Cache read", "Cache write",
                                  "Total", "Cost (USD)"]]
        got = [numbers(r[:-1], 1) for r in table["body"]]
        assert got == token_tables[dim], "tokens per %s (days=%d)" % (dim, days)
        want_foot = ["Total"] + [sum(r[i] for r in token_tables[dim]) for i in range(1, 7)]
        assert [numbers(r[:-1], 1) for r in table["foot"]] == [want_foot], dim
        # The cost next to the tokens: unpriced tokens are never summed as $0.
        want_costs = [usd(*costs[dim][r[0]]) for r in token_tables[dim]]
        assert [r[-1] for r in table["body"]] == want_costs, "cost per %s (days=%d)" % (dim, days)
        priced = [c for (c, _) in costs[dim].values() if c is not None]
        foot_cost = usd(sum(priced) if priced else None,
                        sum(u for (_, u) in costs[dim].values()))
        assert table["foot"][0][-1] == foot_cost, dim
    got = [numbers(r, 3) for r in page.tables["top-sessions"]["body"]]
    assert got == session_rows, "top sessions (days=%d)" % days
    got = [numbers(r, 2) for r in page.tables["tool-calls"]["body"]]
    assert got == tool_rows, "tool calls (days=%d)" % days
    kinds = {k: sum(r[2] for r in tool_rows if r[1] == k)
             for k in ("injected", "client", "provider")}
    assert page.by_id["tool-kinds"].split() == [
        "Injected", str(kinds["injected"]), "Client", str(kinds["client"]),
        "Provider", str(kinds["provider"])]
    for key, value in overview.items():
        assert number(page.by_id["ov-" + key]) == value, "overview %s (days=%d)" % (key, days)
    priced = [c for (c, _) in costs["user"].values() if c is not None]
    assert page.by_id["ov-cost"] == usd(sum(priced) if priced else None,
                                        sum(u for (_, u) in costs["user"].values()))
    # Tokens and cost per day: every day of the period, zero where nothing was recorded.
    days_shown = expected_days(days)
    want_daily = []
    for day in days_shown:
        tokens, cost, unpriced = daily.get(day, (0, None, 0))
        want_daily.append([day, tokens, usd(cost, unpriced)])
    got_daily = [[r[0], number(r[1]), r[2]] for r in page.tables["daily-table"]["body"]]
    assert got_daily == want_daily, "per day (days=%d)" % days
    # Denials per user and reason.
    want_denials = expected_denials(days)
    if want_denials:
        got = [numbers(r, 2) for r in page.tables["denials-table"]["body"]]
        assert got == want_denials, "denials (days=%d)" % days
    else:
        assert "denials-table" not in page.tables
    # No policy is loaded: no budgets section.
    assert "budgets-table" not in page.tables and "budgets" not in page.by_id
    # One chart per section, one bar per row (per day for the daily chart).
    assert [(c["label"], c["bars"]) for c in page.charts] == [
        ("Tokens and cost per day", len(days_shown)),
        ("Tokens per user", len(token_tables["user"])),
        ("Tokens per model", len(token_tables["model"])),
        ("Tokens per client", len(token_tables["client"])),
        ("Tokens per session", len(session_rows)),
        ("Tool calls per tool", len(tool_rows)),
    ]


def test_seeded_report_shows_the_seeded_numbers(seeded):
    dom = dump_dom(authed(seeded.url + "/usage"))
    page = Page(dom)
    check_report(page, 7)
    assert "Usage in the last 7 days" in dom
    # The in-flight interception is pointed out.
    assert number(page.by_id["ov-in-flight"].split()[0]) == 1
    shot = os.environ.get("AIBRIDGE_USAGE_SCREENSHOT")
    if shot:
        screenshot(authed(seeded.url + "/usage"), shot)


@pytest.mark.parametrize("days", [1, 30, 90])
def test_period_selector(seeded, days):
    page = Page(dump_dom(authed(seeded.url + "/usage?days=%d" % days)))
    check_report(page, days)


def test_user_controlled_text_is_escaped(seeded):
    dom = dump_dom(authed(seeded.url + "/usage"))
    page = Page(dom)
    # The hostile strings show up as text, verbatim...
    users = [r[0] for r in page.tables["tokens-by-user"]["body"]]
    assert XSS_USER in users
    assert XSS_MODEL in [r[0] for r in page.tables["tokens-by-model"]["body"]]
    assert XSS_SESSION in [r[0] for r in page.tables["top-sessions"]["body"]]
    assert XSS_TOOL in [r[0] for r in page.tables["tool-calls"]["body"]]
    # ...and never as markup: no script, img or b element exists, and the only svg
    # elements are the five charts.
    assert "script" not in page.tags
    assert "img" not in page.tags
    assert "b" not in page.tags
    assert page.tags.count("svg") == 6
    assert not {a for a in page.attr_names if a.startswith("on")}, page.attr_names


def test_empty_database(fake_upstream, tmp_path):
    with running_gateway(tmp_path, fake_upstream.url) as gw:
        status, headers, _ = get(gw.url + "/usage", {"authorization": "Bearer " + GATEWAY_TOKEN})
        assert status == 200
        page = Page(dump_dom(authed(gw.url + "/usage")))
        for key in ("interceptions", "users", "sessions", "tokens", "tool-calls", "failed",
                    "denied"):
            assert page.by_id["ov-" + key] == "0", key
        assert page.by_id["ov-cost"] == "$0.00"
        assert "ov-in-flight" not in page.by_id
        assert not page.tables, "no tables without data"
        assert not page.charts, "no charts without data"
        assert page.empty_notes == [
            "No token usage recorded in this period.",
            "No token usage recorded in this period.",
            "No token usage recorded in this period.",
            "No token usage recorded in this period.",
            "No client sessions in this period.",
            "No tool calls recorded in this period.",
            "No denied requests in this period.",
        ]


def test_authentication_and_headers(seeded):
    url = seeded.url + "/usage"
    basic = "Basic " + base64.b64encode(b"anyone:" + GATEWAY_TOKEN.encode()).decode()
    for headers in ({"authorization": "Bearer " + GATEWAY_TOKEN},
                    {"x-api-key": GATEWAY_TOKEN},
                    {"authorization": basic}):
        status, resp_headers, body = get(url, headers)
        assert status == 200, headers
        assert resp_headers["content-type"] == "text/html; charset=utf-8"
        assert resp_headers["cache-control"] == "no-store"
        assert "default-src 'none'" in resp_headers["content-security-policy"]
        assert resp_headers["x-content-type-options"] == "nosniff"
        assert resp_headers["x-frame-options"] == "DENY"
        assert body.startswith("<!doctype html>")
        assert "<script" not in body
    wrong = "Basic " + base64.b64encode(b"anyone:tok-wrong").decode()
    for headers in ({}, {"authorization": "Bearer tok-wrong"}, {"authorization": wrong},
                    {"authorization": "Basic !!!not-base64"}):
        status, resp_headers, body = get(url, headers)
        assert status == 401, headers
        assert resp_headers["www-authenticate"].startswith('Basic realm="aibridge usage"')
        assert body == "unauthorized\n"
        assert "alice" not in body
    # A token in the URL is not accepted.
    status, _, _ = get(url + "?token=" + GATEWAY_TOKEN)
    assert status == 401
    status, _, body = get(url + "?days=2", {"authorization": "Bearer " + GATEWAY_TOKEN})
    assert status == 400
    assert body == "days must be one of 1, 7, 30, 90\n"


def test_local_mode_is_open(fake_upstream, tmp_path):
    with running_gateway(tmp_path, fake_upstream.url, {"AIBRIDGE_TOKENS": ""}) as gw:
        status, _, body = get(gw.url + "/usage?days=1")
        assert status == 200
        assert "last 24 hours" in body


def test_recorded_request_shows_up(gateway, anthropic_client, db):
    """A real request through the gateway (SDK → gateway → fake upstream) appears in the
    report with exactly the tokens recorded for it."""
    raw = anthropic_client.messages.with_raw_response.create(
        model="claude-usage-page", max_tokens=16,
        messages=[{"role": "user", "content": "count me"}])
    usage = raw.http_response.json()["usage"]
    db.wait_ended(raw.headers["x-aibridge-interception-id"])
    page = Page(dump_dom(authed(gateway.url + "/usage?days=1")))
    models = {r[0]: numbers(r[:-1], 1) for r in page.tables["tokens-by-model"]["body"]}
    want_total = (usage["input_tokens"] + usage["output_tokens"]
                  + (usage.get("cache_read_input_tokens") or 0)
                  + (usage.get("cache_creation_input_tokens") or 0))
    assert models["claude-usage-page"] == [
        "claude-usage-page", 1, usage["input_tokens"], usage["output_tokens"],
        usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_creation_input_tokens") or 0, want_total]
    # The user's row equals the sums over everything the shared database holds for them.
    sums = db.query(
        "SELECT COUNT(DISTINCT t.interception_id) AS requests, SUM(t.input_tokens) AS i,"
        " SUM(t.output_tokens) AS o, SUM(t.cache_read_input_tokens) AS cr,"
        " SUM(t.cache_write_input_tokens) AS cw FROM aibridge_token_usages t"
        " JOIN aibridge_interceptions x ON x.id = t.interception_id"
        " WHERE x.initiator_id = ?", (ACTOR,))[0]
    users = {r[0]: numbers(r[:-1], 1) for r in page.tables["tokens-by-user"]["body"]}
    assert users[ACTOR] == [ACTOR, sums["requests"], sums["i"], sums["o"], sums["cr"],
                            sums["cw"], sums["i"] + sums["o"] + sums["cr"] + sums["cw"]]


# --------------------------------------------------------------------------- the SQL

def sql_files():
    files = sorted(SQL_DIR.glob("*.sql"))
    assert len(files) == 8, files
    return files


def test_queries_are_documented_verbatim():
    docs = QUERY_DOCS.read_text()
    for f in sql_files():
        text = f.read_text().strip()
        assert "```sql\n%s\n```" % text in docs, "%s is not quoted verbatim in %s" % (
            f.name, QUERY_DOCS)


def test_queries_run_in_plain_sqlite(seeded):
    """The query files run unchanged through Python's sqlite3 (the same engine as the
    sqlite3 shell) with $1 bound by name, and agree with the page's expectations."""
    cutoff = ts(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=7))
    token_tables, session_rows, tool_rows, overview = expected(7)
    conn = sqlite3.connect(str(seeded.db.path), timeout=10)
    try:
        results = {f.stem: conn.execute(f.read_text(), {"1": cutoff}).fetchall()
                   for f in sql_files()}
    finally:
        conn.close()
    costs, daily = expected_costs(7)
    for dim in ("user", "model", "client"):
        assert [list(r)[:7] for r in results["tokens_by_" + dim]] == token_tables[dim], dim
        for r in results["tokens_by_" + dim]:
            want_cost, want_unpriced = costs[dim][r[0]]
            assert r[8] == want_unpriced, (dim, r)
            assert (r[7] is None) == (want_cost is None), (dim, r)
            if want_cost is not None:
                assert r[7] == pytest.approx(want_cost), (dim, r)
    assert [r[0] for r in results["daily"]] == sorted(daily), results["daily"]
    for (day, tokens, cost, unpriced) in results["daily"]:
        want_tokens, want_cost, want_unpriced = daily[day]
        assert (tokens, unpriced) == (want_tokens, want_unpriced), day
        assert cost == (None if want_cost is None else pytest.approx(want_cost)), day
    assert [list(r) for r in results["denials"]] == expected_denials(7)
    assert [list(r) for r in results["top_sessions"]] == session_rows
    assert [list(r) for r in results["tool_calls"]] == tool_rows
    (interceptions, users, sessions, failed, in_flight, denied), = results["overview"]
    assert (interceptions, users, sessions, failed, in_flight, denied) == (
        overview["interceptions"], overview["users"], overview["sessions"],
        overview["failed"], 1, overview["denied"])


def test_sqlite3_shell_instructions(seeded):
    """The `sqlite3` command line of docs/usage-queries.md works as written (skipped
    only when the sqlite3 shell is not installed; the SQL itself is checked above)."""
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 shell is not installed")
    proc = subprocess.run(
        [shell, "-readonly", "-json", str(seeded.db.path), "-cmd",
         ".parameter set $1 \"strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days')\""],
        stdin=open(SQL_DIR / "tokens_by_user.sql"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=30)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    token_tables = expected(7)[0]
    assert [[r["label"], r["requests"], r["input_tokens"], r["output_tokens"],
             r["cache_read_tokens"], r["cache_write_tokens"], r["total_tokens"]]
            for r in rows] == token_tables["user"]

//! The load driver of the benchmark harness (`scripts/bench.sh`, `BENCHMARKS.md`).
//!
//! Runs each workload against every target in turn (direct to the mock first, then each
//! gateway), repeated and alternating, and prints one table. For each run it measures
//! throughput, latency percentiles (from the moment the request was due, so a fixed-rate
//! run is free of coordinated omission), time to first byte of streams, relayed events,
//! the CPU time of every process named (utime + stime from `/proc/<pid>/stat`, summed over
//! the process and its descendants) and, for the slow-stream workload, resident memory.
//!
//! ```text
//! load_driver --target 'name=direct,anthropic=http://127.0.0.1:9000,openai=http://127.0.0.1:9000/v1,pid=123' \
//!             --target 'name=aibridge,anthropic=http://127.0.0.1:8080/api/v2/aibridge/anthropic,openai=http://127.0.0.1:8080/api/v2/aibridge/openai/v1,pid=456,header=authorization:Bearer tok,metrics=http://127.0.0.1:8080/metrics' \
//!             --mock-pid 123 --secs 5 --reps 3 --workloads small,stream200,rate3000,hold
//! ```
//!
//! Target keys: `name`, `anthropic` and `openai` (base URLs, OpenAI's with `/v1`), `pid`
//! (the process whose CPU and memory are reported), `header=name:value` (every request;
//! repeatable), `aheader=`/`oheader=` (Anthropic / OpenAI requests only), `aprefix=` and
//! `oprefix=` (prepended to the model name), `metrics` (a Prometheus endpoint whose
//! `interception_overhead_seconds` histogram is compared with the measured added latency).
//! The first target is the baseline of "added" figures.
#![allow(
    clippy::print_stdout,
    reason = "the driver prints its report on stdout"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

// ---------------------------------------------------------------------------------------------
// Configuration

#[derive(Debug, Clone, Default)]
struct Target {
    name: String,
    anthropic: String,
    openai: String,
    pid: Option<u32>,
    headers: Vec<(String, String)>,
    a_headers: Vec<(String, String)>,
    o_headers: Vec<(String, String)>,
    a_prefix: String,
    o_prefix: String,
    metrics: Option<String>,
    /// The target runs the MCP loop itself (a gateway with the bench MCP server): it runs only
    /// the `mcp` workloads, as one request each; other targets get those as a client-side loop.
    mcp: bool,
}

fn parse_target(spec: &str) -> Result<Target, String> {
    let mut t = Target::default();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("target part {part:?}: expected key=value"))?;
        let header = || {
            v.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("header {v:?}: expected name:value"))
        };
        match k {
            "name" => v.clone_into(&mut t.name),
            "anthropic" => v.trim_end_matches('/').clone_into(&mut t.anthropic),
            "openai" => v.trim_end_matches('/').clone_into(&mut t.openai),
            "pid" => t.pid = Some(v.parse().map_err(|e| format!("pid {v:?}: {e}"))?),
            "header" => t.headers.push(header()?),
            "aheader" => t.a_headers.push(header()?),
            "oheader" => t.o_headers.push(header()?),
            "aprefix" => v.clone_into(&mut t.a_prefix),
            "oprefix" => v.clone_into(&mut t.o_prefix),
            "metrics" => t.metrics = Some(v.to_owned()),
            "mcp" => t.mcp = v == "1",
            _ => return Err(format!("unknown target key {k:?}")),
        }
    }
    if t.name.is_empty() || t.anthropic.is_empty() || t.openai.is_empty() {
        return Err(format!(
            "target {spec:?}: name, anthropic and openai are required"
        ));
    }
    Ok(t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Messages,
    Chat,
    Responses,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `conc` connections, each sending its next request when the last one ended.
    Closed { conc: usize },
    /// A constant request rate over `conns` connections (wrk2-style).
    Rate { rps: u64, conns: usize },
    /// Slow streams held open in steps: the memory of each step is sampled.
    Hold { steps: &'static [usize] },
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    what: &'static str,
    api: Api,
    stream: bool,
    /// The mock's shape: `e<events>-b<bytes>-t<ttfb ms>-d<delay µs>`.
    shape: &'static str,
    /// Approximate request body size.
    body_bytes: usize,
    mode: Mode,
    /// An MCP loop with one tool (mock shape `m1`): a target with `mcp=1` runs it inside;
    /// for the others the driver plays the loop (the answer's tool call, then a second request
    /// with the tool result), so both sides make the same two model calls.
    tool_loop: bool,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "small",
        what: "Messages, blocking, 0.2 kB request, 0.7 kB answer, 32 connections",
        api: Api::Messages,
        stream: false,
        shape: "e20-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 32 },
        tool_loop: false,
    },
    Workload {
        name: "small-c1",
        what: "`small` over 1 connection (the connection matrix of BENCHMARKS.md)",
        api: Api::Messages,
        stream: false,
        shape: "e20-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 1 },
        tool_loop: false,
    },
    Workload {
        name: "small-c16",
        what: "`small` over 16 connections (the connection matrix of BENCHMARKS.md)",
        api: Api::Messages,
        stream: false,
        shape: "e20-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 16 },
        tool_loop: false,
    },
    Workload {
        name: "small-c64",
        what: "`small` over 64 connections (the connection matrix of BENCHMARKS.md)",
        api: Api::Messages,
        stream: false,
        shape: "e20-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 64 },
        tool_loop: false,
    },
    Workload {
        name: "cc100k",
        what: "Messages, blocking, Claude Code-sized 100 kB request, 16 connections",
        api: Api::Messages,
        stream: false,
        shape: "e20-b32-t0-d0",
        body_bytes: 100_000,
        mode: Mode::Closed { conc: 16 },
        tool_loop: false,
    },
    Workload {
        name: "stream200",
        what: "Messages stream, 200 deltas of 32 B, 16 connections",
        api: Api::Messages,
        stream: true,
        shape: "e200-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 16 },
        tool_loop: false,
    },
    Workload {
        name: "stream5000",
        what: "Messages stream, 5,000 deltas of 32 B, 4 connections",
        api: Api::Messages,
        stream: true,
        shape: "e5000-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 4 },
        tool_loop: false,
    },
    Workload {
        name: "rate3000",
        what: "Messages, blocking, small, fixed 3,000 req/s over 64 connections",
        api: Api::Messages,
        stream: false,
        shape: "e20-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Rate {
            rps: 3000,
            conns: 64,
        },
        tool_loop: false,
    },
    Workload {
        name: "responses200",
        what: "Responses stream, 200 deltas of 32 B, 16 connections",
        api: Api::Responses,
        stream: true,
        shape: "e200-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 16 },
        tool_loop: false,
    },
    Workload {
        name: "chat200",
        what: "Chat Completions stream, 200 deltas of 32 B, 16 connections",
        api: Api::Chat,
        stream: true,
        shape: "e200-b32-t0-d0",
        body_bytes: 0,
        mode: Mode::Closed { conc: 16 },
        tool_loop: false,
    },
    Workload {
        name: "paced",
        what: "Messages stream paced like a model: 20 ms to first byte, 50 deltas 2 ms apart, 8 connections",
        api: Api::Messages,
        stream: true,
        shape: "e50-b32-t20-d2000",
        body_bytes: 0,
        mode: Mode::Closed { conc: 8 },
        tool_loop: false,
    },
    Workload {
        name: "hold",
        what: "slow Messages streams held open (one event per 250 ms): 100, then 1,000 at once",
        api: Api::Messages,
        stream: true,
        shape: "e2000-b32-t0-d250000",
        body_bytes: 0,
        mode: Mode::Hold {
            steps: &[100, 1000],
        },
        tool_loop: false,
    },
    Workload {
        name: "mcp1",
        what: "Messages stream, MCP loop with one tool: tool call, tool result, 50 deltas; 8 connections",
        api: Api::Messages,
        stream: true,
        shape: "e50-b32-t0-d0-m1",
        body_bytes: 0,
        mode: Mode::Closed { conc: 8 },
        tool_loop: true,
    },
];

/// The second request of a client-side MCP loop: `first` with the assistant's tool call and
/// the tool's result appended (the same turns the gateway's loop appends).
fn followup_body(first: &[u8]) -> Bytes {
    let text = std::str::from_utf8(first).expect("utf-8 body");
    // The small Messages body ends with the messages array (then only `"stream"`).
    let at = text.rfind(']').expect("messages array");
    let turns = r#",{"role":"assistant","content":[{"type":"tool_use","id":"toolu_mock","name":"bmcp_bench_list_workspaces","input":{"owner":"bench"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_mock","content":[{"type":"text","text":"workspaces of bench: dev-1, dev-2"}]}]}"#;
    Bytes::from(format!("{}{turns}{}", &text[..at], &text[at..]))
}

/// A request body for `w` with model prefix `prefix`.
fn request_body(w: &Workload, prefix: &str) -> Bytes {
    let model = match w.api {
        Api::Messages => format!("{prefix}claude-sonnet-4-5-mock-{}", w.shape),
        Api::Chat | Api::Responses => format!("{prefix}gpt-4.1-mock-{}", w.shape),
    };
    let stream = if w.stream { ",\"stream\":true" } else { "" };
    let filler = |n: usize| -> String {
        "The quick brown fox jumps over the lazy dog; fn main() { println!(hi); } // src/lib.rs "
            .chars()
            .cycle()
            .take(n)
            .collect()
    };
    let body = match w.api {
        Api::Messages if w.body_bytes > 0 => {
            // Claude Code-like: a long system prompt, tools, and a long conversation.
            let turns = 8;
            let chunk = w.body_bytes / (turns + 2);
            let mut msgs = String::new();
            for i in 0..turns {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                let _ = write!(
                    msgs,
                    r#"{{"role":"{role}","content":[{{"type":"text","text":"{}"}}]}},"#,
                    filler(chunk)
                );
            }
            let _ = write!(
                msgs,
                r#"{{"role":"user","content":[{{"type":"text","text":"please fix the failing test"}}]}}"#
            );
            format!(
                r#"{{"model":"{model}","max_tokens":32000,"system":[{{"type":"text","text":"{}"}}],"tools":[{{"name":"Read","description":"{}","input_schema":{{"type":"object","properties":{{"file_path":{{"type":"string"}}}},"required":["file_path"]}}}}],"metadata":{{"user_id":"user_bench_account_00000000-0000-0000-0000-000000000000_session_11111111-1111-1111-1111-111111111111"}},"messages":[{msgs}]{stream}}}"#,
                filler(chunk),
                filler(chunk / 2)
            )
        }
        Api::Messages => format!(
            r#"{{"model":"{model}","max_tokens":1024,"messages":[{{"role":"user","content":"Say hello in one short sentence, please."}}]{stream}}}"#
        ),
        Api::Chat => format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello in one short sentence, please."}}]{stream}}}"#
        ),
        Api::Responses => format!(
            r#"{{"model":"{model}","input":"Say hello in one short sentence, please."{stream}}}"#
        ),
    };
    Bytes::from(body)
}

// ---------------------------------------------------------------------------------------------
// /proc

/// utime + stime of `pid` and its descendants, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / tick
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(close) = s.rfind(')')
                && let Some(pp) = s[close + 2..]
                    .split(' ')
                    .nth(1)
                    .and_then(|v| v.parse().ok())
            {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// A `/proc/<pid>/status` field in KiB, summed over the process tree.
fn status_kib(pid: u32, field: &str) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Url {
    host_port: String,
    path: String,
}

fn split_url(url: &str) -> Url {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (hp, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Url {
        host_port: hp.to_owned(),
        path: path.to_owned(),
    }
}

/// A prepared request: everything but the body's clone.
#[derive(Clone)]
struct Prepared {
    host_port: Rc<str>,
    path: Rc<str>,
    headers: Rc<Vec<(String, String)>>,
    body: Bytes,
    /// A client-side MCP loop's second request (see [`Workload::tool_loop`]).
    followup: Option<Bytes>,
}

impl Prepared {
    fn new(t: &Target, w: &Workload) -> Self {
        let (base, prefix, extra, path) = match w.api {
            Api::Messages => (&t.anthropic, &t.a_prefix, &t.a_headers, "/v1/messages"),
            Api::Chat => (&t.openai, &t.o_prefix, &t.o_headers, "/chat/completions"),
            Api::Responses => (&t.openai, &t.o_prefix, &t.o_headers, "/responses"),
        };
        let url = split_url(&format!("{base}{path}"));
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("user-agent".to_owned(), "aibridge-load-driver/1".to_owned()),
        ];
        if w.api == Api::Messages {
            headers.push(("anthropic-version".to_owned(), "2023-06-01".to_owned()));
        }
        headers.extend(t.headers.iter().cloned());
        headers.extend(extra.iter().cloned());
        let body = request_body(w, prefix);
        Self {
            host_port: url.host_port.into(),
            path: url.path.into(),
            headers: Rc::new(headers),
            followup: (w.tool_loop && !t.mcp).then(|| followup_body(&body)),
            body,
        }
    }

    fn request(&self, body: &Bytes) -> Request<Full<Bytes>> {
        let mut b = Request::post(&*self.path).header("host", &*self.host_port);
        for (n, v) in self.headers.iter() {
            b = b.header(n.as_str(), v.as_str());
        }
        b.body(Full::new(body.clone())).expect("request")
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(host_port: &str) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(host_port)
        .await
        .map_err(|e| format!("connect {host_port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One exchange's timings.
struct Exchange {
    /// From send to the end of the body.
    total: Duration,
    /// From send to the first body bytes.
    ttfb: Duration,
    events: u64,
    bytes: u64,
}

/// One exchange of `p`, or for a client-side MCP loop both of its requests back to back
/// (latency the sum, time to first byte the first answer's).
async fn exchange(
    sender: &mut Sender,
    p: &Prepared,
    on_first: Option<&dyn Fn()>,
) -> Result<Exchange, String> {
    let first = exchange_body(sender, p, &p.body, on_first).await?;
    let Some(followup) = &p.followup else {
        return Ok(first);
    };
    let second = exchange_body(sender, p, followup, None).await?;
    Ok(Exchange {
        total: first.total + second.total,
        ttfb: first.ttfb,
        events: first.events + second.events,
        bytes: first.bytes + second.bytes,
    })
}

async fn exchange_body(
    sender: &mut Sender,
    p: &Prepared,
    body: &Bytes,
    on_first: Option<&dyn Fn()>,
) -> Result<Exchange, String> {
    let start = Instant::now();
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = sender
        .send_request(p.request(body))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttfb = None;
    let (mut events, mut bytes, mut last_nl) = (0u64, 0u64, false);
    let mut err_body = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if ttfb.is_none() {
            ttfb = Some(start.elapsed());
            if let Some(f) = on_first {
                f();
            }
        }
        if status != StatusCode::OK && err_body.len() < 2000 {
            err_body.extend_from_slice(&data);
        }
        bytes += data.len() as u64;
        if last_nl && data[0] == b'\n' {
            events += 1;
        }
        events += memchr::memmem::find_iter(&data, b"\n\n").count() as u64;
        last_nl = data[data.len() - 1] == b'\n';
    }
    let total = start.elapsed();
    if status != StatusCode::OK {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&err_body)
        ));
    }
    Ok(Exchange {
        total,
        ttfb: ttfb.unwrap_or(total),
        events,
        bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// Runs

#[derive(Debug, Default, Clone)]
struct Samples {
    latency_ns: Vec<u64>,
    ttfb_ns: Vec<u64>,
    events: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    /// Rate mode: requests sent later than due because every connection was busy.
    late: u64,
    wall: f64,
    cpu_target: f64,
    cpu_mock: f64,
    cpu_driver: f64,
    /// Hold mode: (streams, VmRSS KiB) per step.
    rss_steps: Vec<(usize, u64)>,
    hwm_kib: u64,
    /// Overhead histogram delta: (le, cumulative count).
    overhead: Vec<(f64, f64)>,
}

impl Samples {
    fn merge(&mut self, o: Samples) {
        self.latency_ns.extend(o.latency_ns);
        self.ttfb_ns.extend(o.ttfb_ns);
        self.events += o.events;
        self.bytes += o.bytes;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.late += o.late;
        self.wall += o.wall;
        self.cpu_target += o.cpu_target;
        self.cpu_mock += o.cpu_mock;
        self.cpu_driver += o.cpu_driver;
        self.rss_steps.extend(o.rss_steps);
        self.hwm_kib = self.hwm_kib.max(o.hwm_kib);
        if self.overhead.is_empty() {
            self.overhead = o.overhead;
        } else {
            for (a, b) in self.overhead.iter_mut().zip(o.overhead) {
                a.1 += b.1;
            }
        }
    }
}

fn record(s: &mut Samples, r: Result<Exchange, String>, latency: Duration) {
    match r {
        Ok(x) => {
            s.latency_ns.push(latency.as_nanos() as u64);
            s.ttfb_ns
                .push((x.ttfb + latency.saturating_sub(x.total)).as_nanos() as u64);
            s.events += x.events;
            s.bytes += x.bytes;
        }
        Err(e) => {
            s.errors += 1;
            if s.first_error.is_none() {
                s.first_error = Some(e);
            }
        }
    }
}

async fn run_closed(p: &Prepared, conc: usize, secs: f64) -> Samples {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let p = p.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut s = Samples::default();
            let mut sender = None;
            while Instant::now() < deadline {
                if sender.is_none() {
                    match connect(&p.host_port).await {
                        Ok(c) => sender = Some(c),
                        Err(e) => {
                            record(&mut s, Err(e), Duration::ZERO);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = sender.as_mut() else { continue };
                let r = exchange(c, &p, None).await;
                if r.is_err() {
                    sender = None;
                }
                let lat = r.as_ref().map(|x| x.total).unwrap_or_default();
                record(&mut s, r, lat);
            }
            s
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    all
}

async fn run_rate(p: &Prepared, rps: u64, conns: usize, secs: f64) -> Samples {
    let start = Instant::now() + Duration::from_millis(20);
    let total = (rps as f64 * secs) as u64;
    let ticket = Rc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let p = p.clone();
        let ticket = ticket.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut s = Samples::default();
            let Ok(mut sender) = connect(&p.host_port).await else {
                s.errors += 1;
                return s;
            };
            loop {
                let i = ticket.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rps as f64);
                let now = Instant::now();
                // Due already (every connection was busy): latency counts from `due`
                // (coordinated omission). Otherwise wait, and count from the send, so the
                // timer's 1 ms granularity is not charged to the server.
                let from = if now > due + Duration::from_micros(500) {
                    s.late += 1;
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                };
                let r = exchange(&mut sender, &p, None).await;
                let lat = from.elapsed();
                let failed = r.is_err();
                record(&mut s, r, lat);
                if failed {
                    match connect(&p.host_port).await {
                        Ok(c) => sender = c,
                        Err(_) => break,
                    }
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    all
}

/// Opens slow streams in steps; after each step's streams have all received their first
/// event, waits `settle` and samples the target's VmRSS.
async fn run_hold(p: &Prepared, steps: &[usize], pid: Option<u32>, settle: Duration) -> Samples {
    let mut s = Samples::default();
    let started = Rc::new(AtomicU64::new(0));
    let stop = Rc::new(AtomicBool::new(false));
    let stop_notify = Rc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    let mut open = 0usize;
    for &n in steps {
        while open < n {
            let p = p.clone();
            let started = started.clone();
            let stop_notify = stop_notify.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let Ok(mut sender) = connect(&p.host_port).await else {
                    return Err("connect".to_owned());
                };
                let bump = || {
                    started.fetch_add(1, Ordering::Relaxed);
                };
                tokio::select! {
                    r = exchange(&mut sender, &p, Some(&bump)) => r.map(|_| ()),
                    () = stop_notify.notified() => Ok(()),
                }
            }));
            open += 1;
            if open.is_multiple_of(50) {
                tokio::task::yield_now().await;
            }
        }
        let wait_until = Instant::now() + Duration::from_secs(30);
        while (started.load(Ordering::Relaxed) as usize) < n && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(settle).await;
        let up = started.load(Ordering::Relaxed) as usize;
        if up < n {
            s.errors += (n - up) as u64;
            s.first_error
                .get_or_insert_with(|| format!("only {up} of {n} streams started"));
        }
        s.rss_steps
            .push((up, pid.map_or(0, |p| status_kib(p, "VmRSS:"))));
    }
    stop.store(true, Ordering::Relaxed);
    stop_notify.notify_waiters();
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            s.errors += 1;
            s.first_error.get_or_insert(e);
        }
    }
    s
}

/// The cumulative buckets of `interception_overhead_seconds`, summed over label sets.
async fn scrape_overhead(url: &str) -> Vec<(f64, f64)> {
    let u = split_url(url);
    let Ok(mut sender) = connect(&u.host_port).await else {
        return Vec::new();
    };
    let req = Request::get(&*u.path)
        .header("host", &*u.host_port)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let Ok(resp) = sender.send_request(req).await else {
        return Vec::new();
    };
    let Ok(body) = resp.into_body().collect().await else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("interception_overhead_seconds_bucket{") else {
            continue;
        };
        let Some(le_at) = rest.find("le=\"") else {
            continue;
        };
        let le_s = &rest[le_at + 4..];
        let le_s = &le_s[..le_s.find('"').unwrap_or(0)];
        let le = if le_s == "+Inf" {
            f64::INFINITY
        } else {
            le_s.parse().unwrap_or(f64::NAN)
        };
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let e = buckets.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += count;
    }
    let mut v: Vec<(f64, f64)> = buckets.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

async fn run_one(w: &Workload, t: &Target, mock_pid: Option<u32>, secs: f64) -> Samples {
    let p = Prepared::new(t, w);
    let me = std::process::id();
    let before_metrics = match &t.metrics {
        Some(m) => scrape_overhead(m).await,
        None => Vec::new(),
    };
    let (c_t, c_m, c_d) = (
        t.pid.map_or(0.0, cpu_seconds),
        mock_pid.map_or(0.0, cpu_seconds),
        cpu_seconds(me),
    );
    let start = Instant::now();
    let mut s = match w.mode {
        Mode::Closed { conc } => run_closed(&p, conc, secs).await,
        Mode::Rate { rps, conns } => run_rate(&p, rps, conns, secs).await,
        Mode::Hold { steps } => run_hold(&p, steps, t.pid, Duration::from_secs(2)).await,
    };
    s.wall = start.elapsed().as_secs_f64();
    s.cpu_target = t.pid.map_or(0.0, cpu_seconds) - c_t;
    s.cpu_mock = mock_pid.map_or(0.0, cpu_seconds) - c_m;
    s.cpu_driver = cpu_seconds(me) - c_d;
    s.hwm_kib = t.pid.map_or(0, |p| status_kib(p, "VmHWM:"));
    if let Some(m) = &t.metrics {
        let after = scrape_overhead(m).await;
        if after.len() == before_metrics.len() {
            s.overhead = after
                .iter()
                .zip(&before_metrics)
                .map(|(a, b)| (a.0, a.1 - b.1))
                .collect();
        } else {
            s.overhead = after;
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Report

fn pct(v: &mut [u64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

/// Summary figures of one (workload, target).
#[derive(Debug, Clone, Default)]
struct Summary {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    ttfb50: f64,
    ttfb99: f64,
    events_per_s: f64,
    /// CPU seconds per 10k requests: target, mock, driver.
    cpu10k: (f64, f64, f64),
    /// Target CPU microseconds per relayed event.
    cpu_per_event_us: f64,
    hwm_mib: f64,
    rss_steps: Vec<(usize, u64)>,
    errors: u64,
    late: u64,
    n: usize,
    overhead: Vec<(f64, f64)>,
    first_error: Option<String>,
}

fn summarize(mut s: Samples) -> Summary {
    let n = s.latency_ns.len();
    let per10k = |c: f64| if n > 0 { c / n as f64 * 10_000.0 } else { 0.0 };
    Summary {
        rps: n as f64 / s.wall.max(1e-9),
        p50: pct(&mut s.latency_ns, 0.5),
        p99: pct(&mut s.latency_ns, 0.99),
        p999: pct(&mut s.latency_ns, 0.999),
        ttfb50: pct(&mut s.ttfb_ns, 0.5),
        ttfb99: pct(&mut s.ttfb_ns, 0.99),
        events_per_s: s.events as f64 / s.wall.max(1e-9),
        cpu10k: (
            per10k(s.cpu_target),
            per10k(s.cpu_mock),
            per10k(s.cpu_driver),
        ),
        cpu_per_event_us: if s.events > 0 {
            s.cpu_target / s.events as f64 * 1e6
        } else {
            f64::NAN
        },
        hwm_mib: s.hwm_kib as f64 / 1024.0,
        rss_steps: s.rss_steps,
        errors: s.errors,
        late: s.late,
        n,
        overhead: s.overhead,
        first_error: s.first_error,
    }
}

/// The bucket `(lo, hi]` holding quantile `q` of a cumulative histogram.
fn bucket_of(h: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = h.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let mut lo = 0.0;
    for &(le, c) in h {
        if c >= q * total {
            return Some((lo, le));
        }
        lo = le;
    }
    None
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".to_owned()
    } else if v >= 10_000.0 {
        format!("{:.0}", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}", v / 1000.0)
    } else {
        format!("{:.3}", v / 1000.0)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: load_driver --target SPEC [--target SPEC …] [--mock-pid PID] [--secs S] [--reps N] [--workloads a,b,…]\n\nworkloads:"
    );
    for w in WORKLOADS {
        eprintln!("  {:<13} {}", w.name, w.what);
    }
    std::process::exit(2);
}

fn main() {
    let mut targets = Vec::new();
    let mut mock_pid = None;
    let mut secs = 5.0;
    let mut reps = 3;
    let mut names: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--target" => match parse_target(&val()) {
                Ok(t) => targets.push(t),
                Err(e) => {
                    eprintln!("load_driver: {e}");
                    std::process::exit(2);
                }
            },
            "--mock-pid" => mock_pid = val().parse().ok(),
            "--secs" => secs = val().parse().unwrap_or_else(|_| usage()),
            "--reps" => reps = val().parse().unwrap_or_else(|_| usage()),
            "--workloads" => names = Some(val().split(',').map(str::to_owned).collect()),
            _ => usage(),
        }
    }
    if targets.is_empty() {
        usage();
    }
    let workloads: Vec<&Workload> = match &names {
        None => WORKLOADS.iter().collect(),
        Some(n) => n
            .iter()
            .map(|n| {
                WORKLOADS
                    .iter()
                    .find(|w| w.name == n)
                    .unwrap_or_else(|| usage())
            })
            .collect(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut results: Vec<(&Workload, Vec<Summary>)> = Vec::new();
        for w in &workloads {
            // Warm up every target (connections, caches) with a short run.
            if !matches!(w.mode, Mode::Hold { .. }) {
                for t in targets.iter().filter(|t| runs(w, t)) {
                    let p = Prepared::new(t, w);
                    let _ = run_closed(&p, 4, 0.3).await;
                }
            }
            let reps = if matches!(w.mode, Mode::Hold { .. }) {
                1
            } else {
                reps
            };
            let mut acc: Vec<Samples> = vec![Samples::default(); targets.len()];
            for rep in 0..reps {
                // Alternate the order so neither side always runs first.
                let order: Vec<usize> = if rep % 2 == 0 {
                    (0..targets.len()).collect()
                } else {
                    (0..targets.len()).rev().collect()
                };
                for i in order {
                    if !runs(w, &targets[i]) {
                        continue;
                    }
                    let s = run_one(w, &targets[i], mock_pid, secs).await;
                    eprintln!(
                        "{:<13} {:<10} rep {} : {} ok, {} errors, {:.0}/s",
                        w.name,
                        targets[i].name,
                        rep + 1,
                        s.latency_ns.len(),
                        s.errors,
                        s.latency_ns.len() as f64 / s.wall
                    );
                    acc[i].merge(s);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            results.push((w, acc.into_iter().map(summarize).collect()));
        }
        print!("{}", report(&targets, &results, secs, reps));
    });
}

/// Whether target `t` takes part in workload `w` (a target that runs the MCP loop itself
/// runs only the loop workloads).
fn runs(w: &Workload, t: &Target) -> bool {
    !t.mcp || w.tool_loop
}

fn report(
    targets: &[Target],
    results: &[(&Workload, Vec<Summary>)],
    secs: f64,
    reps: usize,
) -> String {
    let mut o = String::new();
    let base = 0usize;
    let _ = writeln!(
        o,
        "\n## Results ({reps} alternating runs of {secs} s per workload and target)\n"
    );
    let _ = writeln!(
        o,
        "Latencies in ms. CPU in CPU-seconds per 10k requests (target process / mock / driver). \"added\" = target − {} (same run).\n",
        targets[base].name
    );
    let _ = writeln!(
        o,
        "| workload | target | req/s | p50 | p99 | p99.9 | TTFB p50 | TTFB p99 | added p50 | added p99 | added p99.9 | events/s | CPU s/10k req | µs CPU/event | peak RSS MiB | errors |"
    );
    let _ = writeln!(
        o,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (w, sums) in results {
        if matches!(w.mode, Mode::Hold { .. }) {
            continue;
        }
        let b = &sums[base];
        for (i, s) in sums.iter().enumerate() {
            if s.n == 0 && !runs(w, &targets[i]) {
                continue;
            }
            let add = |x: f64, y: f64| {
                if i == base {
                    "–".to_owned()
                } else {
                    ms(x - y)
                }
            };
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} / {:.2} / {:.2} | {} | {} | {}{} |",
                w.name,
                targets[i].name,
                s.rps,
                ms(s.p50),
                ms(s.p99),
                ms(s.p999),
                if w.stream {
                    ms(s.ttfb50)
                } else {
                    "–".to_owned()
                },
                if w.stream {
                    ms(s.ttfb99)
                } else {
                    "–".to_owned()
                },
                add(s.p50, b.p50),
                add(s.p99, b.p99),
                add(s.p999, b.p999),
                s.events_per_s,
                s.cpu10k.0,
                s.cpu10k.1,
                s.cpu10k.2,
                if w.stream {
                    format!("{:.3}", s.cpu_per_event_us)
                } else {
                    "–".to_owned()
                },
                if i == base {
                    "–".to_owned()
                } else {
                    format!("{:.1}", s.hwm_mib)
                },
                s.errors,
                if s.late > 0 {
                    format!(" ({} late)", s.late)
                } else {
                    String::new()
                }
            );
        }
    }
    // Memory per in-flight stream.
    for (w, sums) in results {
        if !matches!(w.mode, Mode::Hold { .. }) {
            continue;
        }
        let _ = writeln!(o, "\n### Memory per in-flight stream ({})\n", w.what);
        let _ = writeln!(
            o,
            "| target | streams → VmRSS MiB | KiB per stream (slope) | peak RSS MiB | errors |"
        );
        let _ = writeln!(o, "| --- | --- | ---: | ---: | ---: |");
        for (i, s) in sums.iter().enumerate() {
            if i == base || !runs(w, &targets[i]) {
                continue;
            }
            let steps: Vec<String> = s
                .rss_steps
                .iter()
                .map(|(n, kib)| format!("{n} → {:.1}", *kib as f64 / 1024.0))
                .collect();
            let slope = match (s.rss_steps.first(), s.rss_steps.last()) {
                (Some(a), Some(b)) if b.0 > a.0 => {
                    format!(
                        "{:.1}",
                        (b.1 as f64 - a.1 as f64) / (b.0 as f64 - a.0 as f64)
                    )
                }
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.1} | {} |",
                targets[i].name,
                steps.join(", "),
                slope,
                s.hwm_mib,
                s.errors
            );
        }
    }
    // Peers as ratios to aibridge.
    if let Some(ours) = targets.iter().position(|t| t.name == "aibridge")
        && targets.len() > 2
    {
        let _ = writeln!(
            o,
            "\n### Peers as ratios to aibridge (same run; > 1 means aibridge is better)\n"
        );
        let _ = writeln!(
            o,
            "| workload | peer | CPU per request (peer ÷ aibridge) | added p50 (peer ÷ aibridge) | added p99 (peer ÷ aibridge) | throughput (aibridge ÷ peer) | peak RSS (peer ÷ aibridge) |"
        );
        let _ = writeln!(o, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        for (w, sums) in results {
            if matches!(w.mode, Mode::Hold { .. }) {
                continue;
            }
            let (a, b) = (&sums[ours], &sums[base]);
            for (i, s) in sums.iter().enumerate() {
                if i == base || i == ours || targets[i].mcp {
                    continue;
                }
                let r = |x: f64, y: f64| {
                    if y > 0.0 && x.is_finite() {
                        format!("{:.1}", x / y)
                    } else {
                        "–".to_owned()
                    }
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    w.name,
                    targets[i].name,
                    r(s.cpu10k.0, a.cpu10k.0),
                    r(s.p50 - b.p50, a.p50 - b.p50),
                    r(s.p99 - b.p99, a.p99 - b.p99),
                    r(a.rps, s.rps),
                    r(s.hwm_mib, a.hwm_mib)
                );
            }
        }
    }
    // Derived figures for the targets.
    let _ = writeln!(o, "\n### Derived\n");
    let find = |name: &str| results.iter().find(|(w, _)| w.name == name);
    for (i, t) in targets.iter().enumerate() {
        if i == base {
            continue;
        }
        if !t.mcp
            && let Some((_, s)) = find("stream5000")
        {
            let _ = writeln!(
                o,
                "- {}: relayed events per CPU-second (stream5000): {:.0}",
                t.name,
                1e6 / s[i].cpu_per_event_us
            );
        }
        if !t.mcp
            && let (Some((ws, small)), Some((wb, big))) = (find("small"), find("cc100k"))
        {
            let (pa, pb) = (
                Prepared::new(t, ws).body.len(),
                Prepared::new(t, wb).body.len(),
            );
            let per_req = |s: &Summary| s.cpu10k.0 / 10_000.0;
            let _ = writeln!(
                o,
                "- {}: CPU growth with request size (small {} B → cc100k {} B): {:.2} ns per byte",
                t.name,
                pa,
                pb,
                (per_req(&big[i]) - per_req(&small[i])) / (pb - pa) as f64 * 1e9
            );
        }
        if !t.mcp
            && let Some((w, s)) = find("paced")
        {
            let events = 50.0;
            let added_total = s[i].p50 - s[base].p50;
            let added_ttfb = s[i].ttfb50 - s[base].ttfb50;
            let _ = writeln!(
                o,
                "- {}: paced stream ({}): added TTFB p50 {} ms, added total p50 {} ms, added per event {:.1} µs",
                t.name,
                w.shape,
                ms(added_ttfb),
                ms(added_total),
                (added_total - added_ttfb) / events
            );
        }
        for (w, s) in results {
            if s[i].overhead.is_empty() {
                continue;
            }
            let (b50, b99) = (
                bucket_of(&s[i].overhead, 0.5),
                bucket_of(&s[i].overhead, 0.99),
            );
            let fmt = |b: Option<(f64, f64)>| {
                b.map_or("–".to_owned(), |(lo, hi)| {
                    format!("({} ms, {} ms]", lo * 1e3, hi * 1e3)
                })
            };
            let _ = writeln!(
                o,
                "- {}: {}: `interception_overhead_seconds` p50 in {}, p99 in {} (harness added p50 {} ms, p99 {} ms; {} observations)",
                t.name,
                w.name,
                fmt(b50),
                fmt(b99),
                ms(s[i].p50 - s[base].p50),
                ms(s[i].p99 - s[base].p99),
                s[i].overhead.last().map_or(0.0, |x| x.1)
            );
        }
    }
    for (w, sums) in results {
        for (i, s) in sums.iter().enumerate() {
            if let Some(e) = &s.first_error {
                let e: String = e.chars().take(300).collect();
                let _ = writeln!(o, "- first error, {} / {}: {e}", w.name, targets[i].name);
            }
        }
    }
    let _ = writeln!(
        o,
        "\n(n = requests measured per target: {})",
        results
            .iter()
            .map(|(w, s)| format!(
                "{} {}",
                w.name,
                s.iter()
                    .map(|x| x.n.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    o
}

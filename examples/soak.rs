//! Soak: many concurrent, mixed streams (Messages, Chat Completions, Responses) through a
//! bridge in front of a loopback upstream, with random client disconnects, upstream resets
//! (before the head and mid-stream), upstream 500s and a recorder that stalls past its call
//! timeout now and then. Bounded by `--duration`; exits non-zero if a check fails.
//!
//! ```text
//! cargo run --example soak -- --duration 600 --concurrency 1000   # the long run
//! cargo run --example soak -- --duration 60 --concurrency 200     # CI (scripts/test.sh)
//! ```
//!
//! Checks, against the upstream's own log of what it sent and the clients' log of what
//! they received:
//! - every upstream message has at most one token row, with its id; exactly one (with the
//!   exact token counts) when the stream completed, and exactly one whenever a client saw
//!   the event that carries the usage;
//! - every interception ended, with the outcome the client saw; no 200 was empty; no
//!   record was dropped or finally failed (stalls are retried);
//! - resident memory is flat after warm-up (the curve is printed), and once the bridge and
//!   the upstream are gone, task and file-descriptor counts are back to their baseline.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aibridge::provider::{Anthropic, OpenAi, RetryConfig, Secret};
use aibridge::recorder::{
    Interception, InterceptionEnded, ModelThought, Outcome, PromptUsage, QueueFullPolicy, RecordId,
    RecordQueueConfig, TokenUsage, ToolUsage,
};
use aibridge::{Actor, BoxError, RequestBridge};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use tower::ServiceExt;

// --- arguments ---

struct Args {
    duration: Duration,
    concurrency: usize,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        duration: Duration::from_secs(60),
        concurrency: 200,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--duration" => a.duration = Duration::from_secs(value().parse().expect("seconds")),
            "--concurrency" => a.concurrency = value().parse().expect("a number"),
            "--seed" => a.seed = value().parse().expect("a number"),
            other => panic!("unknown argument {other} (--duration S, --concurrency N, --seed N)"),
        }
    }
    a
}

/// A small, fast, deterministic PRNG (splitmix64) per case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// --- the three APIs ---

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    Messages,
    Chat,
    Responses,
}

impl Api {
    fn of(case: u64) -> Api {
        [Api::Messages, Api::Chat, Api::Responses][(case % 3) as usize]
    }
    fn path(self) -> &'static str {
        match self {
            Api::Messages => "/anthropic/v1/messages",
            Api::Chat => "/openai/v1/chat/completions",
            Api::Responses => "/openai/v1/responses",
        }
    }
    fn request(self) -> &'static str {
        match self {
            Api::Messages => {
                r#"{"model":"claude-soak","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"soak"}]}"#
            }
            Api::Chat => {
                r#"{"model":"gpt-soak","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"soak"}]}"#
            }
            Api::Responses => r#"{"model":"gpt-soak","stream":true,"input":"soak"}"#,
        }
    }
    /// A marker of the event that carries the usage, and of the normal end.
    fn usage_marker(self) -> &'static [u8] {
        match self {
            Api::Messages => b"event: message_start",
            Api::Chat => b"\"usage\":{\"prompt_tokens\"",
            Api::Responses => b"event: response.completed",
        }
    }
    fn end_marker(self) -> &'static [u8] {
        match self {
            Api::Messages => b"event: message_stop",
            Api::Chat => b"data: [DONE]",
            Api::Responses => b"event: response.completed",
        }
    }
    fn response_id(self, case: u64) -> String {
        match self {
            Api::Messages => format!("msg_soak_{case}"),
            Api::Chat => format!("chatcmpl-soak-{case}"),
            Api::Responses => format!("resp_soak_{case}"),
        }
    }
    /// The events of a complete upstream stream with `deltas` text deltas.
    fn events(self, case: u64, deltas: usize, input: u64, output: u64) -> Vec<Bytes> {
        let id = self.response_id(case);
        let mut ev: Vec<String> = Vec::new();
        match self {
            Api::Messages => {
                ev.push(format!("event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-soak\",\"content\":[],\"usage\":{{\"input_tokens\":{input},\"output_tokens\":1}}}}}}\n\n"));
                ev.push("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into());
                for _ in 0..deltas {
                    ev.push("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"soak \"}}\n\n".into());
                }
                ev.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into());
                ev.push(format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{output}}}}}\n\n"));
                ev.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
            }
            Api::Chat => {
                let chunk = |choices: &str| {
                    format!(
                        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-soak\",\"choices\":{choices}}}\n\n"
                    )
                };
                ev.push(chunk(r#"[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]"#));
                for _ in 0..deltas {
                    ev.push(chunk(
                        r#"[{"index":0,"delta":{"content":"soak "},"finish_reason":null}]"#,
                    ));
                }
                ev.push(chunk(r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#));
                ev.push(format!("data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-soak\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{input},\"completion_tokens\":{output},\"total_tokens\":{}}}}}\n\n", input + output));
                ev.push("data: [DONE]\n\n".into());
            }
            Api::Responses => {
                let mut seq = 0;
                let mut e = |kind: &str, body: String| {
                    ev.push(format!("event: {kind}\ndata: {{\"type\":\"{kind}\",{body},\"sequence_number\":{seq}}}\n\n"));
                    seq += 1;
                };
                e(
                    "response.created",
                    format!(
                        "\"response\":{{\"id\":\"{id}\",\"status\":\"in_progress\",\"output\":[]}}"
                    ),
                );
                e("response.output_item.added", "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}".into());
                for _ in 0..deltas {
                    e("response.output_text.delta", "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"soak \"".into());
                }
                e("response.output_item.done", "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"soak\"}]}".into());
                e(
                    "response.completed",
                    format!(
                        "\"response\":{{\"id\":\"{id}\",\"status\":\"completed\",\"usage\":{{\"input_tokens\":{input},\"output_tokens\":{output},\"total_tokens\":{}}}}}",
                        input + output
                    ),
                );
            }
        }
        ev.into_iter().map(Bytes::from).collect()
    }
}

/// What the upstream does with a case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Upstream {
    Normal,
    /// Closes the connection before any response head.
    ResetBeforeHead,
    /// Resets the connection after this many events.
    ResetAfter(usize),
    /// Answers a 500 JSON error.
    Error,
}

/// Everything a case decides up front (the upstream and the client derive it alike).
struct Plan {
    api: Api,
    deltas: usize,
    input: u64,
    output: u64,
    upstream: Upstream,
    /// The client drops the body after this many frames.
    client_drop_after: Option<usize>,
    /// Pause between events, in milliseconds.
    pace_ms: u64,
}

fn plan(seed: u64, case: u64) -> Plan {
    let mut r = Rng(seed ^ case.wrapping_mul(0xA24B_AED4_963E_E407));
    let api = Api::of(case);
    let deltas = 3 + r.below(20) as usize;
    let total = api.events(case, deltas, 1, 1).len();
    let upstream = match r.below(100) {
        0..=3 => Upstream::ResetBeforeHead,
        4..=11 => Upstream::ResetAfter(1 + r.below(total as u64 - 1) as usize),
        12..=14 => Upstream::Error,
        _ => Upstream::Normal,
    };
    let client_drop_after = (r.below(100) < 10).then(|| 1 + r.below(total as u64) as usize);
    Plan {
        api,
        deltas,
        input: 10 + r.below(5000),
        output: 1 + r.below(900),
        upstream,
        client_drop_after,
        pace_ms: r.below(12),
    }
}

// --- shared logs ---

const SAW_USAGE: u8 = 1;
const COMPLETED: u8 = 2;
const TERMINAL_ERROR: u8 = 4;
const EMPTY_200: u8 = 8;
const DROPPED: u8 = 16;
const GOT_HEAD_ID: u8 = 32;
const UPSTREAM_FINISHED: u8 = 64;
const UPSTREAM_CALLED: u8 = 128;

/// Per case: client and upstream flags, the status, the token rows (count, whether id and
/// input matched, the output tokens), the outcome.
#[derive(Clone, Copy, Default)]
struct CaseLog {
    flags: u8,
    status: u16,
    rows: u8,
    row_ok: bool,
    output: u32,
    outcome: u8,
}

#[derive(Default)]
struct Logs {
    cases: Mutex<Vec<CaseLog>>,
}

impl Logs {
    fn with<R>(&self, case: u64, f: impl FnOnce(&mut CaseLog) -> R) -> R {
        let mut v = self.cases.lock().unwrap();
        let i = case as usize;
        if v.len() <= i {
            v.resize(i + 1, CaseLog::default());
        }
        f(&mut v[i])
    }
}

// --- the upstream ---

async fn upstream(seed: u64, logs: Arc<Logs>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                Ok((stream, _)) = listener.accept() => {
                    let logs = logs.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| serve(seed, logs.clone(), req));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    (addr, task)
}

type UpBody = StreamBody<tokio_stream_shim::Receiver>;

async fn serve(
    seed: u64,
    logs: Arc<Logs>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<UpBody>, BoxError> {
    let case: u64 = req
        .headers()
        .get("x-soak-case")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no case")?;
    let _ = req.into_body().collect().await;
    logs.with(case, |c| c.flags |= UPSTREAM_CALLED);
    let p = plan(seed, case);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = StreamBody::new(tokio_stream_shim::Receiver(rx));
    let mut resp = http::Response::new(body);
    match p.upstream {
        Upstream::ResetBeforeHead => return Err("soak: reset before the head".into()),
        Upstream::Error => {
            *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            resp.headers_mut()
                .insert("x-should-retry", "false".parse().unwrap());
            let _ = tx
                .send(Ok(http_body::Frame::data(Bytes::from_static(
                    br#"{"error":{"message":"soak","type":"server_error"}}"#,
                ))))
                .await;
            logs.with(case, |c| c.flags |= UPSTREAM_FINISHED);
            return Ok(resp);
        }
        Upstream::Normal | Upstream::ResetAfter(_) => {}
    }
    resp.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    tokio::spawn(async move {
        let events = p.api.events(case, p.deltas, p.input, p.output);
        for (i, ev) in events.into_iter().enumerate() {
            if p.upstream == Upstream::ResetAfter(i) {
                let _ = tx.send(Err(BoxError::from("soak: reset"))).await;
                return;
            }
            if tx.send(Ok(http_body::Frame::data(ev))).await.is_err() {
                return; // the bridge dropped the call (its client went away)
            }
            if p.pace_ms > 0 {
                tokio::time::sleep(Duration::from_millis(p.pace_ms)).await;
            }
        }
        logs.with(case, |c| c.flags |= UPSTREAM_FINISHED);
    });
    Ok(resp)
}

/// A `Stream` over a tokio receiver (without the tokio-stream crate).
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use aibridge::BoxError;
    use bytes::Bytes;

    pub(crate) struct Receiver(
        pub(crate) tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, BoxError>>,
    );

    impl futures::Stream for Receiver {
        type Item = Result<http_body::Frame<Bytes>, BoxError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

// --- the recorder ---

/// Counts token rows per case, checks them against the plan, and stalls now and then.
struct SoakRecorder {
    seed: u64,
    logs: Arc<Logs>,
    /// Interception → case, while the interception runs.
    cases: Mutex<HashMap<RecordId, u64>>,
    /// Token-usage record ids seen (a retried call re-sends the same id: not a new row).
    calls: AtomicU64,
    stall: Duration,
}

impl SoakRecorder {
    /// One call in 400 stalls past the queue's call timeout (then it is retried).
    async fn maybe_stall(&self) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if Rng(n ^ self.seed).below(400) == 0 {
            tokio::time::sleep(self.stall).await;
        }
    }
    fn case(&self, id: &RecordId) -> Option<u64> {
        self.cases.lock().unwrap().get(id).copied()
    }
}

#[aibridge::async_trait]
impl aibridge::Recorder for SoakRecorder {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        let case: u64 = rec
            .metadata
            .get("case")
            .and_then(|c| c.parse().ok())
            .ok_or("no case")?;
        self.cases.lock().unwrap().insert(rec.id, case);
        Ok(())
    }
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        self.maybe_stall().await;
        let case = self.cases.lock().unwrap().remove(&rec.id);
        if let Some(case) = case {
            self.logs.with(case, |c| {
                c.outcome = match rec.outcome {
                    Outcome::Completed => 1,
                    Outcome::Failed => 2,
                    Outcome::Cancelled => 3,
                    // An outcome added later: no check below accepts it.
                    _ => 4,
                }
            });
        }
        Ok(())
    }
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        self.maybe_stall().await;
        let case = self
            .case(&rec.interception_id)
            .ok_or("unknown interception")?;
        let p = plan(self.seed, case);
        let id_ok = rec.provider_response_id.as_deref() == Some(&p.api.response_id(case));
        let input_ok = rec.input_tokens == p.input;
        self.logs.with(case, |c| {
            c.rows = c.rows.saturating_add(1);
            c.row_ok = id_ok && input_ok;
            c.output = u32::try_from(rec.output_tokens).unwrap_or(u32::MAX);
        });
        Ok(())
    }
    async fn record_prompt_usage(&self, _: &PromptUsage) -> Result<(), BoxError> {
        self.maybe_stall().await;
        Ok(())
    }
    async fn record_tool_usage(&self, _: &ToolUsage) -> Result<(), BoxError> {
        Ok(())
    }
    async fn record_model_thought(&self, _: &ModelThought) -> Result<(), BoxError> {
        Ok(())
    }
}

// --- the client ---

async fn client(bridge: RequestBridge, seed: u64, case: u64, logs: Arc<Logs>) {
    let p = plan(seed, case);
    let mut req = http::Request::post(p.api.path())
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-soak-case", case.to_string())
        .body(Full::new(Bytes::from_static(p.api.request().as_bytes())))
        .unwrap();
    req.extensions_mut()
        .insert(Actor::new("soak").with_metadata("case", case.to_string()));
    let resp = bridge.oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let has_id = resp.headers().contains_key("x-aibridge-interception-id");
    let mut body = resp.into_body();
    let mut flags = if has_id { GOT_HEAD_ID } else { 0 };
    let mut frames = 0;
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        frames += 1;
        bytes += data.len();
        let has = |m: &[u8]| data.windows(m.len()).any(|w| w == m);
        if has(p.api.usage_marker()) {
            flags |= SAW_USAGE;
        }
        if has(p.api.end_marker()) {
            flags |= COMPLETED;
        }
        if has(b"upstream_stream_error") || has(b"\"api_error\"") {
            flags |= TERMINAL_ERROR;
        }
        if p.client_drop_after == Some(frames) {
            flags |= DROPPED;
            break;
        }
    }
    drop(body);
    if status == 200 && bytes == 0 {
        flags |= EMPTY_200;
    }
    logs.with(case, |c| {
        c.flags |= flags;
        c.status = status;
    });
}

// --- process statistics ---

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

// --- main ---

#[tokio::main]
async fn main() {
    let a = args();
    let baseline = (tasks(), fds());
    let logs = Arc::new(Logs::default());
    let (addr, server) = upstream(a.seed, logs.clone()).await;
    let base = format!("http://{addr}");
    let call_timeout = Duration::from_millis(500);
    let no_retry = RetryConfig::default().with_max_retries(0);
    let recorder = Arc::new(SoakRecorder {
        seed: a.seed,
        logs: logs.clone(),
        cases: Mutex::new(HashMap::new()),
        calls: AtomicU64::new(0),
        stall: call_timeout + Duration::from_millis(100),
    });
    let registry = prometheus::Registry::new();
    let bridge = RequestBridge::builder()
        .provider(
            Anthropic::new(Secret::new("sk-ant-soak"))
                .with_base_url(base.parse().unwrap())
                .with_retry(no_retry.clone())
                .without_circuit_breaker(),
        )
        .provider(
            OpenAi::new(Secret::new("sk-soak"))
                .with_base_url(format!("{base}/v1").parse().unwrap())
                .with_retry(no_retry)
                .without_circuit_breaker(),
        )
        .recorder(recorder.clone())
        .record_queue(
            RecordQueueConfig::default()
                .with_call_timeout(call_timeout)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_attempts(6)
                .with_full_policy(QueueFullPolicy::WaitThenDrop(Duration::from_secs(5))),
        )
        .metrics(aibridge::metrics::Metrics::new(&registry).unwrap())
        .build()
        .unwrap();

    println!(
        "soak: {}s, {} concurrent streams, seed {}",
        a.duration.as_secs(),
        a.concurrency,
        a.seed
    );
    let start = Instant::now();
    let next_case = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (bridge, logs, next, finished) = (
            bridge.clone(),
            logs.clone(),
            next_case.clone(),
            finished.clone(),
        );
        let (duration, seed) = (a.duration, a.seed);
        workers.spawn(async move {
            while start.elapsed() < duration {
                let case = next.fetch_add(1, Ordering::Relaxed);
                client(bridge.clone(), seed, case, logs.clone()).await;
                finished.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // The RSS curve: one sample per tenth of the run.
    let every = (a.duration / 10).max(Duration::from_secs(1));
    let mut curve = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let s = (start.elapsed().as_secs(), rss_mib(), tasks(), fds(), finished.load(Ordering::Relaxed), bridge.inflight_requests());
                println!("t={:>4}s rss={:>7.1} MiB tasks={:>5} fds={:>5} done={:>7} inflight={:>5}", s.0, s.1, s.2, s.3, s.4, s.5);
                curve.push(s);
            }
            r = workers.join_next() => if r.is_none() { break },
        }
    }
    let cases = next_case.load(Ordering::Relaxed);
    println!(
        "all clients done: {cases} requests in {:.1}s",
        start.elapsed().as_secs_f64()
    );

    // Every interception must end (its records are written before its end).
    let expect_ended = {
        let v = logs.cases.lock().unwrap();
        v.iter().filter(|c| c.flags & GOT_HEAD_ID != 0).count()
    };
    let wait = Instant::now();
    loop {
        let ended = logs
            .cases
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.outcome != 0)
            .count();
        if ended >= expect_ended || wait.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = bridge.shutdown(Duration::from_secs(30)).await;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let failed_records: f64 = text
        .lines()
        .filter(|l| l.starts_with("records_total{") && l.contains("outcome=\"failed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    drop(bridge);
    drop(recorder);
    server.abort();
    let _ = server.await;
    // Let connection tasks notice the closed sockets, then compare with the baseline.
    let settle = Instant::now();
    while (tasks() > baseline.0 || fds() > baseline.1 + 2)
        && settle.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = (tasks(), fds());

    // --- checks ---
    let mut problems: Vec<String> = Vec::new();
    let mut stats: HashMap<&str, usize> = HashMap::new();
    let v = logs.cases.lock().unwrap().clone();
    for (case, c) in v.iter().enumerate() {
        let p = plan(a.seed, case as u64);
        let mut bad = |why: &str| {
            if problems.len() < 30 {
                problems.push(format!(
                    "case {case} ({:?}, {:?}, drop {:?}): {why}; status {} flags {:#010b} rows {} outcome {}",
                    p.api, p.upstream, p.client_drop_after, c.status, c.flags, c.rows, c.outcome
                ));
            }
        };
        *stats.entry("requests").or_default() += 1;
        let dropped = c.flags & DROPPED != 0;
        let completed = c.flags & COMPLETED != 0;
        if dropped {
            *stats.entry("client disconnects").or_default() += 1;
        }
        let kind = match p.upstream {
            Upstream::ResetBeforeHead => "upstream resets before the head",
            Upstream::ResetAfter(_) => "upstream resets mid-stream",
            Upstream::Error => "upstream 500s",
            Upstream::Normal => "upstream normal streams",
        };
        *stats.entry(kind).or_default() += 1;
        *stats.entry("token rows").or_default() += usize::from(c.rows);
        if c.flags & UPSTREAM_CALLED != 0 {
            *stats.entry("upstream messages").or_default() += 1;
        }
        if c.flags & EMPTY_200 != 0 {
            bad("an empty 200");
        }
        if c.rows > 1 {
            bad("more than one token row");
        }
        if c.rows == 1 && !c.row_ok {
            bad("the token row does not match what the upstream sent");
        }
        let required = c.flags & SAW_USAGE != 0 || (p.upstream == Upstream::Normal && !dropped);
        if required {
            *stats.entry("token rows required").or_default() += 1;
            if c.rows == 1 {
                *stats.entry("token rows required and landed").or_default() += 1;
            }
        }
        if c.flags & SAW_USAGE != 0 && c.rows != 1 {
            bad("the client saw the usage but there is no token row");
        }
        if c.flags & GOT_HEAD_ID != 0 && c.outcome == 0 {
            bad("the interception never ended");
        }
        let upstream_done = c.flags & UPSTREAM_FINISHED != 0;
        match (p.upstream, dropped) {
            (Upstream::Normal, false) => {
                if !(c.status == 200 && completed && c.rows == 1 && c.outcome == 1 && upstream_done)
                {
                    bad("a normal stream did not complete with one token row");
                }
                if u64::from(c.output) != p.output {
                    bad("the token row of a complete stream has the wrong output tokens");
                }
            }
            (Upstream::ResetAfter(_), false) => {
                if !(c.status == 200 && c.flags & TERMINAL_ERROR != 0 && c.outcome == 2) {
                    bad("a reset stream did not end with the terminal event and outcome failed");
                }
            }
            (Upstream::ResetBeforeHead, _) => {
                if !(c.status == 502 && c.outcome == 2 && c.rows == 0) {
                    bad("a reset before the head is not a 502 / failed");
                }
            }
            (Upstream::Error, _) => {
                if !(c.status == 500 && c.outcome == 2 && c.rows == 0) {
                    bad("an upstream 500 was not relayed / failed");
                }
            }
            (_, true) => {
                if !(c.outcome == 3 || c.outcome == 1 || c.outcome == 2) {
                    bad("a client disconnect did not end the interception");
                }
            }
        }
    }
    if report.dropped_records != 0 {
        problems.push(format!(
            "{} records dropped at shutdown",
            report.dropped_records
        ));
    }
    if failed_records != 0.0 {
        problems.push(format!("{failed_records} records finally failed"));
    }
    // RSS: after warm-up (the first 30 % of the run) the curve must stay flat.
    let warm: Vec<f64> = curve
        .iter()
        .filter(|s| s.0 as f64 >= a.duration.as_secs_f64() * 0.3)
        .map(|s| s.1)
        .collect();
    let (lo, hi) = warm
        .iter()
        .fold((f64::MAX, 0.0_f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let growth = if warm.len() >= 2 { hi - lo } else { 0.0 };
    // The per-case log grows by 8 bytes a request; allow it plus allocator noise.
    let allowed = 48.0 + cases as f64 * 8.0 / (1024.0 * 1024.0);
    if growth > allowed {
        problems.push(format!(
            "RSS grew by {growth:.1} MiB after warm-up (allowed {allowed:.1})"
        ));
    }
    if end.0 > baseline.0 {
        problems.push(format!(
            "tasks: {} at the start, {} at the end",
            baseline.0, end.0
        ));
    }
    if end.1 > baseline.1 + 2 {
        problems.push(format!(
            "file descriptors: {} at the start, {} at the end",
            baseline.1, end.1
        ));
    }
    let mut stats: Vec<_> = stats.into_iter().collect();
    stats.sort();
    for (k, v) in stats {
        println!("{k:>32}: {v}");
    }
    println!(
        "{:>32}: {}\n{:>32}: {:.1} MiB (after warm-up: {lo:.1}..{hi:.1})\n{:>32}: {} -> {}\n{:>32}: {} -> {}",
        "dropped records",
        report.dropped_records,
        "RSS growth",
        growth,
        "tasks (start -> end)",
        baseline.0,
        end.0,
        "fds (start -> end)",
        baseline.1,
        end.1
    );
    if problems.is_empty() {
        println!("soak: OK");
    } else {
        for p in &problems {
            println!("FAIL: {p}");
        }
        std::process::exit(1);
    }
}

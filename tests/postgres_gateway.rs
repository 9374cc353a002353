//! PostgreSQL robustness (issue 6), each test on a throwaway cluster (`PgServer`, shared
//! with the crate's recorder tests):
//!
//! - two example gateway PROCESSES writing concurrently into one database lose nothing,
//!   and `/usage` of either shows both;
//! - two in-process bridges with a `PostgresRecorder` each, under concurrent load, lose
//!   nothing;
//! - the recorder survives a database restart mid-run: records queued while the server
//!   is down are retried and land once it is back, and the pool serves new requests.
//!
//! Needs the PostgreSQL server binaries (see `src/recorder/sql/tests/pg_server.rs`) and,
//! for the process test, the example gateway binary: `$AIBRIDGE_GATEWAY_BIN`, or the one
//! `cargo test` builds next to this test (`<target>/<profile>/examples/gateway`).
#![cfg(feature = "postgres")]

mod common;
#[path = "../src/recorder/sql/tests/pg_server.rs"]
mod pg_server;
mod support;

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aibridge::BoxError;
use aibridge::provider::{Anthropic, Secret};
use aibridge::recorder::{
    Interception, InterceptionEnded, ModelThought, PostgresRecorder, PromptUsage,
    RecordQueueConfig, Recorder, TokenUsage, ToolUsage,
};
use aibridge::{Actor, RequestBridge};
use common::{ANTHROPIC_KEY, post, send};
use futures::StreamExt as _;
use pg_server::PgServer;
use sqlx::postgres::{PgPool, PgPoolOptions};
use support::{MockResponse, MockUpstream, fixture, fixture_json};

const BLOCKING_REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":"say hello"}]}"#;
const STREAM_REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hello"}]}"#;

/// (input, output) tokens of one `text_blocking` answer.
fn blocking_tokens() -> (i64, i64) {
    let e = fixture_json("anthropic/text_blocking.expect.json");
    let t = &e["token_usages"][0];
    (t["input"].as_i64().unwrap(), t["output"].as_i64().unwrap())
}

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Polls `sql` (a `COUNT(*)`) until it returns `want`; panics with the last value after
/// `deadline`.
async fn wait_count(pool: &PgPool, sql: &str, want: i64, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let n = scalar(pool, sql).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{sql}: {n} after {deadline:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Two gateway processes
// ---------------------------------------------------------------------------------------

/// Environment variables the gateway reads (example-gateway.md): never inherited.
const GATEWAY_ENV: &[&str] = &[
    "AIBRIDGE_LISTEN",
    "AIBRIDGE_DATABASE_URL",
    "AIBRIDGE_TOKENS",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "COPILOT_BASE_URL",
    "AIBRIDGE_MCP_SERVERS",
    "AIBRIDGE_MCP_ALLOW",
    "AIBRIDGE_MCP_DENY",
    "AIBRIDGE_METRICS_TOKEN",
    "AIBRIDGE_HEADER_READ_TIMEOUT",
    "AIBRIDGE_IDLE_TIMEOUT",
    "AIBRIDGE_MAX_CONNECTIONS",
    "RUST_LOG",
];

fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AIBRIDGE_GATEWAY_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let p = if p.is_absolute() {
            p
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
        };
        assert!(
            p.is_file(),
            "AIBRIDGE_GATEWAY_BIN={} is not a file",
            p.display()
        );
        return p;
    }
    // This test runs from <target>/<profile>/deps/; `cargo test` builds the examples into
    // <target>/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("gateway"))
        .unwrap();
    assert!(
        candidate.is_file(),
        "the example gateway binary is not at {}: run the whole `cargo test` (it builds the \
         examples), or `cargo build --example gateway` and set AIBRIDGE_GATEWAY_BIN",
        candidate.display()
    );
    candidate
}

/// A running example gateway; killed (by its pid) if still running when dropped.
struct GatewayProc {
    child: Child,
    url: String,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProc {
    fn start(database_url: &str, tokens: &str, upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("gateway.stderr");
        let mut cmd = Command::new(gateway_bin());
        for name in GATEWAY_ENV {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .current_dir(dir.path())
            .env("AIBRIDGE_LISTEN", "127.0.0.1:0")
            .env("AIBRIDGE_DATABASE_URL", database_url)
            .env("AIBRIDGE_TOKENS", tokens)
            .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
            .env("ANTHROPIC_BASE_URL", upstream)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut gw = Self {
            child,
            url: String::new(),
            stderr,
            _dir: dir,
        };
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        match line
            .trim_end()
            .strip_prefix("aibridge gateway listening on ")
        {
            Some(url) => gw.url = url.to_owned(),
            None => panic!(
                "gateway did not announce its address (stdout {line:?}):\n{}",
                gw.logs()
            ),
        }
        gw
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then the exit code (must come within 40 s).
    fn terminate(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let end = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < end,
                "gateway did not exit after SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The rows of the `tokens-by-user` table of a `/usage` page: user ⇒ [requests, input,
/// output, cache read, cache write, total].
fn usage_users(html: &str) -> BTreeMap<String, Vec<i64>> {
    let start = html
        .find(r#"<table id="tokens-by-user">"#)
        .unwrap_or_else(|| panic!("no tokens-by-user table in {html}"));
    let table = &html[start..start + html[start..].find("</table>").unwrap()];
    let tbody = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
    let row = regex::Regex::new(r#"<tr><td class="label">([^<]*)</td>(.*?)</tr>"#).unwrap();
    let cell = regex::Regex::new(r#"<td class="num">([0-9,]+)</td>"#).unwrap();
    row.captures_iter(tbody)
        .map(|c| {
            let nums = cell
                .captures_iter(&c[2])
                .map(|n| n[1].replace(',', "").parse().unwrap())
                .collect();
            (c[1].to_owned(), nums)
        })
        .collect()
}

/// Runs an example SQL file through `psql` the way docs/usage-queries.md says
/// (`PREPARE … ; EXECUTE …(now() - interval '7 days')`) and returns the rows as
/// `|`-separated lines.
fn psql_usage_query(server: &PgServer, url: &str, file: &str) -> Vec<String> {
    let sql = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples/usage/sql")
            .join(file),
    )
    .unwrap();
    let script = format!("PREPARE q AS\n{sql}\nEXECUTE q(now() - interval '7 days');\n");
    let mut child = Command::new(server.bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            "|",
            url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateway_processes_writing_concurrently_lose_nothing() {
    const PER_GATEWAY: usize = 100;
    let server = PgServer::start();
    let url = server.create_database("two_gateways").await;
    let upstream = MockUpstream::start().await;
    let body = fixture("anthropic/text_blocking.upstream.json");
    for _ in 0..2 * PER_GATEWAY {
        upstream.push(MockResponse::json(200, body.clone()));
    }
    // Both start at once: their migrations race for the advisory lock.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| GatewayProc::start(&url, "tok-a:actor-a", &upstream.base_url()));
        let b = s.spawn(|| GatewayProc::start(&url, "tok-b:actor-b", &upstream.base_url()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (mut a, mut b) = (a, b);

    let client = reqwest::Client::new();
    let mut jobs = Vec::new();
    for i in 0..2 * PER_GATEWAY {
        let (base, token) = if i % 2 == 0 {
            (a.url.clone(), "tok-a")
        } else {
            (b.url.clone(), "tok-b")
        };
        jobs.push((base, token));
    }
    let ids: Vec<String> = futures::stream::iter(jobs)
        .map(|(base, token)| {
            let client = client.clone();
            async move {
                let resp = client
                    .post(format!("{base}/api/v2/aibridge/anthropic/v1/messages"))
                    .bearer_auth(token)
                    .header("anthropic-version", "2023-06-01")
                    .header("content-type", "application/json")
                    .body(BLOCKING_REQ)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let id = resp.headers()["x-aibridge-interception-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                resp.bytes().await.unwrap();
                id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(upstream.request_count(), 2 * PER_GATEWAY);

    let db = pool(&url).await;
    let n = (2 * PER_GATEWAY) as i64;
    wait_count(
        &db,
        "SELECT COUNT(*) FROM aibridge_interceptions WHERE ended_at IS NOT NULL",
        n,
        Duration::from_secs(30),
    )
    .await;

    // Either gateway's /usage shows both gateways' users.
    let (input, output) = blocking_tokens();
    let per = PER_GATEWAY as i64;
    let row = vec![per, per * input, per * output, 0, 0, per * (input + output)];
    for (gw, token) in [(&a, "tok-a"), (&b, "tok-b")] {
        let resp = client
            .get(format!("{}/usage?days=1", gw.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let users = usage_users(&resp.text().await.unwrap());
        assert_eq!(
            users,
            BTreeMap::from([
                ("actor-a".to_owned(), row.clone()),
                ("actor-b".to_owned(), row.clone()),
            ])
        );
    }
    // The same query through psql, as documented: the token columns, then the cost
    // (NULL, printed empty, when the model has no price) and the tokens it leaves out.
    let rows = psql_usage_query(&server, &url, "tokens_by_user.sql");
    let total = per * (input + output);
    let tokens: Vec<String> = rows
        .iter()
        .map(|r| r.splitn(8, '|').take(7).collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(
        tokens,
        ["actor-a", "actor-b"]
            .map(|u| { format!("{u}|{per}|{}|{}|0|0|{total}", per * input, per * output) })
    );
    for r in &rows {
        let cols: Vec<&str> = r.split('|').collect();
        assert_eq!(cols.len(), 9, "{r}");
        match cols[7] {
            "" => assert_eq!(cols[8], total.to_string(), "unpriced: {r}"),
            cost => {
                assert!(cost.parse::<f64>().is_ok_and(|c| c > 0.0), "{r}");
                assert_eq!(cols[8], "0", "priced: {r}");
            }
        }
    }
    assert_eq!(
        psql_usage_query(&server, &url, "overview.sql"),
        [format!("{n}|2|0|0|0|0")]
    );
    // The per-day query, with the session in UTC as documented: one day (or two, when
    // the run crosses midnight UTC) holding every token.
    let days = psql_usage_query(&server, &url, "daily.sql");
    let day_tokens: i64 = days
        .iter()
        .map(|r| {
            let cols: Vec<&str> = r.split('|').collect();
            assert_eq!(cols[0].len(), 10, "{r}");
            cols[1].parse::<i64>().unwrap()
        })
        .sum();
    assert_eq!(day_tokens, 2 * total);

    assert_eq!(a.terminate(), Some(0), "{}", a.logs());
    assert_eq!(b.terminate(), Some(0), "{}", b.logs());

    // Nothing lost, nothing doubled.
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM aibridge_interceptions").await,
        n
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM aibridge_interceptions WHERE outcome = 'completed'"
        )
        .await,
        n
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM aibridge_token_usages").await,
        n
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM aibridge_user_prompts").await,
        n
    );
    for actor in ["actor-a", "actor-b"] {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM aibridge_interceptions WHERE initiator_id = $1",
        )
        .bind(actor)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(count, per, "{actor}");
    }
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM aibridge_interceptions ORDER BY 1")
            .fetch_all(&db)
            .await
            .unwrap();
    let mut ids = ids;
    ids.sort();
    stored.sort();
    assert_eq!(
        stored, ids,
        "every interception id the clients saw is stored"
    );
}

// ---------------------------------------------------------------------------------------
// In-process bridges
// ---------------------------------------------------------------------------------------

/// A recorder that delegates to a `PostgresRecorder` and counts the calls that did not
/// succeed: errors, and calls cancelled by the queue's `call_timeout` (while the server is
/// down, SQLx keeps retrying a refused connection until the call is cancelled). Shows
/// that writes really failed, and were retried, while the database was down.
struct Counting {
    inner: PostgresRecorder,
    unsuccessful: Arc<AtomicUsize>,
}

/// Counts an attempt as unsuccessful unless [`Attempt::ok`] was called before it drops.
struct Attempt<'a>(&'a AtomicUsize, bool);

impl Attempt<'_> {
    fn check(mut self, r: Result<(), BoxError>) -> Result<(), BoxError> {
        self.1 = r.is_ok();
        r
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Counting {
    fn attempt(&self) -> Attempt<'_> {
        Attempt(&self.unsuccessful, false)
    }
}

#[async_trait::async_trait]
impl Recorder for Counting {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        let a = self.attempt();
        a.check(self.inner.record_interception(rec).await)
    }
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        let a = self.attempt();
        a.check(self.inner.record_interception_ended(rec).await)
    }
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        let a = self.attempt();
        a.check(self.inner.record_token_usage(rec).await)
    }
    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        let a = self.attempt();
        a.check(self.inner.record_prompt_usage(rec).await)
    }
    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        let a = self.attempt();
        a.check(self.inner.record_tool_usage(rec).await)
    }
    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        let a = self.attempt();
        a.check(self.inner.record_model_thought(rec).await)
    }
}

fn pg_bridge(
    upstream: &MockUpstream,
    recorder: impl Recorder,
    queue: RecordQueueConfig,
) -> (RequestBridge, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let bridge = RequestBridge::builder()
        .provider(
            Anthropic::new(Secret::new(ANTHROPIC_KEY))
                .with_base_url(upstream.base_url().parse().unwrap()),
        )
        .recorder(recorder)
        .record_queue(queue)
        .metrics(aibridge::metrics::Metrics::new(&registry).unwrap())
        .build()
        .unwrap();
    (bridge, registry)
}

/// The value of a counter or gauge with the given labels (0 if absent).
fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if matches {
                sum += if counter {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                };
            }
        }
    }
    sum
}

fn post_as(actor: &str, body: &'static str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = post("/anthropic/v1/messages", body);
    req.extensions_mut().insert(Actor::new(actor));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_bridges_writing_concurrently_lose_nothing() {
    const PER_BRIDGE: usize = 150;
    let server = PgServer::start();
    let url = server.create_database("two_bridges").await;
    let upstream = MockUpstream::start().await;
    let body = fixture("anthropic/text_blocking.upstream.json");
    for _ in 0..2 * PER_BRIDGE {
        upstream.push(MockResponse::json(200, body.clone()));
    }
    let (a, ra) = pg_bridge(
        &upstream,
        PostgresRecorder::connect(&url).await.unwrap(),
        RecordQueueConfig::default(),
    );
    let (b, rb) = pg_bridge(
        &upstream,
        PostgresRecorder::connect_with(&url, 3).await.unwrap(),
        RecordQueueConfig::default(),
    );
    let jobs = (0..2 * PER_BRIDGE).map(|i| {
        let (bridge, actor) = if i % 2 == 0 {
            (a.clone(), "bridge-a")
        } else {
            (b.clone(), "bridge-b")
        };
        async move {
            let resp = send(&bridge, post_as(actor, BLOCKING_REQ)).await;
            assert_eq!(resp.status, 200, "{}", resp.text());
        }
    });
    futures::stream::iter(jobs)
        .buffer_unordered(48)
        .collect::<Vec<()>>()
        .await;
    for (bridge, registry) in [(&a, &ra), (&b, &rb)] {
        let report = bridge.shutdown(Duration::from_secs(60)).await;
        assert_eq!(report.dropped_records, 0);
        assert_eq!(report.cancelled_requests, 0);
        for outcome in ["failed", "dropped"] {
            assert_eq!(
                metric(registry, "records_total", &[("outcome", outcome)]),
                0.0,
                "{outcome}"
            );
        }
    }
    let db = pool(&url).await;
    let n = (2 * PER_BRIDGE) as i64;
    for (table, want) in [
        ("aibridge_interceptions", n),
        ("aibridge_token_usages", n),
        ("aibridge_user_prompts", n),
    ] {
        assert_eq!(
            scalar(&db, &format!("SELECT COUNT(*) FROM {table}")).await,
            want,
            "{table}"
        );
    }
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM aibridge_interceptions WHERE outcome = 'completed'"
        )
        .await,
        n
    );
    let (input, output) = blocking_tokens();
    let sums: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT i.initiator_id, CAST(SUM(t.input_tokens) AS BIGINT),
                CAST(SUM(t.output_tokens) AS BIGINT)
         FROM aibridge_token_usages t JOIN aibridge_interceptions i ON i.id = t.interception_id
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let per = PER_BRIDGE as i64;
    assert_eq!(
        sums,
        [
            ("bridge-a".to_owned(), per * input, per * output),
            ("bridge-b".to_owned(), per * input, per * output),
        ]
    );
}

/// The database is stopped (`pg_ctl stop -m fast`) while streams are in flight: their
/// prompt, token and end records are queued, fail and are retried until the server is
/// back; a request that arrives meanwhile is refused (its interception cannot be
/// recorded); after the restart the pool serves new requests and `shutdown` drains the
/// queue with every record written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_queued_while_the_database_is_down_land_after_it_comes_back() {
    const BEFORE: usize = 5;
    const STREAMS: usize = 6;
    let server = PgServer::start();
    let url = server.create_database("restart").await;
    let upstream = MockUpstream::start().await;
    let unsuccessful = Arc::new(AtomicUsize::new(0));
    let recorder = Counting {
        inner: PostgresRecorder::connect(&url).await.unwrap(),
        unsuccessful: unsuccessful.clone(),
    };
    let queue = RecordQueueConfig::default()
        .with_call_timeout(Duration::from_secs(2))
        .with_max_attempts(200)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_millis(500));
    let (bridge, registry) = pg_bridge(&upstream, recorder, queue);
    let db = pool(&url).await;

    // 1. Database up: requests are recorded as usual.
    let body = fixture("anthropic/text_blocking.upstream.json");
    for _ in 0..BEFORE {
        upstream.push(MockResponse::json(200, body.clone()));
        let resp = send(&bridge, post_as("before", BLOCKING_REQ)).await;
        assert_eq!(resp.status, 200);
    }
    wait_count(
        &db,
        "SELECT COUNT(*) FROM aibridge_interceptions WHERE ended_at IS NOT NULL",
        BEFORE as i64,
        Duration::from_secs(30),
    )
    .await;
    db.close().await;

    // 2. Streams start while the database is up (their interceptions are recorded inline
    //    before the upstream is called)...
    let mut controllers = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
        upstream.push(resp);
        controllers.push(ctl);
        let bridge = bridge.clone();
        tasks.push(tokio::spawn(async move {
            send(&bridge, post_as("during", STREAM_REQ)).await
        }));
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        upstream.wait_for_requests(BEFORE + STREAMS),
    )
    .await
    .expect("the streams never reached the upstream");

    // 3. ...then the database goes away and the streams finish: every other record of
    //    theirs is queued while it is down.
    server.stop();
    let stream = fixture("anthropic/text_stream.upstream.sse");
    for ctl in controllers {
        ctl.send(stream.clone()).await.unwrap();
        ctl.finish();
    }
    for task in tasks {
        let resp = task.await.unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.text().contains("message_stop"), "{}", resp.text());
    }
    // A new request cannot record its interception: 503, the upstream is not called.
    let resp = send(&bridge, post_as("refused", BLOCKING_REQ)).await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(upstream.request_count(), BEFORE + STREAMS);
    // Let the queued records fail a few times (each attempt ends at the 2 s call timeout).
    let end = Instant::now() + Duration::from_secs(60);
    while unsuccessful.load(Ordering::Relaxed) < 12 {
        assert!(Instant::now() < end, "records were not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&registry, "record_queue_depth", &[]) > 0.0);
    // Only the refused request's interception record failed (it is never retried).
    let failed = |registry: &prometheus::Registry| {
        metric(registry, "records_total", &[("outcome", "failed")])
    };
    assert_eq!(failed(&registry), 1.0);
    assert_eq!(
        metric(
            &registry,
            "records_total",
            &[("kind", "interception"), ("outcome", "failed")]
        ),
        1.0
    );

    // 4. The database comes back: new requests work again (the pool reconnects)...
    server.start_again();
    upstream.push(MockResponse::json(200, body.clone()));
    let resp = send(&bridge, post_as("after", BLOCKING_REQ)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // ...and the shutdown drain lands every queued record.
    let report = bridge.shutdown(Duration::from_secs(60)).await;
    assert_eq!(report.dropped_records, 0);
    assert_eq!(report.cancelled_requests, 0);
    assert_eq!(failed(&registry), 1.0, "no queued record failed for good");
    assert_eq!(
        metric(&registry, "records_total", &[("outcome", "dropped")]),
        0.0
    );

    let db = pool(&url).await;
    let total = (BEFORE + STREAMS + 1) as i64;
    let per_actor: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT i.initiator_id, COUNT(*),
                COUNT(*) FILTER (WHERE i.outcome = 'completed'),
                (SELECT COUNT(*) FROM aibridge_token_usages t
                 JOIN aibridge_interceptions j ON j.id = t.interception_id
                 WHERE j.initiator_id = i.initiator_id),
                (SELECT COUNT(*) FROM aibridge_user_prompts p
                 JOIN aibridge_interceptions j ON j.id = p.interception_id
                 WHERE j.initiator_id = i.initiator_id)
         FROM aibridge_interceptions i WHERE i.initiator_id <> 'refused' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    // The refused request's insert, given up on at its call timeout, may still commit when
    // the database is back (the bridge does not abandon the call): then its row is ended at
    // once, `failed`, saying nothing was sent (issue 17, defect 3). No row stays open.
    let refused: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT outcome, error FROM aibridge_interceptions WHERE initiator_id = 'refused'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(refused.len() <= 1, "{refused:?}");
    for (outcome, error) in &refused {
        assert_eq!(outcome.as_deref(), Some("failed"), "{refused:?}");
        assert_eq!(
            error.as_deref(),
            Some("recorder timed out recording the interception; request not sent upstream")
        );
    }
    let total = total + refused.len() as i64;
    let row = |actor: &str, n: usize| {
        let n = n as i64;
        (actor.to_owned(), n, n, n, n)
    };
    assert_eq!(
        per_actor,
        [
            row("after", 1),
            row("before", BEFORE),
            row("during", STREAMS),
        ]
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM aibridge_interceptions").await,
        total
    );
}

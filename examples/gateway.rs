//! The example gateway: a real, environment-configured AI gateway built on axum and aibridge.
//!
//! ```text
//! cargo run --release --features sqlite,postgres,mcp --example gateway
//! ```
//!
//! Configuration comes only from environment variables (see `README.md` and the table in
//! `main`'s docs below); it speaks plain HTTP and records into SQLite by default.
//!
//! Besides the bridge it serves `/healthz`, `/metrics` and `/usage`, a server-rendered
//! usage report (see the `usage` module and `docs/usage-queries.md`).
#![allow(
    clippy::print_stdout,
    reason = "the gateway prints its listening line on stdout"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aibridge::provider::{Anthropic, Copilot, CredentialPolicy, OpenAi, Secret};
use aibridge::{Actor, RequestBridge};
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;

mod usage;

/// How long the start waits for the MCP servers' first connection attempt.
const MCP_READY_WAIT: Duration = Duration::from_secs(3);

/// Gateway settings read from the environment.
struct Config {
    listen: SocketAddr,
    database_url: String,
    tokens: Option<HashMap<String, String>>,
    anthropic_key: Option<String>,
    anthropic_base: http::Uri,
    openai_key: Option<String>,
    openai_base: http::Uri,
    copilot_base: http::Uri,
    /// MCP servers (`name`, URL) with the shared allow/deny patterns.
    mcp_servers: Vec<(String, http::Uri)>,
    mcp_allow: Option<String>,
    mcp_deny: Option<String>,
}

#[expect(
    clippy::disallowed_methods,
    reason = "the example host is configured by its environment"
)]
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn uri(name: &str, default: &str) -> Result<http::Uri, String> {
    let v = env(name).unwrap_or_else(|| default.to_owned());
    v.parse()
        .map_err(|e| format!("{name}: invalid URL {v:?}: {e}"))
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let listen = env("AIBRIDGE_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = listen
            .parse()
            .map_err(|e| format!("AIBRIDGE_LISTEN: invalid address {listen:?}: {e}"))?;
        let database_url = env("AIBRIDGE_DATABASE_URL")
            .unwrap_or_else(|| "sqlite://aibridge.db?mode=rwc".to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(
                "AIBRIDGE_DATABASE_URL: must start with sqlite:, postgres:// or postgresql://"
                    .to_owned(),
            );
        }
        let tokens = env("AIBRIDGE_TOKENS")
            .map(|v| parse_tokens(&v))
            .transpose()?;
        let mcp_servers = env("AIBRIDGE_MCP_SERVERS")
            .map(|v| parse_mcp_servers(&v))
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            listen,
            database_url,
            tokens,
            anthropic_key: env("ANTHROPIC_API_KEY"),
            anthropic_base: uri("ANTHROPIC_BASE_URL", "https://api.anthropic.com")?,
            openai_key: env("OPENAI_API_KEY"),
            openai_base: uri("OPENAI_BASE_URL", "https://api.openai.com/v1")?,
            copilot_base: uri(
                "COPILOT_BASE_URL",
                "https://api.individual.githubcopilot.com",
            )?,
            mcp_servers,
            mcp_allow: env("AIBRIDGE_MCP_ALLOW"),
            mcp_deny: env("AIBRIDGE_MCP_DENY"),
        })
    }
}

/// `token:actor-id` pairs, comma separated.
fn parse_tokens(v: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (token, actor) = entry
            .split_once(':')
            .ok_or_else(|| "AIBRIDGE_TOKENS: each entry must be token:actor-id".to_owned())?;
        let (token, actor) = (token.trim(), actor.trim());
        if token.is_empty() || actor.is_empty() {
            return Err("AIBRIDGE_TOKENS: token and actor id must be non-empty".to_owned());
        }
        if out.insert(token.to_owned(), actor.to_owned()).is_some() {
            return Err("AIBRIDGE_TOKENS: duplicate token".to_owned());
        }
    }
    if out.is_empty() {
        return Err("AIBRIDGE_TOKENS: no tokens".to_owned());
    }
    Ok(out)
}

/// `name=url` pairs, comma separated.
fn parse_mcp_servers(v: &str) -> Result<Vec<(String, http::Uri)>, String> {
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| "AIBRIDGE_MCP_SERVERS: each entry must be name=url".to_owned())?;
        let url = url
            .trim()
            .parse()
            .map_err(|e| format!("AIBRIDGE_MCP_SERVERS: invalid URL for {}: {e}", name.trim()))?;
        out.push((name.trim().to_owned(), url));
    }
    Ok(out)
}

/// A URL for logs: scheme, host, port and path, never user info.
fn without_userinfo(url: &http::Uri) -> String {
    let host = url.host().unwrap_or("");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        url.scheme_str().unwrap_or("http"),
        url.path()
    )
}

/// Redacts the password of a database URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[derive(Clone)]
struct AppState {
    tokens: Option<Arc<HashMap<String, String>>>,
    registry: prometheus::Registry,
    /// The usage report's read-only pool, or why there is none.
    report: Result<Arc<usage::ReportDb>, Arc<str>>,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(v: &str) -> Option<&str> {
    let mut parts = v.split_ascii_whitespace();
    let (scheme, token) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && scheme.eq_ignore_ascii_case("bearer")).then_some(token)
}

/// The actor of a presented token (every configured token is compared, in constant time).
fn actor_for(tokens: &HashMap<String, String>, presented: &str) -> Option<String> {
    let mut found = None;
    for (token, actor) in tokens {
        if ct_eq(token.as_bytes(), presented.as_bytes()) {
            found = Some(actor.clone());
        }
    }
    found
}

/// The actor for a presented credential, and the header it came in.
fn authenticate(
    tokens: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<(String, header::HeaderName)> {
    let find = |presented: &str| actor_for(tokens, presented);
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok())
        && let Some(actor) = find(v)
    {
        return Some((actor, header::HeaderName::from_static("x-api-key")));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)?;
    find(auth).map(|actor| (actor, header::AUTHORIZATION))
}

async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(tokens) = &state.tokens else {
        req.extensions_mut().insert(Actor::new("local"));
        return next.run(req).await;
    };
    match authenticate(tokens, req.headers()) {
        Some((actor, used)) => {
            req.headers_mut().remove(used);
            req.extensions_mut().insert(Actor::new(actor));
            next.run(req).await
        }
        None => unauthorized(req.uri().path()),
    }
}

fn unauthorized(path: &str) -> Response {
    let msg = "aibridge: missing or invalid gateway token";
    let (ct, body) = if path.starts_with("/api/v2/aibridge/anthropic/") {
        (
            "application/json",
            format!(
                r#"{{"type":"error","error":{{"type":"authentication_error","message":"{msg}"}}}}"#
            ),
        )
    } else if path.starts_with("/api/v2/aibridge/") {
        (
            "application/json",
            format!(
                r#"{{"error":{{"message":"{msg}","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
            ),
        )
    } else {
        ("text/plain; charset=utf-8", "unauthorized\n".to_owned())
    };
    let mut resp = (StatusCode::UNAUTHORIZED, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&state.registry.gather())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The password of an `Authorization: Basic` header (the user name is ignored).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    decoded.split_once(':').map(|(_, pass)| pass.to_owned())
}

/// Standard base64 with optional padding; `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `GET /usage`: the usage report page.
///
/// Local mode: open, like everything else. Token mode: the caller must present a
/// configured gateway token, as `x-api-key`, `Authorization: Bearer`, or, for browsers,
/// HTTP Basic authentication with the token as the password (any user name); a failed
/// check answers 401 with a `Basic` challenge, so a browser asks for it. A token in the
/// URL is deliberately not accepted (it would end up in history, logs and `Referer`).
/// Every valid token sees the whole report (all users), so hand out gateway tokens only
/// to people who may see the team's usage.
async fn usage_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(tokens) = &state.tokens {
        let ok = authenticate(tokens, &headers).is_some()
            || basic_password(&headers).is_some_and(|p| actor_for(tokens, &p).is_some());
        if !ok {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "unauthorized\n",
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="aibridge usage", charset="UTF-8""#),
            );
            return resp;
        }
    }
    let days = match usage::parse_days(query.as_deref()) {
        Ok(d) => d,
        Err(msg) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                msg,
            )
                .into_response();
        }
    };
    let (status, body) = match &state.report {
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            usage::error_page(days, &format!("The usage report is not available: {why}.")),
        ),
        Ok(db) => match usage::Report::load(db, days, std::time::SystemTime::now()).await {
            Ok(report) => (StatusCode::OK, report.render()),
            Err(e) => {
                tracing::error!(error = %e, "usage report: query failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    usage::error_page(
                        days,
                        "The usage report could not be loaded from the database; the gateway log has the details.",
                    ),
                )
            }
        },
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found",
    )
}

fn policy(key: &Option<String>) -> CredentialPolicy {
    if key.is_some() {
        CredentialPolicy::Centralized
    } else {
        CredentialPolicy::ClientFirst
    }
}

async fn build_bridge(
    cfg: &Config,
    registry: &prometheus::Registry,
) -> Result<RequestBridge, ExitCode> {
    let mut anthropic = match &cfg.anthropic_key {
        Some(k) => Anthropic::new(Secret::new(k.clone())),
        None => Anthropic::without_key(),
    };
    anthropic = anthropic.with_base_url(cfg.anthropic_base.clone());
    let mut openai = match &cfg.openai_key {
        Some(k) => OpenAi::new(Secret::new(k.clone())),
        None => OpenAi::without_key(),
    };
    openai = openai.with_base_url(cfg.openai_base.clone());
    let copilot = Copilot::new().with_base_url(cfg.copilot_base.clone());
    let metrics = aibridge::metrics::Metrics::new(registry).map_err(|e| {
        eprintln!("aibridge gateway: metrics: {e}");
        ExitCode::from(1)
    })?;
    let mut builder = RequestBridge::builder()
        .metrics(metrics)
        .provider(anthropic)
        .provider(openai)
        .provider(copilot);
    if !cfg.mcp_servers.is_empty() {
        let mut mcp = aibridge::mcp::McpConfig::new();
        for (name, url) in &cfg.mcp_servers {
            let mut server = aibridge::mcp::McpServer::new(name.clone(), url.clone());
            if let Some(a) = &cfg.mcp_allow {
                server = server.with_allow(a.clone());
            }
            if let Some(d) = &cfg.mcp_deny {
                server = server.with_deny(d.clone());
            }
            mcp = mcp.server(server);
            tracing::info!(mcp_server = %name, mcp_server_url = %without_userinfo(url), "mcp server");
        }
        builder = builder.mcp(mcp);
    }
    let builder = if cfg.database_url.starts_with("sqlite:") {
        match aibridge::recorder::SqliteRecorder::connect(&cfg.database_url).await {
            Ok(r) => builder.recorder(r),
            Err(e) => {
                eprintln!(
                    "aibridge gateway: database {}: {e}",
                    redact(&cfg.database_url)
                );
                return Err(ExitCode::from(1));
            }
        }
    } else {
        connect_postgres(builder, &cfg.database_url).await?
    };
    builder.build().map_err(|e| {
        eprintln!("aibridge gateway: {e}");
        ExitCode::from(2)
    })
}

#[cfg(feature = "postgres")]
async fn connect_postgres(
    builder: aibridge::bridge::Builder,
    url: &str,
) -> Result<aibridge::bridge::Builder, ExitCode> {
    match aibridge::recorder::PostgresRecorder::connect(url).await {
        Ok(r) => Ok(builder.recorder(r)),
        Err(e) => {
            eprintln!("aibridge gateway: database {}: {e}", redact(url));
            Err(ExitCode::from(1))
        }
    }
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(
    _: aibridge::bridge::Builder,
    url: &str,
) -> Result<aibridge::bridge::Builder, ExitCode> {
    eprintln!(
        "aibridge gateway: database {}: built without the postgres feature",
        redact(url)
    );
    Err(ExitCode::from(1))
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aibridge gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = prometheus::Registry::new();
    let bridge = match build_bridge(&cfg, &registry).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    if !cfg.mcp_servers.is_empty() {
        // Give every MCP server its first connection attempt before announcing the address,
        // so the first request already gets their tools. Bounded: a server that is slow to
        // answer joins later in the background (a server that is down fails at once).
        if tokio::time::timeout(MCP_READY_WAIT, bridge.mcp_ready())
            .await
            .is_err()
        {
            tracing::warn!("MCP servers still connecting; their tools join when they are up");
        }
        tracing::info!(tools = bridge.mcp_tools().len(), "mcp tools");
    }
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("aibridge gateway: cannot bind {}: {e}", cfg.listen);
            return ExitCode::from(1);
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| cfg.listen.to_string(), |a| a.to_string());
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "aibridge gateway listening on http://{addr}");
        let _ = out.flush();
    }
    for (name, base, p) in [
        (
            "anthropic",
            cfg.anthropic_base.to_string(),
            format!("{:?}", policy(&cfg.anthropic_key)),
        ),
        (
            "openai",
            cfg.openai_base.to_string(),
            format!("{:?}", policy(&cfg.openai_key)),
        ),
        (
            "copilot",
            cfg.copilot_base.to_string(),
            "ClientOnly".to_owned(),
        ),
    ] {
        tracing::info!(provider = name, base_url = %base, credential_policy = %p, "provider");
    }
    tracing::info!(
        database = if cfg.database_url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        },
        "recorder"
    );
    if cfg.tokens.is_none() {
        tracing::warn!(
            "AIBRIDGE_TOKENS is not set: every request runs as actor \"local\"; do not expose this gateway beyond localhost"
        );
    }
    let report = match usage::ReportDb::open(&cfg.database_url) {
        Ok(db) => Ok(Arc::new(db)),
        Err(e) => {
            tracing::warn!(error = %e, "usage report disabled");
            Err(Arc::from(e))
        }
    };
    let state = AppState {
        tokens: cfg.tokens.map(Arc::new),
        registry,
        report,
    };
    let bridged = axum::Router::new()
        .nest_service("/api/v2/aibridge", bridge.clone())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/usage", get(usage_page))
        .merge(bridged)
        .with_state(state);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown_bridge = bridge.clone();
    let report = tokio::spawn(async move {
        signal().await;
        tracing::info!("signal received: shutting down");
        let _ = stop_tx.send(());
        let shutdown = shutdown_bridge.shutdown(Duration::from_secs(30));
        tokio::select! {
            r = shutdown => Some(r),
            _ = signal() => None,
        }
    });
    // TCP_NODELAY on every accepted connection: without it, Nagle's algorithm holds back
    // the small writes of a relayed SSE stream (and of small JSON answers) until the
    // client's delayed ACK, up to 40 ms per stall on Linux.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let serve = tokio::spawn(async move { server.await });
    let Ok(Some(report)) = report.await else {
        tracing::warn!("second signal: exiting now");
        return ExitCode::from(130);
    };
    if report.cancelled_requests > 0 || report.dropped_records > 0 {
        tracing::warn!(
            cancelled = report.cancelled_requests,
            dropped_records = report.dropped_records,
            "shutdown report"
        );
    } else {
        tracing::info!(cancelled = 0, dropped_records = 0, "shutdown report");
    }
    // Connections end once their responses do; give them until 35 s after the signal.
    let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
    ExitCode::SUCCESS
}

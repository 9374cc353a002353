//! The example gateway: a real, environment-configured AI gateway built on axum and aibridge.
//!
//! ```text
//! cargo run --release --features sqlite,postgres,mcp,otel --example gateway
//! ```
//!
//! Configuration comes only from environment variables (the table in `README.md`); it
//! speaks plain HTTP/1.1 and h2c and records into SQLite by default.
//!
//! Besides the bridge it serves `/healthz`, `/metrics` (behind a bearer token when
//! `AIBRIDGE_METRICS_TOKEN` is set) and `/usage`, a server-rendered usage report (see the
//! `usage` module and `docs/usage-queries.md`). Built with feature `otel` and given
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, it exports the library's spans over OTLP/HTTP, each
//! interception in its caller's W3C trace (`telemetry` module).
//!
//! # What a host must set itself
//!
//! The library is a `tower::Service`; it never sees a socket, so the server's own limits
//! are the host's job, and this gateway shows them (`server` module):
//!
//! - a **header-read timeout** (a client that sends half a request head and stops),
//! - an **idle timeout** for kept-alive connections with no request in progress, and for
//!   the gaps in a request body (the bridge reads the whole body before it starts),
//! - a **connection limit** below the file descriptor limit, and what happens at it (here:
//!   the longest-idle connection makes room; when none is idle, the new one is closed).
//!
//! What the bridge bounds on its own: the request body size, the upstream connect,
//! response and stream-idle timeouts, and a client that stops reading its stream. A host
//! timeout layer around the whole request would cut long streams; use none, or a long one.
#![allow(
    clippy::print_stdout,
    reason = "the gateway prints its listening line on stdout"
)]

mod auth;
mod bridge;
mod cloud;
mod config;
mod conn;
mod mcp_headers;
mod policy;
mod policy_file;
mod routes;
mod runtime;
mod server;
mod telemetry;
#[cfg(test)]
mod tests;
#[path = "../usage/mod.rs"]
mod usage;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aibridge::RequestBridge;

use crate::bridge::{build_bridge, policy};
use crate::config::Config;
use crate::routes::AppState;

/// How long the start waits for the MCP servers' first connection attempt.
const MCP_READY_WAIT: Duration = Duration::from_secs(3);

/// The bridge and the application serving it, ready to be bound.
async fn prepare(cfg: &Config) -> Result<(RequestBridge, axum::Router), ExitCode> {
    // The policy file first: a bad one stops the gateway before anything else starts.
    let loaded = match &cfg.policy {
        None => None,
        Some(path) => match policy::load(path) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("aibridge gateway: AIBRIDGE_POLICY={e}");
                return Err(ExitCode::from(2));
            }
        },
    };
    let registry = prometheus::Registry::new();
    let (bridge, policy) = build_bridge(cfg, &registry, loaded).await?;
    if let Some(p) = &policy {
        policy::spawn_reloader(Arc::clone(p));
    }
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
    let report = match usage::ReportDb::open(&cfg.database_url) {
        Ok(db) => Ok(Arc::new(db)),
        Err(e) => {
            tracing::warn!(error = %e, "usage report disabled");
            Err(Arc::from(e))
        }
    };
    let state = AppState {
        tokens: cfg.tokens.clone().map(Arc::new),
        metrics_token: cfg.metrics_token.as_deref().map(Arc::from),
        registry,
        report,
        policy,
    };
    Ok((bridge.clone(), routes::app(bridge, state)))
}

fn log_settings(cfg: &Config) {
    for (name, base, p) in [
        (
            "anthropic",
            cfg.anthropic_base.to_string(),
            format!("{:?}", policy(cfg.anthropic_key.as_ref())),
        ),
        (
            "openai",
            cfg.openai_base.to_string(),
            format!("{:?}", policy(cfg.openai_key.as_ref())),
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
    tracing::info!(
        header_read_timeout_ms = cfg.limits.header_read_timeout.as_millis(),
        idle_timeout_ms = cfg.limits.idle_timeout.as_millis(),
        max_connections = cfg.limits.max_connections,
        metrics_token = cfg.metrics_token.is_some(),
        "server"
    );
    if cfg.tokens.is_none() {
        tracing::warn!(
            "AIBRIDGE_TOKENS is not set: every request runs as actor \"local\"; do not expose this gateway beyond localhost"
        );
    }
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

fn main() -> ExitCode {
    runtime::run(gateway)
}

/// The gateway, on the runtime of `runtime.rs`.
async fn gateway() -> ExitCode {
    let telemetry = match telemetry::init(&config::env) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("aibridge gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aibridge gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let (bridge, app) = match prepare(&cfg).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let app = telemetry.wrap(app);
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
    log_settings(&cfg);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let report = tokio::spawn(async move {
        signal().await;
        tracing::info!("signal received: shutting down");
        let _ = stop_tx.send(());
        let shutdown = bridge.shutdown(Duration::from_secs(30));
        tokio::select! {
            r = shutdown => Some(r),
            _ = signal() => None,
        }
    });
    let serve = tokio::spawn(server::serve(listener, app, cfg.limits, async {
        let _ = stop_rx.await;
    }));
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
    // Last: the spans of everything above, the records' included.
    telemetry.shutdown().await;
    ExitCode::SUCCESS
}

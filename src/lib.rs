//! aibridge: an embeddable AI gateway.
//!
//! # Overview
//!
//! A host application (an axum or hyper server) authenticates its users, inserts an
//! [`Actor`] into each request's extensions and mounts [`RequestBridge`] — a
//! `tower::Service` — under a path such as `/api/v2/aibridge`. The bridge then:
//!
//! - routes each request to a named [`Provider`] (`/{name}/…`): bridged routes
//!   (Anthropic `/v1/messages`; OpenAI and Copilot `chat/completions` and `responses`) go to
//!   an interceptor, a fixed allowlist of passthrough routes is reverse-proxied, anything
//!   else gets a clear 404;
//! - forwards the client's request bytes upstream and relays the answer as it arrives, byte
//!   for byte (blocking JSON and SSE streams alike), adding one header,
//!   `x-aibridge-interception-id`;
//! - records, per actor, the interception, its token usage, the user prompt, tool calls and
//!   model thoughts through an async [`Recorder`] (SQLite and PostgreSQL recorders ship
//!   behind features), each token usage with its cost in US dollars;
//! - governs, when the host sets a [`policy::Policy`]: model access, token and dollar
//!   budgets, rate limits and MCP tool narrowing, decided before anything goes upstream,
//!   with provider-shaped denials that are recorded (outcome `denied`) and counted.
//!
//! ```text
//! client ──> host (auth, Actor) ──> RequestBridge ──> route ──> interceptor ──> upstream
//!                                                       │            │
//!                                                       │            └─> records ─> queue ─> Recorder
//!                                                       └─> passthrough (allowlist) ──────> upstream
//! ```
//!
//! How the request pipeline is built, module by module: `ARCHITECTURE.md` in the
//! repository.
//!
//! # Example: mounting in axum
//!
//! ```no_run
//! use aibridge::provider::{Anthropic, Secret};
//! use aibridge::recorder::NoopRecorder;
//! use aibridge::{Actor, RequestBridge};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bridge = RequestBridge::builder()
//!     .provider(Anthropic::new(Secret::new("sk-ant-…")))
//!     .recorder(NoopRecorder)
//!     .build()?;
//! let app = axum::Router::new()
//!     .nest_service("/api/v2/aibridge", bridge.clone())
//!     // Your authentication: strip the gateway token, insert the Actor.
//!     .layer(axum::middleware::from_fn(|mut req: axum::extract::Request, next: axum::middleware::Next| async move {
//!         req.extensions_mut().insert(Actor::new("user-42"));
//!         next.run(req).await
//!     }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Under a plain hyper server, wrap the bridge with
//! `hyper_util::service::TowerToHyperService` and set
//! [`Builder::path_prefix`](bridge::Builder::path_prefix) so the bridge strips the mount
//! path itself.
//!
//! # Recording
//!
//! Implement [`Recorder`] (six `async fn`s under [`macro@async_trait`]; see the
//! [`recorder`] module for an example) or use a shipped one: `SqliteRecorder` (feature
//! `sqlite`), `PostgresRecorder` (feature `postgres`; many replicas, one database),
//! [`recorder::MemoryRecorder`] (tests) or [`recorder::NoopRecorder`]. Only
//! `record_interception` is awaited before the upstream call; everything else goes through
//! a bounded queue with timeouts, retries and counters
//! ([`recorder::RecordQueueConfig`]), so recording never slows a stream down and never
//! loses a record silently.
//!
//! # MCP tools
//!
//! With the `mcp` feature:
//!
//! ```no_run
//! # #[cfg(feature = "mcp")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use aibridge::mcp::{McpConfig, McpServer};
//! use aibridge::provider::{Anthropic, Secret};
//! use aibridge::recorder::NoopRecorder;
//!
//! let mcp = McpConfig::new()
//!     .server(
//!         McpServer::new("coder", "https://coder.example.com/api/experimental/mcp/http".parse()?)
//!             .with_header(http::header::AUTHORIZATION, Secret::new("Bearer …"))
//!             .with_deny("^delete_"),
//!     )
//!     .max_iterations(10);
//! let bridge = aibridge::RequestBridge::builder()
//!     .provider(Anthropic::new(Secret::new("sk-ant-…")))
//!     .recorder(NoopRecorder)
//!     .mcp(mcp)
//!     .build()?;
//! bridge.mcp_ready().await; // optional: wait for the first connection attempts
//! # Ok(()) }
//! ```
//!
//! The tools are offered to the model as `bmcp_<server>_<tool>`; the bridge runs the calls
//! itself and calls the upstream again until the model answers without them. The client
//! sees one coherent answer, streamed live, with summed usage.
//!
//! # Metrics and shutdown
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = prometheus::Registry::new();
//! let bridge = aibridge::RequestBridge::builder()
//!     .provider(aibridge::provider::Anthropic::new(aibridge::provider::Secret::new("k")))
//!     .recorder(aibridge::recorder::NoopRecorder)
//!     .metrics(aibridge::metrics::Metrics::new(&registry)?)
//!     .build()?;
//! // Serve `prometheus::TextEncoder` over `registry.gather()` on /metrics; on SIGTERM:
//! let report = bridge.shutdown(std::time::Duration::from_secs(30)).await;
//! assert_eq!(report.dropped_records, 0);
//! # Ok(()) }
//! ```
//!
//! `shutdown` answers new requests with a provider-shaped 503, lets in-flight requests
//! finish during two thirds of the timeout, then ends the rest with their API's terminal
//! error event and drains the record queue.
//!
//! # Feature flags
//!
//! None is on by default: most hosts bring their own [`Recorder`], and the default build
//! pulls neither a SQL driver nor an MCP client.
//!
//! - `sqlite`: `recorder::SqliteRecorder` (rusqlite on a writer thread; sqlx for the
//!   migrations and reads; one bundled SQLite).
//! - `postgres`: `recorder::PostgresRecorder` (sqlx with PostgreSQL and rustls).
//! - `mcp`: the `mcp` module, MCP tool injection, the inner tool loop and per-actor MCP
//!   credentials (rmcp).
//! - `mcp-server`: implies `mcp`; `mcp::McpEndpoint`, the governed tools served to editors
//!   over MCP (`RequestBridge::mcp_endpoint`).
//! - `bedrock`: `provider::Bedrock`, Claude through AWS Bedrock (SigV4, EventStream).
//! - `vertex`: `provider::Vertex`, Claude through Google Vertex AI.
//! - `test-util`: test knobs for a host's tests (`MemoryRecorder::fail_next`).
//! - `bench-internals`: hidden entry points for the crate's benchmarks; not a public API.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod bridge;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod provider;
pub mod recorder;

#[cfg(any(test, feature = "bench-internals"))]
#[doc(hidden)]
pub mod __bench {
    //! Not a public API: entry points for the benchmarks.
    pub use crate::bench_support::*;
}

mod actor;
mod backoff;
#[cfg(any(test, feature = "bench-internals"))]
mod bench_support;
mod breaker;
mod clients;
mod error;
mod intercept;
mod passthrough;
mod pipeline;
mod sse;
mod upstream;

#[doc(inline)]
pub use crate::{
    actor::Actor,
    body::Body,
    bridge::{RequestBridge, ShutdownReport},
    provider::Provider,
    recorder::Recorder,
};

/// The `async_trait` macro [`Recorder`] is declared with, for implementing it.
///
/// [`Recorder`] is used as `Arc<dyn Recorder>`, and a trait with native `async fn`s cannot
/// be a trait object, so it is declared with `#[async_trait]`; an implementation must use
/// the same macro. This re-export saves a recorder crate the extra dependency and keeps the
/// macro's version the one the trait was expanded with. `use async_trait::async_trait`
/// works as well.
pub use async_trait::async_trait;

/// A boxed error, as used throughout the crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed, `Send` future (the tool executor's return type).
#[cfg(feature = "mcp")]
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

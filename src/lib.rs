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
//!   model thoughts through an async [`Recorder`] (a SQLite recorder ships with the crate).
//!
//! ```text
//! client ──> host (auth, Actor) ──> RequestBridge ──> route ──> interceptor ──> upstream
//!                                                       │            │
//!                                                       │            └─> records ─> queue ─> Recorder
//!                                                       └─> passthrough (allowlist) ──────> upstream
//! ```
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
//! # Feature flags
//!
//! - `sqlite` (default): [`recorder::SqliteRecorder`].
//! - `postgres` (default): `recorder::PostgresRecorder`.
//! - `mcp` (default): reserved for MCP tool injection.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod bridge;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod metrics;
pub mod provider;
pub mod recorder;

#[cfg(any(test, feature = "bench-internals"))]
#[doc(hidden)]
pub mod __bench {
    //! Not a public API: entry points for the benchmarks.
    pub use crate::bench_support::*;
}

mod actor;
#[cfg(any(test, feature = "bench-internals"))]
mod bench_support;
mod breaker;
mod clients;
mod error;
mod intercept;
mod passthrough;
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

/// Re-export of the `async_trait` macro, for implementing [`Recorder`].
pub use async_trait::async_trait;

/// A boxed error, as used throughout the crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

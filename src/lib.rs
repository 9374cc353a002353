//! aibridge: an embeddable AI gateway.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod bridge;
pub mod provider;
pub mod recorder;

mod actor;
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

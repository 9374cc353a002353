//! Recording: the [`Recorder`] trait, its record types and the shipped implementations.
//!
//! The bridge awaits [`Recorder::record_interception`] before it calls the upstream (unless
//! the host chose [`InterceptionRecord::Queued`]); every other record goes through a bounded in-process queue whose workers call the recorder
//! with a timeout and retries (see [`RecordQueueConfig`]). Records are never lost silently:
//! each one is counted exactly once, as written, failed (logged) or dropped (logged). The
//! records still unfinished at the shutdown deadline are dropped, and so is a record queued
//! after it (it is not delivered).
//!
//! Prompts and tool inputs are recorded up to a size cap (64 KiB each by default; see
//! [`Builder::max_recorded_prompt`](crate::bridge::Builder::max_recorded_prompt) and
//! [`Builder::max_recorded_tool_input`](crate::bridge::Builder::max_recorded_tool_input)).
//!
//! # Writing a recorder
//!
//! ```
//! use aibridge::BoxError;
//! use aibridge::recorder::{
//!     Interception, InterceptionEnded, ModelThought, PromptUsage, Recorder, TokenUsage,
//!     ToolUsage,
//! };
//!
//! #[derive(Debug)]
//! struct LogRecorder;
//!
//! #[aibridge::async_trait]
//! impl Recorder for LogRecorder {
//!     async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
//!         println!("interception {} by {}", rec.id, rec.initiator_id);
//!         Ok(())
//!     }
//!     async fn record_interception_ended(&self, _: &InterceptionEnded) -> Result<(), BoxError> { Ok(()) }
//!     async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
//!         println!("{} in / {} out", rec.input_tokens, rec.output_tokens);
//!         Ok(())
//!     }
//!     async fn record_prompt_usage(&self, _: &PromptUsage) -> Result<(), BoxError> { Ok(()) }
//!     async fn record_tool_usage(&self, _: &ToolUsage) -> Result<(), BoxError> { Ok(()) }
//!     async fn record_model_thought(&self, _: &ModelThought) -> Result<(), BoxError> { Ok(()) }
//! }
//! ```

pub(crate) mod limits;
mod memory;
mod permanent;
pub(crate) mod queue;
mod record;
pub(crate) mod response_ids;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use self::memory::MemoryRecorder;
pub use self::permanent::PermanentError;
pub use self::queue::{InterceptionRecord, QueueFullPolicy, RecordQueueConfig};
pub use self::record::{
    Interception, InterceptionEnded, ModelThought, Outcome, ParseRecordIdError, PromptUsage,
    RecordId, RecordKind, ThoughtSource, TokenUsage, ToolUsage,
};
pub use self::response_ids::ResponseIds;

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sql::SqliteRecorder;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::sql::{PostgresRecorder, PostgresRecorderBuilder};

pub(crate) use self::record::{Delivery, Record};

use std::sync::Arc;

use crate::BoxError;

/// Receives the records of every interception.
///
/// Implementations must be idempotent per record id (a retried call re-sends the same
/// value), must not block the async runtime, and must expect concurrent calls. The trait is
/// object safe (`Arc<dyn Recorder>`).
///
/// # Errors
///
/// Return `Err` for any failure. The record queue retries it (up to
/// [`RecordQueueConfig::max_attempts`] calls in all, with back-off) unless the error is
/// marked [`PermanentError`] somewhere in its source chain: such a record is counted
/// `failed` at once, because the same call would fail again (a constraint violation, a
/// value the database cannot store, an invalid statement). Errors of unknown cause should
/// stay unmarked, so they are retried. `record_interception` is never retried (see below).
///
/// The shipped SQL recorders mark constraint violations, data exceptions, syntax and
/// access-rule errors and values they cannot encode as permanent; I/O errors, pool
/// timeouts, closed connections, a busy or locked database and everything else are
/// retried.
#[async_trait::async_trait]
pub trait Recorder: Send + Sync + 'static {
    /// Records the start of an interception. Awaited before the upstream call; an error
    /// makes the client's request fail with 503 and nothing is sent upstream.
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError>;
    /// Records the end of an interception, after all its other records.
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError>;
    /// Records the token usage of one upstream message.
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError>;
    /// Records the user's prompt.
    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError>;
    /// Records one tool call.
    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError>;
    /// Records one model thought.
    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError>;
}

#[async_trait::async_trait]
impl<R: Recorder + ?Sized> Recorder for Arc<R> {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        (**self).record_interception(rec).await
    }
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        (**self).record_interception_ended(rec).await
    }
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        (**self).record_token_usage(rec).await
    }
    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        (**self).record_prompt_usage(rec).await
    }
    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        (**self).record_tool_usage(rec).await
    }
    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        (**self).record_model_thought(rec).await
    }
}

/// A recorder that accepts and discards everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopRecorder;

#[async_trait::async_trait]
impl Recorder for NoopRecorder {
    async fn record_interception(&self, _: &Interception) -> Result<(), BoxError> {
        Ok(())
    }
    async fn record_interception_ended(&self, _: &InterceptionEnded) -> Result<(), BoxError> {
        Ok(())
    }
    async fn record_token_usage(&self, _: &TokenUsage) -> Result<(), BoxError> {
        Ok(())
    }
    async fn record_prompt_usage(&self, _: &PromptUsage) -> Result<(), BoxError> {
        Ok(())
    }
    async fn record_tool_usage(&self, _: &ToolUsage) -> Result<(), BoxError> {
        Ok(())
    }
    async fn record_model_thought(&self, _: &ModelThought) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Delivers one queued record to a recorder.
pub(crate) async fn deliver(recorder: &dyn Recorder, record: &Record) -> Result<(), BoxError> {
    match record {
        Record::Interception(r) => recorder.record_interception(r).await,
        Record::TokenUsage(r) => recorder.record_token_usage(r).await,
        Record::PromptUsage(r) => recorder.record_prompt_usage(r).await,
        Record::ToolUsage(r) => recorder.record_tool_usage(r).await,
        Record::ModelThought(r) => recorder.record_model_thought(r).await,
        Record::InterceptionEnded(r) => recorder.record_interception_ended(r).await,
    }
}

/// Errors of the SQL recorders' `connect`.
///
/// `Display` never includes a password: URLs are redacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// The database could not be reached or opened.
    #[error("cannot connect to the database: {0}")]
    Connect(BoxError),
    /// The schema migrations could not be applied (or the schema is newer than this code).
    #[error("cannot apply the database migrations: {0}")]
    Migrate(BoxError),
}

//! [`PostgresRecorderBuilder`]: the pool size and the batching of a [`PostgresRecorder`].

use std::fmt;

use super::pipeline::Shape;
use super::{DEFAULT_MAX_BATCH, DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITERS, PostgresRecorder};
use crate::recorder::RecorderError;
use crate::recorder::sql::redact_url;

/// Configures a [`PostgresRecorder`] before connecting; made by
/// [`PostgresRecorder::builder`].
///
/// `Debug` prints the database URL with its password replaced by `***`.
#[derive(Clone)]
#[must_use]
pub struct PostgresRecorderBuilder {
    url: String,
    max_connections: u32,
    writers: usize,
    max_batch: usize,
}

// === impl PostgresRecorder ===

impl PostgresRecorder {
    /// A builder to configure the pool and the batching of the queued records before
    /// connecting (for `url`, as in [`connect`](Self::connect)).
    ///
    /// ```no_run
    /// use aibridge::recorder::PostgresRecorder;
    ///
    /// # async fn run() -> Result<(), aibridge::recorder::RecorderError> {
    /// let recorder = PostgresRecorder::builder("postgres://aibridge:secret@db/aibridge")
    ///     .max_connections(16)
    ///     .writers(8)
    ///     .connect()
    ///     .await?;
    /// # drop(recorder);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(url: &str) -> PostgresRecorderBuilder {
        PostgresRecorderBuilder::new(url)
    }
}

// === impl PostgresRecorderBuilder ===

impl PostgresRecorderBuilder {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            writers: DEFAULT_WRITERS,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// Most connections of the pool of the queued records (and of the spend reads);
    /// default 10, at least 1. The awaited `record_interception` has a pool of its own of
    /// up to 4 connections (never more than this).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Writer tasks of the queued records, each writing one group (one transaction) at a
    /// time on a connection of the pool: how many groups are in flight at once. Default 4,
    /// at least 1; more than [`max_connections`](Self::max_connections) only wait for a
    /// connection.
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = n;
        self
    }

    /// Most queued records a writer takes into one group; default 256, at least 1. With 1,
    /// every record is a statement of its own (no batching).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// Connects and applies the embedded migrations (see [`PostgresRecorder::connect`];
    /// the writer tasks are spawned on the current Tokio runtime).
    ///
    /// # Errors
    ///
    /// As [`PostgresRecorder::connect`]; `max_connections`, `writers` or `max_batch` of 0
    /// is a [`RecorderError::Connect`].
    pub async fn connect(self) -> Result<PostgresRecorder, RecorderError> {
        let shape = Shape {
            writers: self.writers,
            max_batch: self.max_batch,
            retries: 1,
        };
        PostgresRecorder::open(&self.url, self.max_connections, shape).await
    }
}

impl fmt::Debug for PostgresRecorderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRecorderBuilder")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("writers", &self.writers)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

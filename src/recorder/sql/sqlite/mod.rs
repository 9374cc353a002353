//! [`SqliteRecorder`]: writes the records into a SQLite database.

mod job;
mod lanes;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::oneshot;

use self::job::{Arg, Job, Kind};
use self::lanes::{Lane, Lanes};
use self::writer::{STATEMENT_CACHE, spawn_writer};
use super::{
    WriteError, connect_error, count, extra_json, format_timestamp, metadata_json, migrate_error,
    migrations, redact_url, tool_input_json,
};
use crate::BoxError;
use crate::recorder::{
    Interception, InterceptionEnded, ModelThought, PromptUsage, Recorder, RecorderError,
    TokenUsage, ToolUsage,
};

/// How long a statement waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes waiting for the writer thread, at most (see [`SqliteRecorder`]).
const WRITER_QUEUE: usize = 1024;

/// A [`Recorder`] that writes into a SQLite database, with the schema of the crate's
/// recorder documentation (tables `aibridge_interceptions`, `aibridge_token_usages`,
/// `aibridge_user_prompts`, `aibridge_tool_usages`, `aibridge_model_thoughts`).
///
/// Values are stored as: ids TEXT (36-character lower-case hyphenated UUIDs), timestamps
/// TEXT (UTC RFC 3339 with exactly six fractional digits and `Z`, so text order is time
/// order), JSON as TEXT, booleans as INTEGER 0/1. Every write is idempotent by record id.
///
/// The database runs in WAL journal mode with `synchronous = NORMAL` (durable across a
/// crash of the process; a power loss may lose the most recent records), foreign keys
/// enforced and a 5 s busy timeout.
///
/// Writes are handed to one writer thread of the recorder's own, which runs them
/// synchronously on one connection (SQLite serialises writes anyway) with prepared
/// statements (the `rusqlite` driver over the same bundled SQLite as SQLx): each group of
/// records that queued up while the previous one was written is one transaction (up to 256
/// records, of one kind in multi-row statements), and costs one hand-off to the thread, not
/// one per statement. An awaited [`record_interception`](Recorder::record_interception)
/// takes a fast lane: it is written before the other records waiting, and a group being
/// written when it arrives is committed at the next statement so that it does not wait for
/// the whole group. At most 1,024 writes wait for the writer; a call beyond that waits for
/// room (under the record queue, its `call_timeout` bounds that wait). A write whose call
/// was dropped (cancelled or timed out) before the writer took it up is not written at
/// all; one already taken up may still land, which a retry under the same id finds
/// harmless (every write is idempotent).
///
/// Reads go through SQLx as before: the recorder also keeps one SQLx connection (it applies
/// the migrations), and other SQLx pools may read the same file. An in-memory database
/// (`sqlite::memory:`) is shared in-process between that connection and the writer's.
///
/// Errors that writing the same record again cannot fix (constraint violations, a value
/// SQLite rejects, an invalid statement: `SQLITE_CONSTRAINT`, `SQLITE_MISMATCH`,
/// `SQLITE_TOOBIG`, `SQLITE_RANGE`, `SQLITE_ERROR`) are marked
/// [`PermanentError`](crate::recorder::PermanentError), so the record queue does not retry
/// them; a busy or locked database, I/O errors and everything else are retried.
///
/// `Debug` prints the database URL (SQLite URLs carry no password).
pub struct SqliteRecorder {
    /// Read queries (`reads.rs`) and the migrations; writes go through the writer thread's
    /// own `rusqlite` connection.
    pub(in crate::recorder::sql) pool: SqlitePool,
    url: String,
    /// The lanes of the writer thread.
    lanes: Arc<Lanes>,
}

impl SqliteRecorder {
    /// Opens (with `mode=rwc`: creates) the database at `url` and applies the embedded
    /// migrations.
    ///
    /// `url` is a SQLx SQLite URL: `sqlite://path/to/file.db?mode=rwc` for a file that is
    /// created if missing, `sqlite://path/to/file.db` for an existing file, or
    /// `sqlite::memory:` for a private in-memory database (lost when the recorder is
    /// dropped).
    ///
    /// # Errors
    ///
    /// [`RecorderError::Connect`] if the URL is invalid or the database cannot be opened;
    /// [`RecorderError::Migrate`] if the migrations fail, or if the database was migrated
    /// by a newer version of this crate ("database schema version N is newer than this
    /// aibridge supports (M)").
    ///
    /// # Example
    ///
    /// ```no_run
    /// use aibridge::recorder::SqliteRecorder;
    ///
    /// # async fn run() -> Result<(), aibridge::recorder::RecorderError> {
    /// let recorder = SqliteRecorder::connect("sqlite://aibridge.db?mode=rwc").await?;
    /// # drop(recorder);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, RecorderError> {
        Self::open(url, WRITER_QUEUE).await
    }

    /// [`connect`](Self::connect) with room for `queue` writes waiting for the writer.
    async fn open(url: &str, queue: usize) -> Result<Self, RecorderError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| RecorderError::Connect(connect_error(url, e)))?
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode, NORMAL syncs at checkpoints instead of at every commit: a crash of
            // the process loses nothing; a power loss may lose the last records. FULL (one
            // fsync per record) cost about half the gateway's CPU in the load benchmark
            // (BENCHMARKS.md).
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection that is never closed while the pool lives: SQLite has a single
        // writer anyway, and an in-memory database lives only as long as its connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // No ping before each use: the connection is in-process and never closed, and
            // the ping is a second round trip to SQLx's worker thread for every record.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| RecorderError::Connect(connect_error(url, e)))?;
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| RecorderError::Connect(connect_error(url, e)))?;
        migrations::apply_sqlite(&mut conn)
            .await
            .map_err(|e| RecorderError::Migrate(migrate_error(url, e)))?;
        drop(conn);
        let writer = open_writer(&options, url)
            .await
            .map_err(|e| RecorderError::Connect(connect_error(url, e)))?;
        let lanes = Arc::new(Lanes::new(queue));
        spawn_writer(writer, lanes.clone())
            .map_err(|e| RecorderError::Connect(connect_error(url, e)))?;
        Ok(Self {
            pool,
            url: redact_url(url),
            lanes,
        })
    }

    /// Writes one record through the writer thread.
    async fn write_row<R: Row>(&self, rec: &R, lane: Lane) -> Result<(), BoxError> {
        let (done, result) = oneshot::channel();
        let job = Job {
            kind: R::KIND,
            args: rec.args()?,
            done,
            permit: None,
        };
        self.lanes.push(job, lane).await?;
        result
            .await
            .map_err(|_| BoxError::from("the SQLite writer has stopped"))?
    }
}

impl Drop for SqliteRecorder {
    fn drop(&mut self) {
        self.lanes.close();
    }
}

/// Opens the writer thread's connection to the database SQLx opened with `options`
/// (migrated already): the same file, or for an in-memory database the same shared one.
async fn open_writer(options: &SqliteConnectOptions, url: &str) -> Result<Connection, BoxError> {
    let path = options.get_filename().to_path_buf();
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    tokio::task::spawn_blocking(move || {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if in_memory {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        let conn = Connection::open_with_flags(&path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL is a property of the file (set by SQLx's connection); these are per connection.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok::<_, BoxError>(conn)
    })
    .await
    .map_err(|e| BoxError::from(e.to_string()))?
}

impl SqliteRecorder {
    /// The pool the spend read (`../spend.rs`) uses.
    pub(in crate::recorder::sql) fn read_pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[cfg(test)]
impl SqliteRecorder {
    /// The recorder's own pool, for tests that inspect an in-memory database.
    pub(in crate::recorder::sql) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// [`connect`](Self::connect) with room for `queue` waiting writes.
    pub(in crate::recorder::sql) async fn connect_with_queue(
        url: &str,
        queue: usize,
    ) -> Result<Self, RecorderError> {
        Self::open(url, queue).await
    }

    /// Room left in the writer's queue.
    pub(in crate::recorder::sql) fn queue_room(&self) -> usize {
        self.lanes.room()
    }

    /// Keeps the writer thread from taking up a group while the guard lives.
    pub(in crate::recorder::sql) fn pause_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lanes.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for SqliteRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRecorder")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A record as the values of its row.
trait Row {
    /// Which write it is.
    const KIND: Kind;
    /// Its values, in the order of [`Kind::columns`].
    fn args(&self) -> Result<Vec<Arg>, BoxError>;
}

impl Row for Interception {
    const KIND: Kind = Kind::Interception;

    fn args(&self) -> Result<Vec<Arg>, BoxError> {
        Ok(vec![
            Arg::Text(self.id.to_string()),
            Arg::Text(self.initiator_id.clone()),
            Arg::Text(self.provider.as_str().to_owned()),
            Arg::Text(self.provider_name.clone()),
            Arg::Text(self.api.as_str().to_owned()),
            Arg::Text(self.model.clone()),
            Arg::Int(i64::from(self.streaming)),
            Arg::Text(self.client.clone()),
            Arg::OptText(self.client_session_id.clone()),
            Arg::OptText(self.user_agent.clone()),
            Arg::Text(self.credential_kind.as_str().to_owned()),
            Arg::OptText(self.credential_hint.clone()),
            Arg::OptText(self.correlating_tool_call_id.clone()),
            Arg::Text(metadata_json(&self.metadata)?),
            Arg::Text(format_timestamp(self.started_at)?),
        ])
    }
}

impl Row for InterceptionEnded {
    const KIND: Kind = Kind::Ended;

    fn args(&self) -> Result<Vec<Arg>, BoxError> {
        Ok(vec![
            Arg::Text(format_timestamp(self.ended_at)?),
            Arg::Text(self.outcome.as_str().to_owned()),
            Arg::OptText(self.error.clone()),
            Arg::Text(self.id.to_string()),
        ])
    }
}

impl Row for TokenUsage {
    const KIND: Kind = Kind::Token;

    fn args(&self) -> Result<Vec<Arg>, BoxError> {
        Ok(vec![
            Arg::Text(self.id.to_string()),
            Arg::Text(self.interception_id.to_string()),
            Arg::OptText(self.provider_response_id.clone()),
            Arg::Int(count(self.input_tokens, "input_tokens")?),
            Arg::Int(count(self.output_tokens, "output_tokens")?),
            Arg::Int(count(
                self.cache_read_input_tokens,
                "cache_read_input_tokens",
            )?),
            Arg::Int(count(
                self.cache_write_input_tokens,
                "cache_write_input_tokens",
            )?),
            Arg::Text(extra_json(&self.extra)?),
            Arg::Text(format_timestamp(self.created_at)?),
            Arg::OptReal(self.cost_usd.filter(|c| c.is_finite())),
        ])
    }
}

impl Row for PromptUsage {
    const KIND: Kind = Kind::Prompt;

    fn args(&self) -> Result<Vec<Arg>, BoxError> {
        Ok(vec![
            Arg::Text(self.id.to_string()),
            Arg::Text(self.interception_id.to_string()),
            Arg::OptText(self.provider_response_id.clone()),
            Arg::Text(self.prompt.clone()),
            Arg::Text(format_timestamp(self.created_at)?),
        ])
    }
}

impl Row for ToolUsage {
    const KIND: Kind = Kind::Tool;

    fn args(&self) -> Result<Vec<Arg>, BoxError> {
        Ok(vec![
            Arg::Text(self.id.to_string()),
            Arg::Text(self.interception_id.to_string()),
            Arg::OptText(self.provider_response_id.clone()),
            Arg::Text(self.tool.clone()),
            Arg::Text(self.tool_call_id.clone()),
            Arg::OptText(self.server_url.clone()),
            Arg::Text(tool_input_json(&self.input).into_owned()),
            Arg::Int(i64::from(self.injected)),
            Arg::Int(i64::from(self.provider_executed)),
            Arg::OptText(self.invocation_error.clone()),
            Arg::Text(format_timestamp(self.created_at)?),
        ])
    }
}

impl Row for ModelThought {
    const KIND: Kind = Kind::Thought;

    fn args(&self) -> Result<Vec<Arg>, BoxError> {
        Ok(vec![
            Arg::Text(self.id.to_string()),
            Arg::Text(self.interception_id.to_string()),
            Arg::OptText(self.provider_response_id.clone()),
            Arg::Text(self.content.clone()),
            Arg::Text(self.source.as_str().to_owned()),
            Arg::Text(format_timestamp(self.created_at)?),
        ])
    }
}

#[async_trait::async_trait]
impl Recorder for SqliteRecorder {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        self.write_row(rec, Lane::Fast)
            .await
            .map_err(|e| WriteError::boxed("interception", rec.id, e))
    }

    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        self.write_row(rec, Lane::Slow)
            .await
            .map_err(|e| WriteError::boxed("interception end", rec.id, e))
    }

    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        self.write_row(rec, Lane::Slow)
            .await
            .map_err(|e| WriteError::boxed("token usage", rec.id, e))
    }

    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        self.write_row(rec, Lane::Slow)
            .await
            .map_err(|e| WriteError::boxed("prompt usage", rec.id, e))
    }

    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        self.write_row(rec, Lane::Slow)
            .await
            .map_err(|e| WriteError::boxed("tool usage", rec.id, e))
    }

    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        self.write_row(rec, Lane::Slow)
            .await
            .map_err(|e| WriteError::boxed("model thought", rec.id, e))
    }
}

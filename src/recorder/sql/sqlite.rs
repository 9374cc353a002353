//! [`SqliteRecorder`]: writes the records into a SQLite database.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

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
/// enforced and a 5 s busy timeout, through a single connection (SQLite serialises writes
/// anyway).
///
/// `Debug` prints the database URL (SQLite URLs carry no password).
pub struct SqliteRecorder {
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "read by the tests; the writer task has its own handle"
        )
    )]
    pool: SqlitePool,
    url: String,
    /// The queue of the `writer` task.
    jobs: mpsc::UnboundedSender<Job>,
}

/// A statement with owned arguments.
type Statement = sqlx::query::Query<'static, Sqlite, SqliteArguments<'static>>;

/// One write for the writer task, and where its result goes.
struct Job {
    statement: Statement,
    done: oneshot::Sender<Result<(), BoxError>>,
}

/// Most statements committed in one transaction.
const MAX_BATCH: usize = 256;

/// The writer task: executes the statements in arrival order over the one connection, each
/// group that queued up while the previous one was being written in one transaction (group
/// commit). A record then costs one statement, not one commit: in the load benchmark the
/// commits (WAL page writes and file locks) were about 40% of the gateway's CPU per request.
///
/// A statement that fails is rolled back alone (SQLite's statement-level atomicity) and
/// reports its error; the others of its group still commit. If the commit itself fails,
/// every statement of the group reports that error (every write is idempotent, so the
/// record queue's retries are safe even if part of it was written).
async fn writer(pool: SqlitePool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::new();
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            for job in batch.drain(..) {
                let r = job.statement.execute(&pool).await;
                let _ = job.done.send(r.map(drop).map_err(BoxError::from));
            }
            continue;
        }
        let mut tx = match pool.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(msg.clone().into()));
                }
                continue;
            }
        };
        let mut results = Vec::with_capacity(batch.len());
        let mut dones = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            results.push(job.statement.execute(&mut *tx).await.map(drop));
            dones.push(job.done);
        }
        match tx.commit().await {
            Ok(()) => {
                for (done, r) in dones.into_iter().zip(results) {
                    let _ = done.send(r.map_err(BoxError::from));
                }
            }
            Err(e) => {
                let msg = format!("commit failed: {e}");
                for done in dones {
                    let _ = done.send(Err(msg.clone().into()));
                }
            }
        }
    }
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
            .connect_with(options)
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
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(pool.clone(), rx));
        Ok(Self {
            pool,
            url: redact_url(url),
            jobs,
        })
    }

    /// Executes `statement` through the writer task.
    async fn write(&self, statement: Statement) -> Result<(), BoxError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job { statement, done })
            .map_err(|_| BoxError::from("the SQLite writer has stopped"))?;
        result
            .await
            .map_err(|_| BoxError::from("the SQLite writer has stopped"))?
    }
}

#[cfg(test)]
impl SqliteRecorder {
    /// The recorder's own pool, for tests that inspect an in-memory database.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl fmt::Debug for SqliteRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRecorder")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Recorder for SqliteRecorder {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        let write = async {
            let q = sqlx::query(
                "INSERT INTO aibridge_interceptions (
                     id, initiator_id, provider, provider_name, api, model, streaming, client,
                     client_session_id, user_agent, credential_kind, credential_hint,
                     correlating_tool_call_id, metadata, started_at
                 ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.initiator_id.clone())
            .bind(rec.provider.as_str())
            .bind(rec.provider_name.clone())
            .bind(rec.api.as_str())
            .bind(rec.model.clone())
            .bind(i64::from(rec.streaming))
            .bind(rec.client.clone())
            .bind(rec.client_session_id.clone())
            .bind(rec.user_agent.clone())
            .bind(rec.credential_kind.as_str())
            .bind(rec.credential_hint.clone())
            .bind(rec.correlating_tool_call_id.clone())
            .bind(metadata_json(&rec.metadata)?)
            .bind(format_timestamp(rec.started_at)?);
            self.write(q).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("interception", rec.id, e))
    }

    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        let write = async {
            let q = sqlx::query(
                "UPDATE aibridge_interceptions SET ended_at = ?, outcome = ?, error = ?
                 WHERE id = ? AND ended_at IS NULL",
            )
            .bind(format_timestamp(rec.ended_at)?)
            .bind(rec.outcome.as_str())
            .bind(rec.error.clone())
            .bind(rec.id.to_string());
            self.write(q).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("interception end", rec.id, e))
    }

    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        let write = async {
            let q = sqlx::query(
                "INSERT INTO aibridge_token_usages (
                     id, interception_id, provider_response_id, input_tokens, output_tokens,
                     cache_read_input_tokens, cache_write_input_tokens, extra, created_at
                 ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(rec.provider_response_id.clone())
            .bind(count(rec.input_tokens, "input_tokens")?)
            .bind(count(rec.output_tokens, "output_tokens")?)
            .bind(count(
                rec.cache_read_input_tokens,
                "cache_read_input_tokens",
            )?)
            .bind(count(
                rec.cache_write_input_tokens,
                "cache_write_input_tokens",
            )?)
            .bind(extra_json(&rec.extra)?)
            .bind(format_timestamp(rec.created_at)?);
            self.write(q).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("token usage", rec.id, e))
    }

    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        let write = async {
            let q = sqlx::query(
                "INSERT INTO aibridge_user_prompts (
                     id, interception_id, provider_response_id, prompt, created_at
                 ) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(rec.provider_response_id.clone())
            .bind(rec.prompt.clone())
            .bind(format_timestamp(rec.created_at)?);
            self.write(q).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("prompt usage", rec.id, e))
    }

    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        let write = async {
            let q = sqlx::query(
                "INSERT INTO aibridge_tool_usages (
                     id, interception_id, provider_response_id, tool, tool_call_id, server_url,
                     input, injected, provider_executed, invocation_error, created_at
                 ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(rec.provider_response_id.clone())
            .bind(rec.tool.clone())
            .bind(rec.tool_call_id.clone())
            .bind(rec.server_url.clone())
            .bind(tool_input_json(&rec.input).into_owned())
            .bind(i64::from(rec.injected))
            .bind(i64::from(rec.provider_executed))
            .bind(rec.invocation_error.clone())
            .bind(format_timestamp(rec.created_at)?);
            self.write(q).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("tool usage", rec.id, e))
    }

    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        let write = async {
            let q = sqlx::query(
                "INSERT INTO aibridge_model_thoughts (
                     id, interception_id, provider_response_id, content, source, created_at
                 ) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(rec.provider_response_id.clone())
            .bind(rec.content.clone())
            .bind(rec.source.as_str())
            .bind(format_timestamp(rec.created_at)?);
            self.write(q).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("model thought", rec.id, e))
    }
}

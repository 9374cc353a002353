//! [`PostgresRecorder`]: writes the records into a PostgreSQL database.

mod builder;
mod classify;
mod pipeline;
mod rows;
mod text;

pub use self::builder::PostgresRecorderBuilder;
pub(in crate::recorder::sql) use self::classify::is_permanent_code;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};

use self::pipeline::{Pipeline, Shape};
use self::rows::{EndedRow, InterceptionRow, PromptRow, Row, ThoughtRow, TokenRow, ToolRow};
use self::text::{pg_json, pg_opt, pg_text};
use super::{
    WriteError, connect_error, count, extra_json, format_timestamp, metadata_json, migrate_error,
    migrations, redact_url, tool_input_json,
};
use crate::BoxError;
use crate::recorder::{
    Interception, InterceptionEnded, ModelThought, PromptUsage, Recorder, RecorderError,
    TokenUsage, ToolUsage,
};

/// The pool size of [`PostgresRecorder::connect`].
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// Writer tasks of the queued records by default: groups in flight at once.
const DEFAULT_WRITERS: usize = 4;

/// Most queued records in one group (one transaction) by default.
const DEFAULT_MAX_BATCH: usize = 256;

/// How long an awaited `record_interception` waits for a connection of its own pool (or
/// for a new one to connect) before it fails. Short, so that a database outage fails a
/// request in well under a second instead of the pool's default 30 s (the recorder breaker
/// then refuses new requests at once).
const FAST_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(750);

/// Most connections of the awaited `record_interception`'s pool, all opened at connect, so
/// that under load a request waits for a free connection, never for a new one to connect
/// (which the short acquire timeout would take for an outage).
const FAST_CONNECTIONS: u32 = 4;

/// The same for the queued records, which the record queue retries: long enough that a
/// pool busy under load is not taken for an outage, shorter than the default call timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Recorder`] that writes into a PostgreSQL database, with the schema of the crate's
/// recorder documentation (tables `aibridge_interceptions`, `aibridge_token_usages`,
/// `aibridge_user_prompts`, `aibridge_tool_usages`, `aibridge_model_thoughts`; ids are
/// `UUID`, timestamps `TIMESTAMPTZ`, JSON `JSONB`, counts `BIGINT`, flags `BOOLEAN`).
///
/// Writes go through two connection pools (statements are prepared once per connection):
/// one of up to 4 connections, opened at connect, for `record_interception` alone (the fast
/// lane: it never waits behind other records for a connection, and while the database is
/// unreachable it fails within 0.75 s), one of up to `max_connections` for every other
/// record. Both are batched: writer tasks (one per connection of the fast lane; 4 by
/// default for the others, see [`PostgresRecorderBuilder::writers`]) each take every record
/// that queued up while they were busy (up to 256) as one group and write it in one
/// transaction with one statement per kind (`INSERT … SELECT * FROM UNNEST(…)` with one array per column, so
/// one prepared statement per kind whatever the number of rows), the ends of interceptions
/// last. A group that fails for a reason of the data (a child whose interception is
/// missing, a value the server rejects) is written again row by row, so the bad record
/// fails alone. Writes are idempotent by record id: inserts use
/// `ON CONFLICT (id) DO NOTHING`, the end of an interception is written only while
/// `ended_at` is still NULL.
///
/// PostgreSQL cannot store the NUL character in `TEXT` or `JSONB`, nor a lone UTF-16
/// surrogate escape (`\ud800`) in `JSONB`; they are replaced with U+FFFD (`�`) so such a
/// record is still written.
///
/// Errors that writing the same record again cannot fix (SQLSTATE classes `22` data
/// exception, `23` integrity constraint violation, `42` syntax error or access rule
/// violation, `54` program limit exceeded, `0A` feature not supported; values that cannot
/// be encoded) are marked [`PermanentError`](crate::recorder::PermanentError), so the
/// record queue does not retry them; connection and I/O errors, pool timeouts and every
/// other class are retried.
///
/// `Debug` prints the database URL with its password replaced by `***`.
pub struct PostgresRecorder {
    pub(super) pool: PgPool,
    /// The writers of `record_interception`, on a pool of their own (the fast lane).
    interceptions: Pipeline,
    /// The writers of every other record (on `pool`).
    pipeline: Pipeline,
    url: String,
}

impl PostgresRecorder {
    /// Connects to the database at `url` with pools of up to 10 connections and applies
    /// the embedded migrations.
    ///
    /// `url` is a PostgreSQL connection URL, e.g. `postgres://user:pass@host:5432/db`
    /// (parameters as understood by SQLx, e.g. `?application_name=aibridge`). TLS is
    /// supported (rustls): `?sslmode=require` encrypts, `verify-full` also checks the
    /// server certificate against the bundled web PKI roots (or `sslrootcert=`).
    ///
    /// Migrations run under a PostgreSQL advisory lock, so several replicas may start at
    /// once against the same database.
    ///
    /// The writer tasks of the queued records are spawned on the current Tokio runtime:
    /// use the recorder on the runtime it was connected on.
    ///
    /// # Errors
    ///
    /// [`RecorderError::Connect`] if the URL is invalid or the database cannot be reached;
    /// [`RecorderError::Migrate`] if the migrations fail, or if the database was migrated
    /// by a newer version of this crate ("database schema version N is newer than this
    /// aibridge supports (M)"). Messages never contain the password.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use aibridge::recorder::PostgresRecorder;
    ///
    /// # async fn run() -> Result<(), aibridge::recorder::RecorderError> {
    /// let recorder = PostgresRecorder::connect("postgres://aibridge:secret@db/aibridge").await?;
    /// # drop(recorder);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, RecorderError> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`connect`](Self::connect), with a pool of up to `max_connections` connections
    /// (at least 1).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); `max_connections == 0` is a
    /// [`RecorderError::Connect`].
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self, RecorderError> {
        Self::builder(url)
            .max_connections(max_connections)
            .connect()
            .await
    }

    /// Connects (see [`PostgresRecorderBuilder::connect`]).
    async fn open(url: &str, max_connections: u32, shape: Shape) -> Result<Self, RecorderError> {
        let connect_err = |e: &dyn fmt::Display| RecorderError::Connect(connect_error(url, e));
        if max_connections == 0 {
            return Err(connect_err(&"max_connections must be at least 1"));
        }
        if shape.writers == 0 || shape.max_batch == 0 {
            return Err(connect_err(&"writers and max_batch must be at least 1"));
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| connect_err(&e))?;

        // Migrations run on a connection of their own that is closed afterwards: closing
        // it releases the advisory lock whatever happened.
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| connect_err(&e))?;
        let migrated = migrations::apply_postgres(&mut conn).await;
        let closed = conn.close().await;
        migrated.map_err(|e| RecorderError::Migrate(migrate_error(url, e)))?;
        closed.map_err(|e| connect_err(&e))?;

        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| connect_err(&e))?;
        let fast_size = max_connections.min(FAST_CONNECTIONS);
        let fast = PgPoolOptions::new()
            .max_connections(fast_size)
            .min_connections(fast_size)
            .acquire_timeout(FAST_ACQUIRE_TIMEOUT)
            // No ping before each use (a second round trip per request): a connection the
            // database dropped fails its statement at once and is replaced.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| connect_err(&e))?;
        let pipeline = Pipeline::start(pool.clone(), shape);
        // One writer per connection; a connection the database dropped (it restarted) is
        // replaced, and the group tried again, once per pooled connection at most.
        let lane = Shape {
            writers: fast_size as usize,
            max_batch: shape.max_batch,
            retries: fast_size as usize,
        };
        let interceptions = Pipeline::start(fast, lane);
        Ok(Self {
            pool,
            interceptions,
            pipeline,
            url: redact_url(url),
        })
    }
}

impl PostgresRecorder {
    /// The pool the spend read (`spend.rs`) uses.
    pub(super) fn read_pool(&self) -> &PgPool {
        &self.pool
    }
}

#[cfg(test)]
impl PostgresRecorder {
    /// The recorder's pool, for tests.
    pub(in crate::recorder::sql) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Queued records no writer has taken up yet, for tests.
    pub(in crate::recorder::sql) fn waiting(&self) -> usize {
        self.pipeline.waiting()
    }
}

impl fmt::Debug for PostgresRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRecorder")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Recorder for PostgresRecorder {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        let write = async {
            let row = Row::Interception(Box::new(InterceptionRow {
                id: rec.id.to_string(),
                initiator_id: pg_text(&rec.initiator_id).into_owned(),
                provider: rec.provider.as_str(),
                provider_name: pg_text(&rec.provider_name).into_owned(),
                api: rec.api.as_str(),
                model: pg_text(&rec.model).into_owned(),
                streaming: rec.streaming,
                client: pg_text(&rec.client).into_owned(),
                client_session_id: owned(&rec.client_session_id),
                user_agent: owned(&rec.user_agent),
                credential_kind: rec.credential_kind.as_str(),
                credential_hint: owned(&rec.credential_hint),
                correlating_tool_call_id: owned(&rec.correlating_tool_call_id),
                metadata: pg_json(Cow::Owned(metadata_json(&rec.metadata)?)).into_owned(),
                started_at: format_timestamp(rec.started_at)?,
            }));
            self.interceptions.write(row).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("interception", rec.id, e))
    }

    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        let write = async {
            let row = Row::Ended(EndedRow {
                id: rec.id.to_string(),
                ended_at: format_timestamp(rec.ended_at)?,
                outcome: rec.outcome.as_str(),
                error: pg_opt(&rec.error).map(Cow::into_owned),
            });
            self.pipeline.write(row).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("interception end", rec.id, e))
    }

    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        let write = async {
            let row = Row::Token(TokenRow {
                id: rec.id.to_string(),
                interception_id: rec.interception_id.to_string(),
                provider_response_id: owned(&rec.provider_response_id),
                tokens: [
                    count(rec.input_tokens, "input_tokens")?,
                    count(rec.output_tokens, "output_tokens")?,
                    count(rec.cache_read_input_tokens, "cache_read_input_tokens")?,
                    count(rec.cache_write_input_tokens, "cache_write_input_tokens")?,
                ],
                extra: pg_json(Cow::Owned(extra_json(&rec.extra)?)).into_owned(),
                created_at: format_timestamp(rec.created_at)?,
                cost_usd: rec.cost_usd.filter(|c| c.is_finite()),
            });
            self.pipeline.write(row).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("token usage", rec.id, e))
    }

    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        let write = async {
            let row = Row::Prompt(PromptRow {
                id: rec.id.to_string(),
                interception_id: rec.interception_id.to_string(),
                provider_response_id: owned(&rec.provider_response_id),
                prompt: pg_text(&rec.prompt).into_owned(),
                created_at: format_timestamp(rec.created_at)?,
            });
            self.pipeline.write(row).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("prompt usage", rec.id, e))
    }

    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        let write = async {
            let row = Row::Tool(ToolRow {
                id: rec.id.to_string(),
                interception_id: rec.interception_id.to_string(),
                provider_response_id: owned(&rec.provider_response_id),
                tool: pg_text(&rec.tool).into_owned(),
                tool_call_id: pg_text(&rec.tool_call_id).into_owned(),
                server_url: owned(&rec.server_url),
                input: pg_json(tool_input_json(&rec.input)).into_owned(),
                injected: rec.injected,
                provider_executed: rec.provider_executed,
                invocation_error: owned(&rec.invocation_error),
                created_at: format_timestamp(rec.created_at)?,
            });
            self.pipeline.write(row).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("tool usage", rec.id, e))
    }

    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        let write = async {
            let row = Row::Thought(ThoughtRow {
                id: rec.id.to_string(),
                interception_id: rec.interception_id.to_string(),
                provider_response_id: owned(&rec.provider_response_id),
                content: pg_text(&rec.content).into_owned(),
                source: rec.source.as_str(),
                created_at: format_timestamp(rec.created_at)?,
            });
            self.pipeline.write(row).await
        };
        write
            .await
            .map_err(|e| WriteError::boxed("model thought", rec.id, e))
    }
}

/// An optional text as PostgreSQL can store it, owned (see [`pg_text`]).
fn owned(s: &Option<String>) -> Option<String> {
    pg_opt(s).map(Cow::into_owned)
}

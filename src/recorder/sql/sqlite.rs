//! [`SqliteRecorder`]: writes the records into a SQLite database.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
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

/// One value bound to a statement.
#[derive(Debug)]
enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

/// What a write does: one row into one table, or the end of an interception.
///
/// Declared in the order a group's writes run (the derived `Ord`): rows that others refer to
/// first, the ends of interceptions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Interception,
    Token,
    Prompt,
    Tool,
    Thought,
    Ended,
}

impl Kind {
    /// The table and its columns (for `Ended`: the values of one end).
    fn columns(self) -> (&'static str, &'static str, usize) {
        match self {
            Kind::Interception => (
                "aibridge_interceptions",
                "id, initiator_id, provider, provider_name, api, model, streaming, client, \
                 client_session_id, user_agent, credential_kind, credential_hint, \
                 correlating_tool_call_id, metadata, started_at",
                15,
            ),
            Kind::Token => (
                "aibridge_token_usages",
                "id, interception_id, provider_response_id, input_tokens, output_tokens, \
                 cache_read_input_tokens, cache_write_input_tokens, extra, created_at",
                9,
            ),
            Kind::Prompt => (
                "aibridge_user_prompts",
                "id, interception_id, provider_response_id, prompt, created_at",
                5,
            ),
            Kind::Tool => (
                "aibridge_tool_usages",
                "id, interception_id, provider_response_id, tool, tool_call_id, server_url, \
                 input, injected, provider_executed, invocation_error, created_at",
                11,
            ),
            Kind::Thought => (
                "aibridge_model_thoughts",
                "id, interception_id, provider_response_id, content, source, created_at",
                6,
            ),
            // ended_at, outcome, error, id
            Kind::Ended => ("aibridge_interceptions", "", 4),
        }
    }

    /// The statement that writes `rows` records of this kind at once: a multi-row
    /// `INSERT … ON CONFLICT (id) DO NOTHING`, or for ends an `UPDATE … FROM (VALUES …)`
    /// that only sets ends not set yet (both idempotent, as the record queue retries).
    fn sql(self, rows: usize) -> String {
        let (table, columns, width) = self.columns();
        let row = format!("({})", vec!["?"; width].join(", "));
        let values = vec![row; rows].join(", ");
        match self {
            Kind::Ended if rows == 1 => "UPDATE aibridge_interceptions \
                 SET ended_at = ?, outcome = ?, error = ? WHERE id = ? AND ended_at IS NULL"
                .to_owned(),
            Kind::Ended => format!(
                "UPDATE aibridge_interceptions \
                 SET ended_at = v.column1, outcome = v.column2, error = v.column3 \
                 FROM (VALUES {values}) AS v \
                 WHERE aibridge_interceptions.id = v.column4 \
                 AND aibridge_interceptions.ended_at IS NULL"
            ),
            _ => format!(
                "INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT (id) DO NOTHING"
            ),
        }
    }
}

/// One write for the writer task, and where its result goes.
struct Job {
    kind: Kind,
    args: Vec<Arg>,
    done: oneshot::Sender<Result<(), BoxError>>,
}

/// Most records written in one transaction.
const MAX_BATCH: usize = 256;
/// Most records of one kind in one statement. Statements are made for 1, 2, 4, … up to
/// this many rows only, so that SQLx's prepared-statement cache (100 per connection) holds
/// every shape: 6 kinds × 7 sizes.
const MAX_ROWS: usize = 64;

/// The SQL of every (kind, rows) shape, made once.
#[derive(Default)]
struct SqlCache(std::collections::HashMap<(Kind, usize), String>);

impl SqlCache {
    fn get(&mut self, kind: Kind, rows: usize) -> &str {
        self.0.entry((kind, rows)).or_insert_with(|| kind.sql(rows))
    }
}

/// The writer task: writes the records in groups over the one connection. Each group (the
/// records that queued up while the previous group was being written) is one transaction,
/// and within it the records of one kind go in multi-row statements. Under load a record
/// then costs a fraction of one statement, not one commit and one statement: in the load
/// benchmark the commits were about 40% of the gateway's CPU per request, then the
/// hand-offs to SQLx's SQLite thread (two per statement) about as much again.
///
/// A multi-row statement that fails is rolled back alone (SQLite's statement-level
/// atomicity) and its records are written one by one, so each failing record reports its
/// own error and the others still commit. If the commit itself fails, every record of the
/// group reports that error (every write is idempotent, so the record queue's retries are
/// safe even if part of it was written).
async fn writer(pool: SqlitePool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut sql = SqlCache::default();
    let mut batch: Vec<Job> = Vec::new();
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let group: Vec<Job> = std::mem::take(&mut batch);
        let results = write_group(&pool, &mut sql, &group).await;
        for (job, r) in group.into_iter().zip(results) {
            let _ = job.done.send(r.map_err(BoxError::from));
        }
    }
}

/// Writes one group in one transaction; one result per job, in order.
async fn write_group(
    pool: &SqlitePool,
    sql: &mut SqlCache,
    group: &[Job],
) -> Vec<Result<(), String>> {
    let fail_all = |msg: String| group.iter().map(|_| Err(msg.clone())).collect();
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return fail_all(e.to_string()),
    };
    if let [job] = group {
        let r = execute_refs(&mut conn, sql.get(job.kind, 1), &[job]).await;
        return vec![r.map_err(|e| e.to_string())];
    }
    let mut tx = match sqlx::Connection::begin(&mut *conn).await {
        Ok(tx) => tx,
        Err(e) => return fail_all(e.to_string()),
    };
    let mut results: Vec<Result<(), String>> = group.iter().map(|_| Ok(())).collect();
    // Same-kind records sit together in the group once sorted by kind (stable: arrival order
    // within a kind).
    let mut order: Vec<usize> = (0..group.len()).collect();
    order.sort_by_key(|&i| group[i].kind);
    let mut at = 0;
    while at < order.len() {
        let kind = group[order[at]].kind;
        let run = order[at..]
            .iter()
            .take_while(|&&i| group[i].kind == kind)
            .count();
        // Split the run into power-of-two statements, largest first.
        let mut left = run;
        while left > 0 {
            let rows = MAX_ROWS.min(1 << left.ilog2());
            let idx = &order[at..at + rows];
            let jobs: Vec<&Job> = idx.iter().map(|&i| &group[i]).collect();
            let r = execute_refs(&mut tx, sql.get(kind, rows), &jobs).await;
            if let Err(e) = r {
                if rows == 1 {
                    results[idx[0]] = Err(e.to_string());
                } else {
                    for &i in idx {
                        let one = [&group[i]];
                        if let Err(e) = execute_refs(&mut tx, sql.get(kind, 1), &one).await {
                            results[i] = Err(e.to_string());
                        }
                    }
                }
            }
            at += rows;
            left -= rows;
        }
    }
    if let Err(e) = tx.commit().await {
        return fail_all(format!("commit failed: {e}"));
    }
    results
}

/// Runs one statement over `jobs` (all of one kind) on `conn`.
async fn execute_refs(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    jobs: &[&Job],
) -> Result<(), sqlx::Error> {
    let mut q = sqlx::query(sql);
    for job in jobs {
        for arg in &job.args {
            q = match arg {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::OptText(s) => q.bind(s.as_deref()),
                Arg::Int(i) => q.bind(*i),
            };
        }
    }
    q.execute(conn).await.map(drop)
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

    /// Writes one record through the writer task.
    async fn write_row<R: Row>(&self, rec: &R) -> Result<(), BoxError> {
        self.write(R::KIND, rec.args()?).await
    }

    /// Writes one record's values through the writer task.
    async fn write(&self, kind: Kind, args: Vec<Arg>) -> Result<(), BoxError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job { kind, args, done })
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
        self.write_row(rec)
            .await
            .map_err(|e| WriteError::boxed("interception", rec.id, e))
    }

    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        self.write_row(rec)
            .await
            .map_err(|e| WriteError::boxed("interception end", rec.id, e))
    }

    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        self.write_row(rec)
            .await
            .map_err(|e| WriteError::boxed("token usage", rec.id, e))
    }

    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        self.write_row(rec)
            .await
            .map_err(|e| WriteError::boxed("prompt usage", rec.id, e))
    }

    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        self.write_row(rec)
            .await
            .map_err(|e| WriteError::boxed("tool usage", rec.id, e))
    }

    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        self.write_row(rec)
            .await
            .map_err(|e| WriteError::boxed("model thought", rec.id, e))
    }
}

#[cfg(test)]
mod tests {
    //! The group writer on its own: groups are made by hand here, as they form under load.

    use super::*;
    use crate::recorder::sql::tests::{
        ended, minimal_interception, prompt_usage, thought, token_usage, tool_usage,
    };
    use crate::recorder::{Outcome, RecordId, ThoughtSource};

    fn job<R: Row>(rec: &R) -> Job {
        let (done, _) = oneshot::channel();
        Job {
            kind: R::KIND,
            args: rec.args().unwrap(),
            done,
        }
    }

    async fn count(pool: &SqlitePool, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn outcome(pool: &SqlitePool, id: RecordId) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM aibridge_interceptions WHERE id = ?")
            .bind(id.to_string())
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[test]
    fn statements_have_one_placeholder_per_value() {
        for kind in [
            Kind::Interception,
            Kind::Token,
            Kind::Prompt,
            Kind::Tool,
            Kind::Thought,
            Kind::Ended,
        ] {
            let width = kind.columns().2;
            for rows in [1, 2, 64] {
                let sql = kind.sql(rows);
                assert_eq!(sql.matches('?').count(), width * rows, "{kind:?} × {rows}");
            }
        }
    }

    #[tokio::test]
    async fn a_mixed_group_lands_whole_in_dependency_order_and_a_bad_record_fails_alone() {
        let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
        let pool = rec.pool().clone();
        let mut group = Vec::new();
        let mut ids = Vec::new();
        for i in 0..5 {
            let ic = minimal_interception();
            ids.push(ic.id);
            // Arrival order as under load, with some ends and child rows queued before the
            // interception they belong to.
            if i % 2 == 0 {
                group.push(job(&ended(ic.id, Outcome::Completed, None)));
                group.push(job(&token_usage(ic.id)));
                group.push(job(&ic));
            } else {
                group.push(job(&ic));
                group.push(job(&token_usage(ic.id)));
                group.push(job(&ended(ic.id, Outcome::Failed, Some("upstream 529"))));
            }
            group.push(job(&prompt_usage(ic.id)));
            if i < 3 {
                group.push(job(&tool_usage(ic.id)));
            }
            if i < 2 {
                group.push(job(&thought(ic.id, ThoughtSource::Thinking)));
            }
        }
        // A retried interception (same id) and a token usage of an interception that does not
        // exist (its foreign key fails).
        group.push(job(&{
            let mut again = minimal_interception();
            again.id = ids[0];
            again
        }));
        let orphan = token_usage(minimal_interception().id);
        let bad = group.len();
        group.push(job(&orphan));

        let mut cache = SqlCache::default();
        let results = write_group(&pool, &mut cache, &group).await;
        assert_eq!(results.len(), group.len());
        for (i, r) in results.iter().enumerate() {
            if i == bad {
                let e = r.as_ref().unwrap_err();
                assert!(e.contains("FOREIGN KEY"), "{e}");
            } else {
                assert!(r.is_ok(), "job {i}: {r:?}");
            }
        }
        assert_eq!(count(&pool, "aibridge_interceptions").await, 5);
        assert_eq!(count(&pool, "aibridge_token_usages").await, 5);
        assert_eq!(count(&pool, "aibridge_user_prompts").await, 5);
        assert_eq!(count(&pool, "aibridge_tool_usages").await, 3);
        assert_eq!(count(&pool, "aibridge_model_thoughts").await, 2);
        for (i, id) in ids.iter().enumerate() {
            let want = if i % 2 == 0 { "completed" } else { "failed" };
            assert_eq!(outcome(&pool, *id).await.as_deref(), Some(want), "{i}");
        }
        // The same group again (a retry of all of it) changes nothing.
        let results = write_group(&pool, &mut cache, &group).await;
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert_eq!(count(&pool, "aibridge_interceptions").await, 5);
        assert_eq!(count(&pool, "aibridge_token_usages").await, 5);
    }

    #[tokio::test]
    async fn a_large_run_of_one_kind_is_split_into_cached_statement_shapes() {
        let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
        let pool = rec.pool().clone();
        let ic = minimal_interception();
        let mut cache = SqlCache::default();
        assert!(write_group(&pool, &mut cache, &[job(&ic)]).await[0].is_ok());
        // 200 = 64 + 64 + 64 + 8.
        let group: Vec<Job> = (0..200).map(|_| job(&token_usage(ic.id))).collect();
        let results = write_group(&pool, &mut cache, &group).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(count(&pool, "aibridge_token_usages").await, 200);
        let mut shapes: Vec<usize> = cache
            .0
            .keys()
            .filter(|(k, _)| *k == Kind::Token)
            .map(|(_, n)| *n)
            .collect();
        shapes.sort_unstable();
        assert_eq!(shapes, [8, 64]);
    }
}

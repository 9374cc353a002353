//! The group-commit writer task of [`SqliteRecorder`](super::SqliteRecorder).

use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::BoxError;
use crate::recorder::sql::classify;

/// One value bound to a statement.
#[derive(Debug)]
pub(super) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptReal(Option<f64>),
}

/// What a write does: one row into one table, or the end of an interception.
///
/// Declared in the order a group's writes run (the derived `Ord`): rows that others refer to
/// first, the ends of interceptions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
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
                 cache_read_input_tokens, cache_write_input_tokens, extra, created_at, cost_usd",
                10,
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
pub(super) struct Job {
    pub(super) kind: Kind,
    pub(super) args: Vec<Arg>,
    pub(super) done: oneshot::Sender<Result<(), BoxError>>,
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
///
/// A job whose caller is gone (its future was dropped: cancelled, or timed out under the
/// record queue's `call_timeout`) when the group is formed is skipped: nobody would learn
/// its result, and a caller that retries sends it again under the same id. Without this,
/// the calls that time out during a long database stall would all be written when it
/// recovers, among them interceptions whose requests were answered 503 and never sent.
pub(super) async fn writer(pool: SqlitePool, mut jobs: mpsc::Receiver<Job>) {
    let mut sql = SqlCache::default();
    let mut batch: Vec<Job> = Vec::new();
    while let Some(first) = jobs.recv().await {
        let mut next = Some(first);
        while let Some(job) = next {
            if !job.done.is_closed() {
                batch.push(job);
            }
            next = if batch.len() < MAX_BATCH {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            continue;
        }
        let group: Vec<Job> = std::mem::take(&mut batch);
        let results = write_group(&pool, &mut sql, &group).await;
        for (job, r) in group.into_iter().zip(results) {
            let _ = job.done.send(r);
        }
    }
}

/// Writes one group in one transaction; one result per job, in order. A statement's error
/// is classified per job (see [`classify`]); failing to start or commit the transaction is
/// retried (transient) whatever its cause, as it is no single record's fault.
async fn write_group(
    pool: &SqlitePool,
    sql: &mut SqlCache,
    group: &[Job],
) -> Vec<Result<(), BoxError>> {
    let fail_all = |msg: String| {
        group
            .iter()
            .map(|_| Err(BoxError::from(msg.clone())))
            .collect()
    };
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return fail_all(e.to_string()),
    };
    if let [job] = group {
        let r = execute_refs(&mut conn, sql.get(job.kind, 1), &[job]).await;
        return vec![r.map_err(|e| classify(e, is_permanent_code))];
    }
    let mut tx = match sqlx::Connection::begin(&mut *conn).await {
        Ok(tx) => tx,
        Err(e) => return fail_all(e.to_string()),
    };
    let mut results: Vec<Result<(), BoxError>> = group.iter().map(|_| Ok(())).collect();
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
                    results[idx[0]] = Err(classify(e, is_permanent_code));
                } else {
                    for &i in idx {
                        let one = [&group[i]];
                        if let Err(e) = execute_refs(&mut tx, sql.get(kind, 1), &one).await {
                            results[i] = Err(classify(e, is_permanent_code));
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

/// Whether a SQLite (extended) result code means that writing the same record again cannot
/// succeed: `SQLITE_ERROR` (an invalid statement, a missing table), `SQLITE_TOOBIG`,
/// `SQLITE_CONSTRAINT`, `SQLITE_MISMATCH`, `SQLITE_RANGE`. `SQLITE_BUSY`, `SQLITE_LOCKED`,
/// `SQLITE_IOERR`, `SQLITE_FULL` and the rest may pass on a later attempt.
pub(super) fn is_permanent_code(code: &str) -> bool {
    const ERROR: i64 = 1;
    const TOOBIG: i64 = 18;
    const CONSTRAINT: i64 = 19;
    const MISMATCH: i64 = 20;
    const RANGE: i64 = 25;
    code.parse::<i64>()
        .is_ok_and(|c| matches!(c & 0xff, ERROR | TOOBIG | CONSTRAINT | MISMATCH | RANGE))
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
                Arg::OptReal(f) => q.bind(*f),
            };
        }
    }
    q.execute(conn).await.map(drop)
}

#[cfg(test)]
mod tests {
    //! The group writer on its own: groups are made by hand here, as they form under load.

    use super::super::{Row, SqliteRecorder};
    use super::*;
    use crate::recorder::sql::tests::{
        ended, minimal_interception, prompt_usage, thought, token_usage, tool_usage,
    };
    use crate::recorder::{Outcome, PermanentError, RecordId, ThoughtSource};

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
                assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
                assert!(
                    PermanentError::is_in(&**e),
                    "a constraint violation is permanent"
                );
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

    #[test]
    fn sqlite_codes_are_classified_by_their_primary_code() {
        // SQLITE_ERROR, SQLITE_TOOBIG, SQLITE_CONSTRAINT (and its extended codes: UNIQUE,
        // FOREIGNKEY, NOTNULL), SQLITE_MISMATCH, SQLITE_RANGE.
        for code in ["1", "18", "19", "2067", "787", "1299", "20", "25"] {
            assert!(is_permanent_code(code), "{code}");
        }
        // SQLITE_BUSY (and BUSY_SNAPSHOT), SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_IOERR (and
        // IOERR_FSYNC), SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_SCHEMA; not a
        // number.
        for code in [
            "5", "517", "6", "7", "10", "1034", "13", "14", "15", "17", "", "x",
        ] {
            assert!(!is_permanent_code(code), "{code}");
        }
    }

    #[tokio::test]
    async fn real_sqlite_errors_are_classified() {
        use sqlx::Connection as _;
        use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aibridge.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let _rec = SqliteRecorder::connect(&url).await.unwrap();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
        let mut other = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        // The write lock is taken: SQLITE_BUSY, transient.
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap_err();
        let busy = classify(busy, is_permanent_code);
        assert!(busy.to_string().contains("locked"), "{busy}");
        assert!(!PermanentError::is_in(&*busy), "{busy}");
        // An invalid statement: SQLITE_ERROR, permanent.
        let syntax = sqlx::query("INSERT INTO no_such_table VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert!(PermanentError::is_in(&*classify(syntax, is_permanent_code)));
        // A closed pool: transient.
        let pool = SqlitePool::connect_with(options).await.unwrap();
        pool.close().await;
        let closed = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
        assert!(!PermanentError::is_in(&*classify(
            closed,
            is_permanent_code
        )));
    }
}

//! The conformance suite and SQLite-specific checks against `SqliteRecorder`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Row as _, TypeInfo as _, ValueRef as _};

use super::{
    Backend, Cell, Column, Db, Index, concurrent_writes, conformance, full_interception,
    spend_matches_a_full_scan,
};
use crate::policy::ActorSpend;
use crate::recorder::sql::SqliteRecorder;
use crate::recorder::{RecordId, Recorder, RecorderError};

/// Raw access to a SQLite database.
struct SqliteDb {
    pool: SqlitePool,
}

impl SqliteDb {
    /// A second pool on the file a recorder writes to.
    async fn open(path: &std::path::Path) -> Self {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        Self { pool }
    }

    /// The recorder's own pool (for `sqlite::memory:`).
    fn of(rec: &SqliteRecorder) -> Self {
        Self {
            pool: rec.pool().clone(),
        }
    }
}

#[async_trait::async_trait]
impl Db for SqliteDb {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn row(&self, table: &str, id: RecordId) -> Option<BTreeMap<String, Cell>> {
        let row = sqlx::query(&format!("SELECT * FROM {table} WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .unwrap()?;
        let mut out = BTreeMap::new();
        for (i, col) in row.columns().iter().enumerate() {
            use sqlx::Column as _;
            let raw = row.try_get_raw(i).unwrap();
            let cell = if raw.is_null() {
                Cell::Null
            } else {
                let ty = raw.type_info().name().to_owned();
                match ty.as_str() {
                    "INTEGER" => Cell::Int(row.get(i)),
                    "TEXT" => Cell::Text(row.get(i)),
                    "REAL" => Cell::Real(row.get(i)),
                    other => panic!("{table}.{}: unexpected storage class {other}", col.name()),
                }
            };
            out.insert(col.name().to_owned(), cell);
        }
        Some(out)
    }

    async fn columns(&self, table: &str) -> Vec<Column> {
        let rows = sqlx::query(
            "SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.iter()
            .map(|r| Column {
                name: r.get(0),
                ty: r.get::<String, _>(1).to_lowercase(),
                not_null: r.get::<i64, _>(2) == 1,
                default: r.get::<Option<String>, _>(3).map(|d| d.to_lowercase()),
            })
            .collect()
    }

    async fn indexes(&self) -> BTreeMap<String, Index> {
        let rows = sqlx::query(
            "SELECT name, tbl_name, sql FROM sqlite_master
             WHERE type = 'index' AND sql IS NOT NULL
               AND tbl_name LIKE 'aibridge%' AND tbl_name <> 'aibridge_schema_migrations'",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.get(0),
                    Index {
                        table: r.get(1),
                        definition: r.get::<String, _>(2).to_lowercase(),
                    },
                )
            })
            .collect()
    }

    async fn delete_interception(&self, id: RecordId) {
        let done = sqlx::query("DELETE FROM aibridge_interceptions WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }

    async fn applied_versions(&self) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM aibridge_schema_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn delete_token_usage(&self, id: RecordId) {
        let done = sqlx::query("DELETE FROM aibridge_token_usages WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }

    async fn full_scan_spend(&self, since: std::time::SystemTime) -> Vec<ActorSpend> {
        let rows: Vec<(String, i64, i64, i64, i64, f64)> = sqlx::query_as(
            "SELECT i.initiator_id, \
             COALESCE(SUM(t.input_tokens), 0), COALESCE(SUM(t.output_tokens), 0), \
             COALESCE(SUM(t.cache_read_input_tokens), 0), \
             COALESCE(SUM(t.cache_write_input_tokens), 0), TOTAL(t.cost_usd) \
             FROM aibridge_token_usages t \
             JOIN aibridge_interceptions i ON i.id = t.interception_id \
             WHERE t.created_at >= ?1 GROUP BY i.initiator_id",
        )
        .bind(crate::recorder::sql::format_timestamp(since).unwrap())
        .fetch_all(&self.pool)
        .await
        .unwrap();
        super::to_spend(rows)
    }
}

/// A temporary directory with a database file URL in it.
fn temp_db() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aibridge.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    (dir, path, url)
}

#[tokio::test]
async fn file_database_conforms() {
    let (_dir, path, url) = temp_db();
    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let db = SqliteDb::open(&path).await;
    conformance(&rec, &db).await;
}

#[tokio::test]
async fn memory_database_conforms() {
    let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    let db = SqliteDb::of(&rec);
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    conformance(&rec, &db).await;
}

#[tokio::test]
async fn memory_databases_are_private() {
    let a = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    let b = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    a.record_interception(&full_interception()).await.unwrap();
    assert_eq!(SqliteDb::of(&a).count("aibridge_interceptions").await, 1);
    assert_eq!(SqliteDb::of(&b).count("aibridge_interceptions").await, 0);
}

#[tokio::test]
async fn driver_settings_are_applied() {
    let (_dir, path, url) = temp_db();
    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let pool = rec.pool();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(busy, 5_000);
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(synchronous, 1, "NORMAL");
    assert_eq!(pool.options().get_max_connections(), 1);
    assert!(path.exists(), "mode=rwc created the file");
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let (_dir, path, url) = temp_db();
    let first = SqliteRecorder::connect(&url).await.unwrap();
    let i = full_interception();
    first.record_interception(&i).await.unwrap();
    drop(first);

    let second = SqliteRecorder::connect(&url).await.unwrap();
    // A third instance while the second is still open.
    let third = SqliteRecorder::connect(&url).await.unwrap();
    let db = SqliteDb::open(&path).await;
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    assert_eq!(db.count("aibridge_interceptions").await, 1);
    assert!(db.row("aibridge_interceptions", i.id).await.is_some());
    second
        .record_interception(&full_interception())
        .await
        .unwrap();
    third
        .record_interception(&full_interception())
        .await
        .unwrap();
    assert_eq!(db.count("aibridge_interceptions").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_to_a_new_file_all_succeed() {
    let (_dir, path, url) = temp_db();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        handles.push(tokio::spawn(
            async move { SqliteRecorder::connect(&url).await },
        ));
    }
    let mut recorders = Vec::new();
    for h in handles {
        recorders.push(h.await.unwrap().unwrap());
    }
    let db = SqliteDb::open(&path).await;
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    for rec in &recorders {
        rec.record_interception(&full_interception()).await.unwrap();
    }
    assert_eq!(db.count("aibridge_interceptions").await, 4);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let (_dir, path, url) = temp_db();
    drop(SqliteRecorder::connect(&url).await.unwrap());
    let db = SqliteDb::open(&path).await;
    sqlx::query(
        "INSERT INTO aibridge_schema_migrations (version, description, applied_at)
         VALUES (4, 'from the future', '2030-01-01T00:00:00.000000Z')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let err = SqliteRecorder::connect(&url).await.unwrap_err();
    assert!(matches!(err, RecorderError::Migrate(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot apply the database migrations: \
         database schema version 4 is newer than this aibridge supports (3)"
    );
    // Nothing was changed.
    assert_eq!(db.applied_versions().await, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_all_land() {
    let (_dir, path, url) = temp_db();
    let rec: Arc<dyn Recorder> = Arc::new(SqliteRecorder::connect(&url).await.unwrap());
    let db = SqliteDb::open(&path).await;
    concurrent_writes(&[rec], &db, 8, 200).await;
    assert_eq!(db.count("aibridge_interceptions").await, 1_600);
}

#[tokio::test]
async fn a_failing_record_in_a_group_commit_fails_alone() {
    let (_dir, path, url) = temp_db();
    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let db = SqliteDb::open(&path).await;
    let parent = full_interception();
    rec.record_interception(&parent).await.unwrap();
    // Submitted together, so the writer commits them as one group; the one whose
    // interception does not exist violates the foreign key.
    let usages: Vec<_> = (0..40)
        .map(|i| {
            let owner = if i == 17 { RecordId::new() } else { parent.id };
            super::token_usage(owner)
        })
        .collect();
    let results = futures::future::join_all(usages.iter().map(|u| rec.record_token_usage(u))).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_err(), i == 17, "record {i}: {r:?}");
    }
    let msg = results[17].as_ref().unwrap_err().to_string();
    assert!(msg.starts_with("cannot record token usage "), "{msg}");
    assert_eq!(db.count("aibridge_token_usages").await, 39);
}

#[tokio::test]
async fn connect_errors() {
    let dir = tempfile::tempdir().unwrap();

    // Without mode=rwc a missing file is not created.
    let missing = dir.path().join("missing.db");
    let url = format!("sqlite://{}", missing.display());
    let err = SqliteRecorder::connect(&url).await.unwrap_err();
    assert!(matches!(err, RecorderError::Connect(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot connect to the database: sqlite://"),
        "{msg}"
    );
    assert!(msg.contains("missing.db"), "{msg}");
    assert!(!missing.exists());

    // An invalid URL parameter.
    let url = format!("sqlite://{}?mode=bogus", missing.display());
    let err = SqliteRecorder::connect(&url).await.unwrap_err();
    assert!(matches!(err, RecorderError::Connect(_)), "{err:?}");
    assert!(err.to_string().contains("bogus"), "{err}");

    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let url = format!("sqlite://{}", junk.display());
    let err = SqliteRecorder::connect(&url).await.unwrap_err();
    assert!(
        matches!(err, RecorderError::Connect(_) | RecorderError::Migrate(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn debug_names_the_type_and_url() {
    let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    assert_eq!(
        format!("{rec:?}"),
        "SqliteRecorder { url: \"sqlite::memory:\", .. }"
    );
}

#[tokio::test]
async fn json_columns_work_with_sqlite_json_functions() {
    let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    let i = full_interception();
    rec.record_interception(&i).await.unwrap();
    let t = super::token_usage(i.id);
    rec.record_token_usage(&t).await.unwrap();
    let pool = rec.pool();
    let team: String = sqlx::query_scalar(
        "SELECT json_extract(metadata, '$.team') FROM aibridge_interceptions WHERE id = ?",
    )
    .bind(i.id.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(team, "core");
    let reasoning: i64 = sqlx::query_scalar(
        "SELECT json_extract(extra, '$.reasoning_tokens') FROM aibridge_token_usages
         WHERE json_valid(extra) AND id = ?",
    )
    .bind(t.id.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(reasoning, 12);
}

/// The timestamp formatter agrees with SQLite's own date arithmetic (an independent
/// implementation of the calendar) over a wide range of instants.
#[tokio::test]
async fn timestamps_agree_with_sqlite_strftime() {
    use std::time::{Duration, UNIX_EPOCH};
    let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    let pool = rec.pool();
    let mut secs: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    let end: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let step: i64 = 86_400 * 97 + 3_607; // walks through every month, day and hour
    let mut checked = 0;
    while secs <= end {
        let t = if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, 250_000)
        } else {
            UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::from_nanos(250_000)
        };
        let ours = super::super::format_timestamp(t).unwrap();
        let theirs: String =
            sqlx::query_scalar("SELECT strftime('%Y-%m-%dT%H:%M:%S', ?, 'unixepoch')")
                .bind(secs)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(ours, format!("{theirs}.000250Z"), "at {secs}");
        secs += step;
        checked += 1;
    }
    assert!(checked > 30_000, "{checked}");
}

#[test]
fn connect_options_parse_the_documented_urls() {
    // The URL forms documented on `connect` are understood by the driver.
    for url in [
        "sqlite://aibridge.db?mode=rwc",
        "sqlite://aibridge.db",
        "sqlite::memory:",
    ] {
        SqliteConnectOptions::from_str(url).unwrap();
    }
}

/// Whether a future is still pending after one poll (it is dropped then).
fn pending_after_one_poll<F: Future>(f: F) -> bool {
    use futures::FutureExt as _;
    f.now_or_never().is_none()
}

// The tests below pause the writer thread (they hold its gate across awaits on purpose):
// what is queued while it is paused is exactly what the test polled.

#[allow(
    clippy::await_holding_lock,
    reason = "the gate pauses the writer thread"
)]
#[tokio::test]
async fn writes_whose_caller_is_gone_are_skipped() {
    let (_dir, path, url) = temp_db();
    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let db = SqliteDb::open(&path).await;
    let gate = rec.pause_writer();
    // Calls that are polled once (their writes queued) and then dropped, as when the record
    // queue's call timeout fires while the database stalls.
    for _ in 0..50 {
        let gone = full_interception();
        assert!(pending_after_one_poll(rec.record_interception(&gone)));
    }
    drop(gate);
    // Queued behind them: when it is answered, the writer has gone past them.
    let kept = full_interception();
    rec.record_interception(&kept).await.unwrap();
    assert_eq!(db.count("aibridge_interceptions").await, 1);
    assert!(db.row("aibridge_interceptions", kept.id).await.is_some());
}

#[allow(
    clippy::await_holding_lock,
    reason = "the gate pauses the writer thread"
)]
#[tokio::test]
async fn a_full_writer_queue_makes_callers_wait() {
    let (_dir, path, url) = temp_db();
    let rec = SqliteRecorder::connect_with_queue(&url, 4).await.unwrap();
    let db = SqliteDb::open(&path).await;
    assert_eq!(rec.queue_room(), 4);
    let records: Vec<_> = (0..6).map(|_| full_interception()).collect();
    let gate = rec.pause_writer();
    let mut calls: Vec<_> = records.iter().map(|r| rec.record_interception(r)).collect();
    for call in &mut calls {
        assert!(futures::poll!(call.as_mut()).is_pending());
    }
    // Six calls polled, four writes queued: the other two wait for room, not in the queue.
    assert_eq!(rec.queue_room(), 0);
    drop(gate);
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(db.count("aibridge_interceptions").await, 6);
    assert_eq!(rec.queue_room(), 4);
}

/// Counts the token-usage calls reaching a recorder.
#[derive(Debug)]
struct CountTokenCalls<R> {
    inner: R,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl<R: Recorder> Recorder for CountTokenCalls<R> {
    async fn record_interception(
        &self,
        r: &crate::recorder::Interception,
    ) -> Result<(), crate::BoxError> {
        self.inner.record_interception(r).await
    }
    async fn record_interception_ended(
        &self,
        r: &crate::recorder::InterceptionEnded,
    ) -> Result<(), crate::BoxError> {
        self.inner.record_interception_ended(r).await
    }
    async fn record_token_usage(
        &self,
        r: &crate::recorder::TokenUsage,
    ) -> Result<(), crate::BoxError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.record_token_usage(r).await
    }
    async fn record_prompt_usage(
        &self,
        r: &crate::recorder::PromptUsage,
    ) -> Result<(), crate::BoxError> {
        self.inner.record_prompt_usage(r).await
    }
    async fn record_tool_usage(
        &self,
        r: &crate::recorder::ToolUsage,
    ) -> Result<(), crate::BoxError> {
        self.inner.record_tool_usage(r).await
    }
    async fn record_model_thought(
        &self,
        r: &crate::recorder::ModelThought,
    ) -> Result<(), crate::BoxError> {
        self.inner.record_model_thought(r).await
    }
}

#[tokio::test]
async fn records_that_can_never_be_written_fail_at_once_in_the_record_queue() {
    use crate::recorder::Delivery;
    use crate::recorder::queue::RecordQueue;
    use crate::recorder::{PermanentError, RecordKind, RecordQueueConfig};
    let rec = Arc::new(CountTokenCalls {
        inner: SqliteRecorder::connect("sqlite::memory:").await.unwrap(),
        calls: Default::default(),
    });
    let parent = full_interception();
    rec.record_interception(&parent).await.unwrap();

    // Both errors as the recorder returns them: marked permanent.
    let orphan = super::token_usage(RecordId::new()); // its interception does not exist
    let e = rec.inner.record_token_usage(&orphan).await.unwrap_err();
    assert!(PermanentError::is_in(&*e), "{e}");
    assert!(
        e.to_string().starts_with("cannot record token usage "),
        "{e}"
    );
    let mut huge = super::token_usage(parent.id);
    huge.input_tokens = u64::MAX; // does not fit a BIGINT
    let e = rec.inner.record_token_usage(&huge).await.unwrap_err();
    assert!(PermanentError::is_in(&*e), "{e}");

    let q = RecordQueue::start(rec.clone(), RecordQueueConfig::default());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    q.set_hook(Arc::new(move |k, d| s.lock().unwrap().push((k, d))));
    let sink = q.sink(parent.id);
    sink.push(crate::recorder::Record::TokenUsage(orphan)).await;
    sink.push(crate::recorder::Record::TokenUsage(huge)).await;
    sink.end(super::ended(
        parent.id,
        crate::recorder::Outcome::Completed,
        None,
    ))
    .await;
    let left = q
        .drain(tokio::time::Instant::now() + std::time::Duration::from_secs(30))
        .await;
    assert_eq!(left, 0);
    assert_eq!(
        rec.calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one call each through the queue: no retry"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .filter(|o| **o == (RecordKind::TokenUsage, Delivery::Failed))
            .count(),
        2,
        "{seen:?}"
    );
    assert!(seen.contains(&(RecordKind::InterceptionEnded, Delivery::Written)));
}

/// A database made by the first schema (before `cost_usd`) is upgraded in place on
/// connect: its rows stay, their cost is NULL, and new rows carry their cost.
#[tokio::test]
async fn a_version_1_database_upgrades_in_place() {
    let (_dir, path, url) = temp_db();
    let opts = SqliteConnectOptions::from_str(&url).unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let v1 = crate::recorder::sql::migrations::SQLITE[0];
    assert_eq!(v1.version, 1);
    sqlx::Executor::execute(&pool, v1.sql).await.unwrap();
    sqlx::Executor::execute(
        &pool,
        "CREATE TABLE aibridge_schema_migrations (
             version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL,
             applied_at TEXT NOT NULL);
         INSERT INTO aibridge_schema_migrations VALUES (1, 'init', '2026-11-01T00:00:00.000000Z');
         INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name, api, model,
             streaming, client, credential_kind, started_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'alice', 'anthropic', 'anthropic',
             'messages', 'claude-x', 0, 'unknown', 'centralized', '2026-11-01T00:00:00.000000Z');
         INSERT INTO aibridge_token_usages (id, interception_id, input_tokens, output_tokens,
             cache_read_input_tokens, cache_write_input_tokens, created_at)
         VALUES ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001',
             10, 20, 0, 0, '2026-11-01T00:00:01.000000Z');",
    )
    .await
    .unwrap();
    pool.close().await;

    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let db = SqliteDb::open(&path).await;
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    let old = db
        .row(
            "aibridge_token_usages",
            RecordId::from_str("00000000-0000-4000-8000-000000000002").unwrap(),
        )
        .await
        .expect("the old row survives the upgrade");
    assert_eq!(old["input_tokens"], Cell::Int(10));
    assert_eq!(old["cost_usd"], Cell::Null);

    let i = full_interception();
    rec.record_interception(&i).await.unwrap();
    let t = super::token_usage(i.id);
    rec.record_token_usage(&t).await.unwrap();
    let new = db.row("aibridge_token_usages", t.id).await.unwrap();
    assert_eq!(new["cost_usd"], Cell::Real(0.012_345));
}

/// The `SpendSource` read: per actor, the sums of the token usage created at or after
/// `since` (older records and other actors apart; records without a price add no dollars).
#[tokio::test]
async fn spend_since_sums_token_usage_per_actor_from_a_time() {
    use crate::policy::{ActorSpend, SpendSource};
    let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    let alice = full_interception(); // user-42
    let bob = super::minimal_interception(); // user-7
    rec.record_interception(&alice).await.unwrap();
    rec.record_interception(&bob).await.unwrap();
    let t = super::token_usage(alice.id); // created at T0 + 1 s
    let since = t.created_at;
    let mut old = super::token_usage(alice.id);
    old.created_at = since - std::time::Duration::from_micros(1);
    let mut unpriced = super::token_usage(alice.id);
    unpriced.cost_usd = None;
    unpriced.created_at = since + std::time::Duration::from_secs(60);
    let mut other = super::token_usage(bob.id);
    other.input_tokens = 5;
    for u in [&t, &old, &unpriced, &other] {
        rec.record_token_usage(u).await.unwrap();
    }
    let mut rows = rec.spend_since(since).await.unwrap();
    rows.sort_by(|a, b| a.actor.cmp(&b.actor));
    assert_eq!(
        rows,
        vec![
            ActorSpend::new(
                "user-42",
                [2 * 1_200, 2 * 345, 2 * 9_000_000_000, 2 * 7],
                0.012_345
            ),
            ActorSpend::new("user-7", [5, 345, 9_000_000_000, 7], 0.012_345),
        ]
    );
    assert!(
        rec.spend_since(unpriced.created_at + std::time::Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
}

/// S20: the recorder resolves a presented Responses id (the first upstream response of an
/// interception) to the interception's last one, from its token-usage rows.
#[tokio::test]
async fn presented_response_ids_resolve_to_the_last_of_their_interception() {
    use crate::recorder::ResponseIds;
    let rec = SqliteRecorder::connect("sqlite::memory:").await.unwrap();
    let interception = full_interception();
    rec.record_interception(&interception).await.unwrap();
    for (n, id) in ["resp_1", "resp_2", "resp_3"].into_iter().enumerate() {
        let mut t = super::token_usage(interception.id);
        t.provider_response_id = Some(id.to_owned());
        t.created_at = super::at(1_700_000_000 + n as u64, 0);
        rec.record_token_usage(&t).await.unwrap();
    }
    assert_eq!(
        rec.last_upstream_id("resp_1").await.unwrap().as_deref(),
        Some("resp_3")
    );
    assert_eq!(
        rec.last_upstream_id("resp_3").await.unwrap().as_deref(),
        Some("resp_3")
    );
    assert_eq!(rec.last_upstream_id("resp_unknown").await.unwrap(), None);
}

/// The daily spend table gives the full scan's figures (file database: the writer thread's
/// connection runs the triggers, the read pool reads).
#[tokio::test]
async fn daily_spend_matches_a_full_scan() {
    let (_dir, path, url) = temp_db();
    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let db = SqliteDb::open(&path).await;
    spend_matches_a_full_scan(&rec, &rec, &db).await;
}

/// A database of migration 0002 with token usage over two days and two actors is upgraded
/// in place: the daily spend table is filled from the existing rows, and later rows add to
/// it.
#[tokio::test]
async fn a_version_2_database_upgrades_in_place_with_its_spend() {
    use crate::policy::SpendSource;
    let (_dir, path, url) = temp_db();
    let opts = SqliteConnectOptions::from_str(&url).unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    for m in &crate::recorder::sql::migrations::SQLITE[..2] {
        sqlx::Executor::execute(&pool, m.sql).await.unwrap();
    }
    sqlx::Executor::execute(
        &pool,
        "CREATE TABLE aibridge_schema_migrations (
             version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL,
             applied_at TEXT NOT NULL);
         INSERT INTO aibridge_schema_migrations VALUES
             (1, 'init', '2026-11-01T00:00:00.000000Z'),
             (2, 'token usage cost', '2026-11-02T00:00:00.000000Z');
         INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name, api, model,
             streaming, client, credential_kind, started_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'alice', 'anthropic', 'anthropic',
                 'messages', 'claude-x', 0, 'unknown', 'centralized', '2026-11-01T23:00:00.000000Z'),
                ('00000000-0000-4000-8000-000000000002', 'bob', 'anthropic', 'anthropic',
                 'messages', 'claude-x', 0, 'unknown', 'centralized', '2026-11-02T01:00:00.000000Z');
         INSERT INTO aibridge_token_usages (id, interception_id, input_tokens, output_tokens,
             cache_read_input_tokens, cache_write_input_tokens, created_at, cost_usd)
         VALUES ('00000000-0000-4000-8000-000000000011', '00000000-0000-4000-8000-000000000001',
                 10, 20, 1, 2, '2026-11-01T23:59:59.999999Z', 0.5),
                ('00000000-0000-4000-8000-000000000012', '00000000-0000-4000-8000-000000000001',
                 100, 200, 0, 0, '2026-11-02T00:00:00.000000Z', NULL),
                ('00000000-0000-4000-8000-000000000013', '00000000-0000-4000-8000-000000000002',
                 1000, 0, 0, 0, '2026-11-02T05:00:00.000000Z', 2.0);",
    )
    .await
    .unwrap();
    pool.close().await;

    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let db = SqliteDb::open(&path).await;
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    let daily: Vec<(String, String, i64, i64, f64)> = sqlx::query_as(
        "SELECT initiator_id, day, input_tokens + output_tokens + cache_read_input_tokens \
         + cache_write_input_tokens, records, cost_usd FROM aibridge_spend_daily \
         ORDER BY initiator_id, day",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        daily,
        [
            ("alice".to_owned(), "2026-11-01".to_owned(), 33, 1, 0.5),
            ("alice".to_owned(), "2026-11-02".to_owned(), 300, 1, 0.0),
            ("bob".to_owned(), "2026-11-02".to_owned(), 1000, 1, 2.0),
        ]
    );
    let nov2 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_793_577_600);
    assert_eq!(
        crate::recorder::sql::format_timestamp(nov2).unwrap(),
        "2026-11-02T00:00:00.000000Z"
    );
    let mut before = rec.spend_since(nov2).await.unwrap();
    before.sort_by(|a, b| a.actor.cmp(&b.actor));
    assert_eq!(before, db.full_scan_spend(nov2).await);

    let i = full_interception(); // user-42
    rec.record_interception(&i).await.unwrap();
    let t = super::token_usage(i.id);
    rec.record_token_usage(&t).await.unwrap();
    let since = std::time::UNIX_EPOCH;
    let mut after = rec.spend_since(since).await.unwrap();
    after.sort_by(|a, b| a.actor.cmp(&b.actor));
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[2].actor, "user-42");
    assert_eq!(
        after[2].tokens(),
        t.input_tokens + t.output_tokens + t.cache_read_input_tokens + t.cache_write_input_tokens
    );
    assert_eq!(after[0].tokens(), 333);
}

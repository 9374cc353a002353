//! The conformance suite and PostgreSQL-specific checks against `PostgresRecorder`, on a
//! throwaway PostgreSQL cluster per test (see [`PgServer`] in `pg_server.rs`).
//!
//! These tests need the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`). On
//! Debian/Ubuntu: `apt-get install -y postgresql`; they are found under
//! `/usr/lib/postgresql/<version>/bin`, in `$AIBRIDGE_TEST_PG_BIN`, or on `PATH`. Without
//! them the tests fail (they never pass silently).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::pg_server::{PgServer, free_port};
use super::{
    Backend, Cell, Column, Db, Index, check_schema, concurrent_writes, conformance,
    full_interception, minimal_interception, prompt_usage, spend_matches_a_full_scan, token_usage,
    tool_usage,
};
use crate::policy::ActorSpend;
use crate::recorder::sql::PostgresRecorder;
use crate::recorder::{Interception, RecordId, Recorder, RecorderError};

// ---------------------------------------------------------------------------------------
// The inspector
// ---------------------------------------------------------------------------------------

/// Raw access to a PostgreSQL database; rows come back in the SQLite encoding.
pub(super) struct PgDb {
    pub(super) pool: PgPool,
}

impl PgDb {
    pub(super) async fn connect(url: &str) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .unwrap();
        Self { pool }
    }
}

#[async_trait::async_trait]
impl Db for PgDb {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn row(&self, table: &str, id: RecordId) -> Option<BTreeMap<String, Cell>> {
        let cols = self.columns(table).await;
        let select: Vec<String> = cols
            .iter()
            .map(|c| {
                let n = &c.name;
                match c.ty.as_str() {
                    "uuid" | "jsonb" => format!("{n}::text"),
                    "boolean" => format!("{n}::int::bigint"),
                    "timestamp with time zone" => format!(
                        "to_char({n} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                    ),
                    _ => n.clone(),
                }
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM {table} WHERE id = $1::uuid",
            select.join(", ")
        );
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .unwrap()?;
        let mut out = BTreeMap::new();
        for (i, c) in cols.iter().enumerate() {
            let cell = match c.ty.as_str() {
                "bigint" | "boolean" => row.get::<Option<i64>, _>(i).map(Cell::Int),
                "double precision" => row.get::<Option<f64>, _>(i).map(Cell::Real),
                _ => row.get::<Option<String>, _>(i).map(Cell::Text),
            };
            out.insert(c.name.clone(), cell.unwrap_or(Cell::Null));
        }
        Some(out)
    }

    async fn columns(&self, table: &str) -> Vec<Column> {
        let rows = sqlx::query(
            "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1
             ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.iter()
            .map(|r| Column {
                name: r.get(0),
                ty: r.get::<String, _>(1).to_lowercase(),
                not_null: r.get::<String, _>(2) == "NO",
                default: r.get::<Option<String>, _>(3).map(|d| d.to_lowercase()),
            })
            .collect()
    }

    async fn indexes(&self) -> BTreeMap<String, Index> {
        let rows = sqlx::query(
            "SELECT indexname::text, tablename::text, indexdef
             FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename LIKE 'aibridge%'
               AND tablename <> 'aibridge_schema_migrations' AND indexname NOT LIKE '%_pkey'",
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
        let done = sqlx::query("DELETE FROM aibridge_interceptions WHERE id = $1::uuid")
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
        let done = sqlx::query("DELETE FROM aibridge_token_usages WHERE id = $1::uuid")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }

    async fn full_scan_spend(&self, since: std::time::SystemTime) -> Vec<ActorSpend> {
        let rows: Vec<(String, i64, i64, i64, i64, f64)> = sqlx::query_as(
            "SELECT i.initiator_id, \
             COALESCE(SUM(t.input_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.output_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.cache_read_input_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.cache_write_input_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.cost_usd), 0)::DOUBLE PRECISION \
             FROM aibridge_token_usages t \
             JOIN aibridge_interceptions i ON i.id = t.interception_id \
             WHERE t.created_at >= $1::TIMESTAMPTZ GROUP BY i.initiator_id",
        )
        .bind(crate::recorder::sql::format_timestamp(since).unwrap())
        .fetch_all(&self.pool)
        .await
        .unwrap();
        super::to_spend(rows)
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn postgres_conforms() {
    let server = PgServer::start();
    let url = server.create_database("conformance").await;
    let rec = PostgresRecorder::connect(&url).await.unwrap();
    let db = PgDb::connect(&url).await;
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    conformance(&rec, &db).await;
}

#[tokio::test]
async fn pool_sizes() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let rec = PostgresRecorder::connect(&url).await.unwrap();
    assert_eq!(rec.pool().options().get_max_connections(), 10);
    let rec = PostgresRecorder::connect_with(&url, 3).await.unwrap();
    assert_eq!(rec.pool().options().get_max_connections(), 3);
    let err = PostgresRecorder::connect_with(&url, 0).await.unwrap_err();
    assert!(matches!(err, RecorderError::Connect(_)), "{err:?}");
    assert!(err.to_string().contains("max_connections"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_recorders_writing_concurrently_lose_nothing() {
    let server = PgServer::start();
    let url = server.create_database("two_pools").await;
    let a: Arc<dyn Recorder> = Arc::new(PostgresRecorder::connect(&url).await.unwrap());
    let b: Arc<dyn Recorder> = Arc::new(PostgresRecorder::connect_with(&url, 4).await.unwrap());
    let db = PgDb::connect(&url).await;
    concurrent_writes(&[a, b], &db, 8, 200).await;
    assert_eq!(db.count("aibridge_interceptions").await, 1_600);
    assert_eq!(db.count("aibridge_token_usages").await, 1_600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_succeed() {
    let server = PgServer::start();
    let url = server.create_database("concurrent_migrations").await;
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            PostgresRecorder::connect(&url).await
        }));
    }
    let mut recorders = Vec::new();
    for h in handles {
        recorders.push(h.await.unwrap().unwrap());
    }
    let db = PgDb::connect(&url).await;
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    check_schema(&db).await;
    for rec in &recorders {
        rec.record_interception(&full_interception()).await.unwrap();
    }
    assert_eq!(db.count("aibridge_interceptions").await, 4);
}

/// `connect` waits for the migration lock held by another replica before touching the
/// schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_wait_for_the_advisory_lock() {
    use sqlx::Connection as _;
    let server = PgServer::start();
    let url = server.create_database("advisory_lock").await;
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(crate::recorder::sql::migrations::PG_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();

    let task = tokio::spawn({
        let url = url.clone();
        async move { PostgresRecorder::connect(&url).await }
    });
    let db = PgDb::connect(&url).await;
    // Wait (bounded) until the connecting session queues behind the lock.
    let waiting = async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("connect never waited for the advisory lock");
    assert!(!task.is_finished());
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('aibridge_schema_migrations') IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!exists, "nothing is created before the lock is granted");

    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(crate::recorder::sql::migrations::PG_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let rec = task.await.unwrap().unwrap();
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    rec.record_interception(&full_interception()).await.unwrap();
    // The lock is not left held by the recorder.
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let server = PgServer::start();
    let url = server.create_database("idempotent").await;
    let first = PostgresRecorder::connect(&url).await.unwrap();
    let i = full_interception();
    first.record_interception(&i).await.unwrap();
    drop(first);
    let second = PostgresRecorder::connect(&url).await.unwrap();
    let db = PgDb::connect(&url).await;
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    assert!(db.row("aibridge_interceptions", i.id).await.is_some());
    second
        .record_interception(&full_interception())
        .await
        .unwrap();
    assert_eq!(db.count("aibridge_interceptions").await, 2);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let server = PgServer::start();
    let url = server.create_database("newer").await;
    drop(PostgresRecorder::connect(&url).await.unwrap());
    let db = PgDb::connect(&url).await;
    sqlx::query(
        "INSERT INTO aibridge_schema_migrations (version, description, applied_at)
         VALUES (7, 'from the future', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let err = PostgresRecorder::connect(&url).await.unwrap_err();
    assert!(matches!(err, RecorderError::Migrate(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot apply the database migrations: \
         database schema version 7 is newer than this aibridge supports (3)"
    );
    assert_eq!(db.applied_versions().await, [1, 2, 3, 7]);
    // The lock was released despite the failure: another connect gets the same answer
    // instead of hanging.
    let err = tokio::time::timeout(Duration::from_secs(30), PostgresRecorder::connect(&url))
        .await
        .expect("the advisory lock was left held")
        .unwrap_err();
    assert!(matches!(err, RecorderError::Migrate(_)), "{err:?}");
}

#[tokio::test]
async fn passwords_never_show() {
    let server = PgServer::start();
    let secret = "hunter2-Sekr3t";

    // trust authentication ignores the password, so this connects.
    let url = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/postgres",
        server.port
    );
    let rec = PostgresRecorder::connect(&url).await.unwrap();
    let debug = format!("{rec:?}");
    assert_eq!(
        debug,
        format!(
            "PostgresRecorder {{ url: \"postgres://postgres:***@127.0.0.1:{}/postgres\", .. }}",
            server.port
        )
    );

    // A database that does not exist.
    let url = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/no_such_db",
        server.port
    );
    let err = PostgresRecorder::connect(&url).await.unwrap_err();
    assert!(matches!(err, RecorderError::Connect(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no_such_db"), "{msg}");
    assert!(msg.contains("postgres:***@"), "{msg}");
    assert!(!msg.contains(secret), "{msg}");
    assert!(!format!("{err:?}").contains(secret));

    // Nobody listening.
    let url = format!("postgres://postgres:{secret}@127.0.0.1:{}/x", free_port());
    let err = PostgresRecorder::connect(&url).await.unwrap_err();
    assert!(matches!(err, RecorderError::Connect(_)), "{err:?}");
    assert!(!err.to_string().contains(secret), "{err}");

    // An invalid URL, password in the query string.
    let url = format!("postgres://127.0.0.1:notaport/x?password={secret}");
    let err = PostgresRecorder::connect(&url).await.unwrap_err();
    assert!(matches!(err, RecorderError::Connect(_)), "{err:?}");
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(!format!("{err:?}").contains(secret));
}

/// NUL characters, which PostgreSQL cannot store in TEXT or JSONB, are replaced rather
/// than making the record fail on every retry.
#[tokio::test]
async fn nul_characters_are_stored_as_replacement_characters() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let rec = PostgresRecorder::connect(&url).await.unwrap();
    let db = PgDb::connect(&url).await;
    let i = Interception {
        model: "m\0x".to_owned(),
        metadata: BTreeMap::from([("k\0".to_owned(), "v\0".to_owned())]),
        ..minimal_interception()
    };
    rec.record_interception(&i).await.unwrap();
    let r = db.row("aibridge_interceptions", i.id).await.unwrap();
    assert_eq!(r["model"], Cell::Text("m\u{FFFD}x".to_owned()));
    let Cell::Text(meta) = &r["metadata"] else {
        panic!()
    };
    let meta: serde_json::Value = serde_json::from_str(meta).unwrap();
    assert_eq!(meta, serde_json::json!({"k\u{FFFD}": "v\u{FFFD}"}));

    let p = crate::recorder::PromptUsage {
        prompt: "a\0b".to_owned(),
        ..prompt_usage(i.id)
    };
    rec.record_prompt_usage(&p).await.unwrap();
    let r = db.row("aibridge_user_prompts", p.id).await.unwrap();
    assert_eq!(r["prompt"], Cell::Text("a\u{FFFD}b".to_owned()));

    let t = crate::recorder::ToolUsage {
        input: "{\"q\":\"\\u0000\"}".to_owned(),
        ..tool_usage(i.id)
    };
    rec.record_tool_usage(&t).await.unwrap();
    let r = db.row("aibridge_tool_usages", t.id).await.unwrap();
    let Cell::Text(input) = &r["input"] else {
        panic!()
    };
    let input: serde_json::Value = serde_json::from_str(input).unwrap();
    assert_eq!(input, serde_json::json!({"q": "\u{FFFD}"}));
}

/// The example report query of the schema documentation runs and sums correctly.
#[tokio::test]
async fn documented_report_query_works() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let rec = PostgresRecorder::connect(&url).await.unwrap();
    let db = PgDb::connect(&url).await;
    let now = std::time::SystemTime::now();
    for user in ["alice", "alice", "bob"] {
        let i = Interception {
            initiator_id: user.to_owned(),
            started_at: now,
            ..minimal_interception()
        };
        rec.record_interception(&i).await.unwrap();
        rec.record_token_usage(&crate::recorder::TokenUsage {
            created_at: now,
            ..token_usage(i.id)
        })
        .await
        .unwrap();
    }
    // The query exactly as documented, wrapped to read its NUMERIC sums as text.
    let documented = "SELECT i.initiator_id,
               date_trunc('day', t.created_at) AS day,
               sum(t.input_tokens)             AS input,
               sum(t.output_tokens)            AS output,
               sum(t.cache_read_input_tokens)  AS cache_read,
               sum(t.cache_write_input_tokens) AS cache_write
        FROM aibridge_token_usages t
        JOIN aibridge_interceptions i ON i.id = t.interception_id
        WHERE t.created_at >= now() - interval '7 days'
        GROUP BY 1, 2
        ORDER BY 2, 1";
    let rows = sqlx::query(&format!(
        "SELECT initiator_id, input::text, cache_read::text FROM ({documented}) q
         ORDER BY day, initiator_id"
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            (
                "alice".to_owned(),
                "2400".to_owned(),
                "18000000000".to_owned()
            ),
            ("bob".to_owned(), "1200".to_owned(), "9000000000".to_owned()),
        ]
    );
}

/// A lone UTF-16 surrogate escape is valid JSON text, but PostgreSQL's JSONB rejects it
/// ("unsupported Unicode escape sequence"), which used to fail such a tool call's row on
/// every retry. It is stored as U+FFFD; a proper surrogate pair is kept.
#[tokio::test]
async fn lone_surrogate_escapes_are_stored_as_replacement_characters() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let rec = PostgresRecorder::connect(&url).await.unwrap();
    let db = PgDb::connect(&url).await;
    let i = minimal_interception();
    rec.record_interception(&i).await.unwrap();
    let inputs = [
        (r#"{"a":"\ud800"}"#, serde_json::json!({"a": "\u{FFFD}"})),
        (
            r#"{"a":"x\uDC00y"}"#,
            serde_json::json!({"a": "x\u{FFFD}y"}),
        ),
        (
            r#"{"\ud83d":"\ud83d\ude00 \udbff\\ud800","b":["\udfff\ud800"]}"#,
            serde_json::json!({"\u{FFFD}": "😀 \u{FFFD}\\ud800", "b": ["\u{FFFD}\u{FFFD}"]}),
        ),
    ];
    for (input, want) in inputs {
        let t = crate::recorder::ToolUsage {
            input: input.to_owned(),
            ..tool_usage(i.id)
        };
        rec.record_tool_usage(&t)
            .await
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        let r = db.row("aibridge_tool_usages", t.id).await.unwrap();
        let Cell::Text(stored) = &r["input"] else {
            panic!()
        };
        let stored: serde_json::Value = serde_json::from_str(stored).unwrap();
        assert_eq!(stored, want, "{input}");
    }
}

/// Errors that writing the same record again cannot fix are marked permanent (the record
/// queue does not retry them); a database that is down is not.
#[tokio::test]
async fn postgres_errors_are_classified_permanent_or_transient() {
    use crate::recorder::PermanentError;
    let server = PgServer::start();
    let url = server.url("postgres");
    let rec = PostgresRecorder::connect_with(&url, 1).await.unwrap();
    let i = minimal_interception();
    rec.record_interception(&i).await.unwrap();

    // A foreign-key violation (23503).
    let orphan = token_usage(RecordId::new());
    let e = rec.record_token_usage(&orphan).await.unwrap_err();
    assert!(PermanentError::is_in(&*e), "{e}");
    assert!(
        e.to_string().starts_with("cannot record token usage "),
        "{e}"
    );
    // A count that does not fit a BIGINT (refused before it is sent).
    let mut huge = token_usage(i.id);
    huge.output_tokens = u64::MAX;
    let e = rec.record_token_usage(&huge).await.unwrap_err();
    assert!(PermanentError::is_in(&*e), "{e}");
    // JSON the server rejects (22P02, a data exception).
    let bad = crate::recorder::ToolUsage {
        input: "{\"a\":".to_owned(),
        ..tool_usage(i.id)
    };
    let e = sqlx::query("SELECT $1::jsonb")
        .bind(&bad.input)
        .execute(rec.pool())
        .await
        .unwrap_err();
    assert!(PermanentError::is_in(&*crate::recorder::sql::classify(
        e,
        crate::recorder::sql::postgres::is_permanent_code
    )));
    // Transient: a lock not available (55P03), a statement cancelled by its timeout (57014),
    // nobody listening (I/O), a closed pool.
    let transient = |e: sqlx::Error| {
        let e =
            crate::recorder::sql::classify(e, crate::recorder::sql::postgres::is_permanent_code);
        assert!(!PermanentError::is_in(&*e), "{e}");
        e.to_string()
    };
    let db = PgDb::connect(&url).await;
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM aibridge_interceptions WHERE id = $1::uuid FOR UPDATE")
        .bind(i.id.to_string())
        .execute(&mut *holder)
        .await
        .unwrap();
    let e =
        sqlx::query("SELECT id FROM aibridge_interceptions WHERE id = $1::uuid FOR UPDATE NOWAIT")
            .bind(i.id.to_string())
            .execute(rec.pool())
            .await
            .unwrap_err();
    assert!(transient(e).contains("could not obtain lock"));
    holder.rollback().await.unwrap();
    let mut conn = rec.pool().acquire().await.unwrap();
    sqlx::query("SET statement_timeout = 1")
        .execute(&mut *conn)
        .await
        .unwrap();
    let e = sqlx::query("SELECT pg_sleep(1)")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(transient(e).contains("statement timeout"));
    drop(conn);
    let nobody = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let e = <sqlx::PgConnection as sqlx::Connection>::connect(&nobody)
        .await
        .unwrap_err();
    transient(e);
    rec.pool().close().await;
    let e = rec
        .record_token_usage(&token_usage(i.id))
        .await
        .unwrap_err();
    assert!(!PermanentError::is_in(&*e), "{e}");
}

/// A database made by the first schema (before `cost_usd`) is upgraded in place on
/// connect: its rows stay, their cost is NULL, and new rows carry their cost.
#[tokio::test]
async fn a_version_1_database_upgrades_in_place() {
    let server = PgServer::start();
    let url = server.create_database("upgrade_v1").await;
    let db = PgDb::connect(&url).await;
    let v1 = crate::recorder::sql::migrations::POSTGRES[0];
    assert_eq!(v1.version, 1);
    sqlx::Executor::execute(&db.pool, v1.sql).await.unwrap();
    sqlx::Executor::execute(
        &db.pool,
        "CREATE TABLE aibridge_schema_migrations (
             version BIGINT PRIMARY KEY, description TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL);
         INSERT INTO aibridge_schema_migrations VALUES (1, 'init', now());
         INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name, api, model,
             streaming, client, credential_kind, started_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'alice', 'anthropic', 'anthropic',
             'messages', 'claude-x', false, 'unknown', 'centralized', now());
         INSERT INTO aibridge_token_usages (id, interception_id, input_tokens, output_tokens,
             cache_read_input_tokens, cache_write_input_tokens, created_at)
         VALUES ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001',
             10, 20, 0, 0, now());",
    )
    .await
    .unwrap();

    let rec = PostgresRecorder::connect(&url).await.unwrap();
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    let old_id: RecordId = "00000000-0000-4000-8000-000000000002".parse().unwrap();
    let old = db
        .row("aibridge_token_usages", old_id)
        .await
        .expect("the old row survives the upgrade");
    assert_eq!(old["input_tokens"], Cell::Int(10));
    assert_eq!(old["cost_usd"], Cell::Null);

    let i = full_interception();
    rec.record_interception(&i).await.unwrap();
    let t = token_usage(i.id);
    rec.record_token_usage(&t).await.unwrap();
    let new = db.row("aibridge_token_usages", t.id).await.unwrap();
    assert_eq!(new["cost_usd"], Cell::Real(0.012_345));
}

/// The daily spend table gives the full scan's figures; and with two recorders (replicas)
/// writing the same actors' records concurrently, the upserts of the daily rows lose
/// nothing.
#[tokio::test]
async fn daily_spend_matches_a_full_scan() {
    use crate::policy::SpendSource;
    let server = PgServer::start();
    let url = server.create_database("daily_spend").await;
    let rec = Arc::new(PostgresRecorder::connect(&url).await.unwrap());
    let db = PgDb::connect(&url).await;
    spend_matches_a_full_scan(rec.as_ref(), rec.as_ref(), &db).await;

    let other = Arc::new(PostgresRecorder::connect(&url).await.unwrap());
    let i = minimal_interception();
    rec.record_interception(&i).await.unwrap();
    let write = |r: Arc<PostgresRecorder>| {
        let id = i.id;
        tokio::spawn(async move {
            for _ in 0..50 {
                let mut t = token_usage(id);
                t.created_at = std::time::SystemTime::now();
                r.record_token_usage(&t).await.unwrap();
            }
        })
    };
    let (a, b) = (write(rec.clone()), write(other.clone()));
    a.await.unwrap();
    b.await.unwrap();
    let since = std::time::UNIX_EPOCH;
    let mut got = rec.spend_since(since).await.unwrap();
    got.sort_by(|a, b| a.actor.cmp(&b.actor));
    let want = db.full_scan_spend(since).await;
    assert_eq!(
        got.iter()
            .map(|s| (s.actor.clone(), s.tokens()))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|s| (s.actor.clone(), s.tokens()))
            .collect::<Vec<_>>()
    );
    let user7 = got.iter().find(|s| s.actor == "user-7").unwrap();
    assert_eq!(
        user7.input_tokens,
        100 * 1_200,
        "every concurrent record counted once"
    );
}

/// A database of migration 0002 with token usage over two days and two actors is upgraded
/// in place: the daily spend table is filled from the existing rows, and later rows add to
/// it.
#[tokio::test]
async fn a_version_2_database_upgrades_in_place_with_its_spend() {
    use crate::policy::SpendSource;
    let server = PgServer::start();
    let url = server.create_database("upgrade_v2").await;
    let db = PgDb::connect(&url).await;
    for m in &crate::recorder::sql::migrations::POSTGRES[..2] {
        sqlx::Executor::execute(&db.pool, m.sql).await.unwrap();
    }
    sqlx::Executor::execute(
        &db.pool,
        "CREATE TABLE aibridge_schema_migrations (
             version BIGINT PRIMARY KEY, description TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL);
         INSERT INTO aibridge_schema_migrations VALUES (1, 'init', now()),
             (2, 'token usage cost', now());
         INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name, api, model,
             streaming, client, credential_kind, started_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'alice', 'anthropic', 'anthropic',
                 'messages', 'claude-x', false, 'unknown', 'centralized', now()),
                ('00000000-0000-4000-8000-000000000002', 'bob', 'anthropic', 'anthropic',
                 'messages', 'claude-x', false, 'unknown', 'centralized', now());
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

    let rec = PostgresRecorder::connect(&url).await.unwrap();
    assert_eq!(db.applied_versions().await, [1, 2, 3]);
    let daily: Vec<(String, String, i64, i64, f64)> = sqlx::query_as(
        "SELECT initiator_id, day::text, (input_tokens + output_tokens + cache_read_input_tokens \
         + cache_write_input_tokens)::BIGINT, records, cost_usd FROM aibridge_spend_daily \
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
    let nov2 = std::time::UNIX_EPOCH + Duration::from_secs(1_793_577_600);
    let mut before = rec.spend_since(nov2).await.unwrap();
    before.sort_by(|a, b| a.actor.cmp(&b.actor));
    assert_eq!(before, db.full_scan_spend(nov2).await);

    let i = full_interception(); // user-42
    rec.record_interception(&i).await.unwrap();
    let t = token_usage(i.id);
    rec.record_token_usage(&t).await.unwrap();
    let mut after = rec.spend_since(std::time::UNIX_EPOCH).await.unwrap();
    after.sort_by(|a, b| a.actor.cmp(&b.actor));
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[2].actor, "user-42");
    assert_eq!(
        after[2].tokens(),
        t.input_tokens + t.output_tokens + t.cache_read_input_tokens + t.cache_write_input_tokens
    );
    assert_eq!(after[0].tokens(), 333);
}

//! The batching of `PostgresRecorder`'s queued records, on a real server: a group of mixed
//! kinds is one transaction, duplicates are ignored, a bad row fails alone, ends apply, and
//! records driven through the record queue with several groups in flight all land.
//!
//! A group is made deterministic by holding the recorder's only writer busy: a transaction
//! of the test locks an interception row `FOR UPDATE`, so a token usage of that
//! interception (its foreign-key check wants `FOR KEY SHARE`) waits in the writer; the
//! records of the group queue up behind it and are taken up together once the lock goes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Postgres, Transaction};
use tokio::task::JoinHandle;

use super::pg_server::PgServer;
use super::postgres::PgDb;
use super::{ended, minimal_interception, prompt_usage, thought, token_usage, tool_usage};
use crate::BoxError;
use crate::recorder::sql::PostgresRecorder;
use crate::recorder::{
    Outcome, PermanentError, Record, RecordId, Recorder, ThoughtSource, deliver,
};

/// The recorder's only writer, held busy until [`release`](Held::release).
struct Held {
    lock: Transaction<'static, Postgres>,
    blocker: JoinHandle<Result<(), BoxError>>,
}

impl Held {
    /// Lets the writer go on; the blocker is written.
    async fn release(self) {
        self.lock.rollback().await.unwrap();
        self.blocker.await.unwrap().unwrap();
    }
}

/// A recorder with one writer, and its database.
async fn one_writer(server: &PgServer, name: &str) -> (Arc<PostgresRecorder>, PgDb) {
    let url = server.create_database(name).await;
    let rec = PostgresRecorder::builder(&url)
        .max_connections(2)
        .writers(1)
        .connect()
        .await
        .unwrap();
    (Arc::new(rec), PgDb::connect(&url).await)
}

/// Waits (polling) until `check` holds, at most 10 s.
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Makes the writer wait on a locked row (see the module docs).
async fn hold(rec: &Arc<PostgresRecorder>, db: &PgDb) -> Held {
    let parent = minimal_interception();
    rec.record_interception(&parent).await.unwrap();
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM aibridge_interceptions WHERE id = $1::uuid FOR UPDATE")
        .bind(parent.id.to_string())
        .execute(&mut *lock)
        .await
        .unwrap();
    let r = rec.clone();
    let blocker = tokio::spawn(async move { r.record_token_usage(&token_usage(parent.id)).await });
    until("the writer waits on the lock", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    Held { lock, blocker }
}

/// Hands `records` to the recorder while its writer is held, waits until all of them are
/// queued, releases the writer and returns each record's result (in the given order).
async fn one_group(
    rec: &Arc<PostgresRecorder>,
    db: &PgDb,
    records: Vec<Record>,
) -> Vec<Result<(), BoxError>> {
    let held = hold(rec, db).await;
    let n = records.len();
    let calls: Vec<JoinHandle<Result<(), BoxError>>> = records
        .into_iter()
        .map(|record| {
            let r = rec.clone();
            tokio::spawn(async move { deliver(r.as_ref(), &record).await })
        })
        .collect();
    until("the group is queued", || async { rec.waiting() == n }).await;
    held.release().await;
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

/// The transaction ids (`xmin`) of the rows with these ids in `table`.
async fn xmins(db: &PgDb, table: &str, ids: &[RecordId]) -> Vec<String> {
    let ids: Vec<String> = ids.iter().map(RecordId::to_string).collect();
    sqlx::query_scalar(&format!(
        "SELECT xmin::text FROM {table} WHERE id = ANY($1::uuid[])"
    ))
    .bind(ids)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_mixed_kinds_is_one_transaction_with_duplicates_ignored_and_ends_applied() {
    let server = PgServer::start();
    let (rec, db) = one_writer(&server, "mixed").await;
    let (a, b) = (minimal_interception(), minimal_interception());
    rec.record_interception(&a).await.unwrap();
    rec.record_interception(&b).await.unwrap();
    // Written before: the group's record with the same id changes nothing.
    let mut earlier = prompt_usage(a.id);
    earlier.prompt = "the first write".to_owned();
    rec.record_prompt_usage(&earlier).await.unwrap();

    let token = token_usage(a.id);
    let mut twin = token.clone();
    twin.input_tokens = 1;
    let mut again = earlier.clone();
    again.prompt = "a retry".to_owned();
    let children = [
        Record::TokenUsage(token.clone()),
        Record::PromptUsage(prompt_usage(a.id)),
        Record::ToolUsage(tool_usage(a.id)),
        Record::ModelThought(thought(a.id, ThoughtSource::Thinking)),
        Record::TokenUsage(token_usage(b.id)),
        Record::TokenUsage(twin),
        Record::PromptUsage(again),
    ];
    // The ends first: the group writes them last all the same.
    let mut records = vec![
        Record::InterceptionEnded(ended(a.id, Outcome::Completed, None)),
        Record::InterceptionEnded(ended(b.id, Outcome::Failed, Some("upstream 500"))),
    ];
    let ids: Vec<RecordId> = children.iter().map(Record::id).collect();
    records.extend(children);
    let results = one_group(&rec, &db, records).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }

    let count = |table: &'static str, id: RecordId| {
        let db = &db;
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT COUNT(*) FROM {table} WHERE interception_id = $1::uuid"
            ))
            .bind(id.to_string())
            .fetch_one(&db.pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(count("aibridge_token_usages", a.id).await, 1);
    assert_eq!(count("aibridge_token_usages", b.id).await, 1);
    assert_eq!(count("aibridge_user_prompts", a.id).await, 2);
    assert_eq!(count("aibridge_tool_usages", a.id).await, 1);
    assert_eq!(count("aibridge_model_thoughts", a.id).await, 1);
    let (input, prompt): (i64, String) = sqlx::query_as(
        "SELECT t.input_tokens, p.prompt FROM aibridge_token_usages t, aibridge_user_prompts p \
         WHERE t.id = $1::uuid AND p.id = $2::uuid",
    )
    .bind(token.id.to_string())
    .bind(earlier.id.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(input == 1_200 || input == 1, "one of the twins: {input}");
    assert_eq!(prompt, "the first write");
    let ends: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT outcome, error FROM aibridge_interceptions WHERE id = ANY($1::uuid[]) \
         ORDER BY outcome",
    )
    .bind(vec![a.id.to_string(), b.id.to_string()])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        ends,
        [
            ("completed".to_owned(), None),
            ("failed".to_owned(), Some("upstream 500".to_owned()))
        ]
    );

    // One transaction: every row the group wrote (the ends' new row versions included)
    // carries the same transaction id.
    let mut txids = BTreeSet::new();
    for table in [
        "aibridge_token_usages",
        "aibridge_user_prompts",
        "aibridge_tool_usages",
        "aibridge_model_thoughts",
    ] {
        txids.extend(xmins(&db, table, &ids).await);
    }
    let earlier_txid = xmins(&db, "aibridge_user_prompts", &[earlier.id]).await;
    txids.remove(&earlier_txid[0]);
    txids.extend(xmins(&db, "aibridge_interceptions", &[a.id, b.id]).await);
    assert_eq!(txids.len(), 1, "{txids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_row_in_a_group_fails_alone() {
    let server = PgServer::start();
    let (rec, db) = one_writer(&server, "bad_row").await;
    let a = minimal_interception();
    rec.record_interception(&a).await.unwrap();
    let orphan = token_usage(RecordId::new());
    let good = [token_usage(a.id), token_usage(a.id)];
    let prompt = prompt_usage(a.id);
    let records = vec![
        Record::TokenUsage(good[0].clone()),
        Record::TokenUsage(orphan.clone()),
        Record::TokenUsage(good[1].clone()),
        Record::PromptUsage(prompt.clone()),
        Record::InterceptionEnded(ended(a.id, Outcome::Completed, None)),
    ];
    let results = one_group(&rec, &db, records).await;
    let err = results[1].as_ref().unwrap_err();
    assert!(PermanentError::is_in(&**err), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot record token usage {}", orphan.id)),
        "{err}"
    );
    for (i, r) in results.iter().enumerate() {
        if i != 1 {
            assert!(r.is_ok(), "record {i}: {r:?}");
        }
    }
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM aibridge_token_usages")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // The two good ones and the blocker's.
    assert_eq!(tokens, 3);
    assert_eq!(
        xmins(&db, "aibridge_user_prompts", &[prompt.id])
            .await
            .len(),
        1
    );
    let outcome: Option<String> =
        sqlx::query_scalar("SELECT outcome FROM aibridge_interceptions WHERE id = $1::uuid")
            .bind(a.id.to_string())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcome.as_deref(), Some("completed"));
}

/// Many interceptions through the record queue, awaited and queued ahead, with several
/// groups in flight: every record lands (a child before its interception would fail its
/// foreign key, an end before its children would be a lost row in the counts below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_through_the_queue_all_land_with_groups_in_flight() {
    let server = PgServer::start();
    let url = server.create_database("queue").await;
    let db = PgDb::connect(&url).await;
    let rec: Arc<dyn Recorder> = Arc::new(
        PostgresRecorder::builder(&url)
            .writers(3)
            .connect()
            .await
            .unwrap(),
    );
    for queued in [false, true] {
        let run = crate::bench_support::record_through_queue(rec.clone(), 300, 64, queued).await;
        assert_eq!((run.written, run.lost), (1_500, 0), "queued: {queued}");
    }
    for table in [
        "aibridge_interceptions",
        "aibridge_token_usages",
        "aibridge_user_prompts",
        "aibridge_tool_usages",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 600, "{table}");
    }
    let open: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM aibridge_interceptions WHERE ended_at IS NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(open, 0);
    // Batched: fewer transactions than rows (a child's row shares its transaction with
    // others of its group).
    let txids: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT xmin::text) FROM aibridge_token_usages")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(txids < 600, "{txids} transactions for 600 token usages");
}

#[tokio::test]
async fn builder_settings_are_checked_and_debug_hides_the_password() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let b = PostgresRecorder::builder("postgres://u:hunter2@127.0.0.1:1/db").writers(2);
    let shown = format!("{b:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("writers: 2"),
        "{shown}"
    );
    for builder in [
        PostgresRecorder::builder(&url).writers(0),
        PostgresRecorder::builder(&url).max_batch(0),
        PostgresRecorder::builder(&url).max_connections(0),
    ] {
        let err = builder.connect().await.unwrap_err();
        assert!(
            matches!(err, crate::recorder::RecorderError::Connect(_)),
            "{err}"
        );
    }
    // Row by row still writes.
    let rec = PostgresRecorder::builder(&url)
        .max_batch(1)
        .connect()
        .await
        .unwrap();
    let a = minimal_interception();
    rec.record_interception(&a).await.unwrap();
    rec.record_token_usage(&token_usage(a.id)).await.unwrap();
}

//! The group writer and the lanes on their own: groups are made by hand here, as they
//! form under load, and written on a `rusqlite` connection of the test's own.

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::job::{Job, Kind};
use super::lanes::{Lane, Lanes};
use super::writer::{MAX_ROWS, classify, is_permanent_code, write_group};
use super::{Row, SqliteRecorder};
use crate::BoxError;
use crate::recorder::sql::tests::{
    ended, minimal_interception, prompt_usage, thought, token_usage, tool_usage,
};
use crate::recorder::{Outcome, PermanentError, RecordId, ThoughtSource};

type Answer = oneshot::Receiver<Result<(), BoxError>>;

fn job<R: Row>(rec: &R) -> (Job, Answer) {
    let (done, answer) = oneshot::channel();
    let job = Job {
        kind: R::KIND,
        args: rec.args().unwrap(),
        done,
        permit: None,
    };
    (job, answer)
}

/// A migrated database file and a writer-like connection on it.
async fn database() -> (tempfile::TempDir, SqliteRecorder, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aibridge.db");
    let rec = SqliteRecorder::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    (dir, rec, conn)
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn outcome(conn: &Connection, id: RecordId) -> Option<String> {
    conn.query_row(
        "SELECT outcome FROM aibridge_interceptions WHERE id = ?",
        [id.to_string()],
        |r| r.get(0),
    )
    .unwrap()
}

fn results(answers: Vec<Answer>) -> Vec<Result<(), BoxError>> {
    answers
        .into_iter()
        .map(|mut a| a.try_recv().expect("every job is answered"))
        .collect()
}

#[test]
fn statements_have_one_placeholder_per_value() {
    for kind in Kind::ALL {
        let width = kind.columns().2;
        for rows in [1, 2, MAX_ROWS] {
            let sql = kind.sql(rows);
            assert_eq!(sql.matches('?').count(), width * rows, "{kind:?} × {rows}");
        }
    }
}

#[tokio::test]
async fn a_mixed_group_lands_whole_in_dependency_order_and_a_bad_record_fails_alone() {
    let (_dir, _rec, conn) = database().await;
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
    let mut again = minimal_interception();
    again.id = ids[0];
    group.push(job(&again));
    let bad = group.len();
    group.push(job(&token_usage(minimal_interception().id)));
    let n = group.len();

    let (jobs, answers): (Vec<Job>, Vec<Answer>) = group.into_iter().unzip();
    write_group(&conn, None, jobs);
    let first = results(answers);
    assert_eq!(first.len(), n);
    for (i, r) in first.iter().enumerate() {
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
    assert_eq!(count(&conn, "aibridge_interceptions"), 5);
    assert_eq!(count(&conn, "aibridge_token_usages"), 5);
    assert_eq!(count(&conn, "aibridge_user_prompts"), 5);
    assert_eq!(count(&conn, "aibridge_tool_usages"), 3);
    assert_eq!(count(&conn, "aibridge_model_thoughts"), 2);
    for (i, id) in ids.iter().enumerate() {
        let want = if i % 2 == 0 { "completed" } else { "failed" };
        assert_eq!(outcome(&conn, *id).as_deref(), Some(want), "{i}");
    }
    // The same records again (a retry of all of them) change nothing.
    let mut jobs = Vec::new();
    let mut answers = Vec::new();
    for id in &ids {
        let mut ic = minimal_interception();
        ic.id = *id;
        let (j, a) = job(&ic);
        jobs.push(j);
        answers.push(a);
    }
    let (j, a) = job(&token_usage(minimal_interception().id));
    jobs.push(j);
    answers.push(a);
    write_group(&conn, None, jobs);
    assert_eq!(results(answers).iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(count(&conn, "aibridge_interceptions"), 5);
}

#[tokio::test]
async fn a_large_run_of_one_kind_lands_in_statements_of_cached_shapes() {
    let (_dir, _rec, conn) = database().await;
    let ic = minimal_interception();
    let (j, a) = job(&ic);
    write_group(&conn, None, vec![j]);
    assert!(results(vec![a])[0].is_ok());
    // 200 = 64 + 64 + 64 + 8.
    let (jobs, answers): (Vec<Job>, Vec<Answer>) =
        (0..200).map(|_| job(&token_usage(ic.id))).unzip();
    write_group(&conn, None, jobs);
    assert!(results(answers).iter().all(Result::is_ok));
    assert_eq!(count(&conn, "aibridge_token_usages"), 200);
}

#[tokio::test]
async fn an_awaited_interception_waiting_in_the_fast_lane_is_committed_after_one_statement() {
    let (_dir, _rec, conn) = database().await;
    let lanes = Arc::new(Lanes::new(16));
    // The fast lane holds one awaited interception when the writer starts on a group of
    // 130 queued interceptions (statements of 64, 64 and 2 rows).
    let fast = minimal_interception();
    let (fast_job, mut fast_answer) = job(&fast);
    lanes.push(fast_job, Lane::Fast).await.unwrap();
    assert!(lanes.fast_waiting());
    let slow: Vec<_> = (0..130).map(|_| minimal_interception()).collect();
    let (jobs, answers): (Vec<Job>, Vec<Answer>) = slow.iter().map(job).unzip();
    write_group(&conn, Some(&lanes), jobs);
    assert!(fast_answer.try_recv().unwrap().is_ok());
    assert!(results(answers).iter().all(Result::is_ok));
    assert!(!lanes.fast_waiting());
    assert_eq!(count(&conn, "aibridge_interceptions"), 131);
    // Written right after the first statement, not after the whole group.
    let rowid: i64 = conn
        .query_row(
            "SELECT rowid FROM aibridge_interceptions WHERE id = ?",
            [fast.id.to_string()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rowid, 65);
    assert_eq!(lanes.room(), 16, "every place in the queue is given back");
}

#[test]
fn sqlite_codes_are_classified_by_their_primary_code() {
    // SQLITE_ERROR, SQLITE_TOOBIG, SQLITE_CONSTRAINT (and its extended codes: UNIQUE,
    // FOREIGNKEY, NOTNULL), SQLITE_MISMATCH, SQLITE_RANGE.
    for code in [1, 18, 19, 2067, 787, 1299, 20, 25] {
        assert!(is_permanent_code(code), "{code}");
    }
    // SQLITE_BUSY (and BUSY_SNAPSHOT), SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_IOERR (and
    // IOERR_FSYNC), SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_SCHEMA.
    for code in [5, 517, 6, 7, 10, 1034, 13, 14, 15, 17] {
        assert!(!is_permanent_code(code), "{code}");
    }
}

#[tokio::test]
async fn real_sqlite_errors_are_classified() {
    let (dir, _rec, holder) = database().await;
    let other = Connection::open(dir.path().join("aibridge.db")).unwrap();
    other.busy_timeout(std::time::Duration::ZERO).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The write lock is taken: SQLITE_BUSY, transient.
    let busy = classify(other.execute_batch("BEGIN IMMEDIATE").unwrap_err());
    assert!(busy.to_string().contains("locked"), "{busy}");
    assert!(!PermanentError::is_in(&*busy), "{busy}");
    // An invalid statement: SQLITE_ERROR, permanent.
    let syntax = other
        .execute("INSERT INTO no_such_table VALUES (1)", [])
        .unwrap_err();
    assert!(PermanentError::is_in(&*classify(syntax)));
    // A value of the wrong type for a STRICT-less column still lands; a NOT NULL violation
    // is permanent.
    holder.execute_batch("ROLLBACK").unwrap();
    let null = other
        .execute(
            "INSERT INTO aibridge_interceptions (id) VALUES (?)",
            [RecordId::new().to_string()],
        )
        .unwrap_err();
    assert!(PermanentError::is_in(&*classify(null)));
}

#[tokio::test]
async fn a_dropped_recorder_stops_its_writer_after_writing_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aibridge.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let rec = SqliteRecorder::connect(&url).await.unwrap();
    let ic = minimal_interception();
    crate::recorder::Recorder::record_interception(&rec, &ic)
        .await
        .unwrap();
    let lanes = rec.lanes.clone();
    drop(rec);
    let (j, _a) = job(&minimal_interception());
    let err = lanes.push(j, Lane::Slow).await.unwrap_err();
    assert_eq!(err.to_string(), "the SQLite writer has stopped");
    let conn = Connection::open(&path).unwrap();
    assert_eq!(count(&conn, "aibridge_interceptions"), 1);
}

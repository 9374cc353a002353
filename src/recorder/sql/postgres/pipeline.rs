//! The writers of [`PostgresRecorder`](super::PostgresRecorder)'s queued records: a few
//! tasks, each taking every record that queued up while it was busy as one group and
//! writing it in one transaction on a connection of its own, so several groups are in
//! flight at once (one per writer) and each costs one statement per kind and one commit.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire as _, PgPool, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::classify::{db_error, is_dropped_connection};
use super::rows::{Kind, Row, query};
use crate::BoxError;
use crate::recorder::PermanentError;

/// Records waiting for a writer, at most; a call beyond that waits for room (under the
/// record queue, its `call_timeout` bounds that wait).
const WAITING: usize = 1024;

/// One record for the writers, and where its result goes.
struct Job {
    row: Row,
    done: oneshot::Sender<Result<(), BoxError>>,
}

/// The hand-off to the writer tasks. Dropping it stops them once the records already
/// handed over are written.
pub(super) struct Pipeline {
    tx: mpsc::Sender<Job>,
}

/// How the writers group records.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// Writer tasks: groups in flight at once.
    pub(super) writers: usize,
    /// Most records in one group (1: every record is its own statement, as without batching).
    pub(super) max_batch: usize,
    /// Times a group is tried again on another connection when its connection was dropped
    /// (the server restarted).
    pub(super) retries: usize,
}

// === impl Pipeline ===

impl Pipeline {
    /// Spawns the writer tasks (needs a Tokio runtime).
    pub(super) fn start(pool: PgPool, shape: Shape) -> Self {
        let (tx, rx) = mpsc::channel(WAITING);
        let rx = Arc::new(Mutex::new(rx));
        let max_batch = shape.max_batch.max(1);
        for _ in 0..shape.writers.max(1) {
            let (rx, pool) = (rx.clone(), pool.clone());
            tokio::spawn(async move {
                while let Some(group) = next_group(&rx, max_batch).await {
                    write_group(&pool, group, shape.retries).await;
                }
            });
        }
        Self { tx }
    }

    /// Hands `row` to the writers and waits until it is written (or failed).
    pub(super) async fn write(&self, row: Row) -> Result<(), BoxError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Job { row, done })
            .await
            .map_err(|_| BoxError::from("the PostgreSQL writers have stopped"))?;
        answer
            .await
            .map_err(|_| BoxError::from("the PostgreSQL writer stopped before writing"))?
    }
}

#[cfg(test)]
impl Pipeline {
    /// Records handed over that no writer has taken up yet.
    pub(super) fn waiting(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The next group: the first record waiting (waiting for one if there is none), and every
/// other record already waiting, up to `max_batch`. `None` once the pipeline is dropped
/// and empty.
async fn next_group(rx: &Mutex<mpsc::Receiver<Job>>, max_batch: usize) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut group = vec![first];
    while group.len() < max_batch {
        match rx.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Some(group)
}

/// Writes one group and answers every record of it.
///
/// Records whose caller is gone (its call was cancelled or timed out before a writer took
/// it up) are not written: the record queue retries them under the same id. The rest is
/// sorted by kind (children first, ends last) and id (so two groups never lock the same
/// rows in opposite orders), and written in one transaction, one statement per kind; a
/// lone record is one autocommit statement.
///
/// If a statement fails for a reason of the data (a [`PermanentError`]: a child whose
/// interception is missing, a value the server rejects), the transaction is rolled back
/// and the group is written again row by row, each row on its own, so the bad row fails
/// alone and the others land. If the connection was dropped (the server restarted), the
/// group is tried again on another connection, up to `retries` times. Any other error fails every record of
/// the group, and the record queue retries them (every write is idempotent).
async fn write_group(pool: &PgPool, mut group: Vec<Job>, retries: usize) {
    group.retain(|job| !job.done.is_closed());
    if group.is_empty() {
        return;
    }
    group.sort_by(|a, b| (a.row.kind(), a.row.id()).cmp(&(b.row.kind(), b.row.id())));
    let rows: Vec<&Row> = group.iter().map(|job| &job.row).collect();
    let mut attempt = 0;
    let results = loop {
        let r = async {
            let mut conn = pool.acquire().await?;
            let r = write_batch(&mut conn, &rows).await;
            Ok::<_, sqlx::Error>((conn, r))
        }
        .await;
        match r {
            Ok((_, Ok(()))) => break rows.iter().map(|_| Ok(())).collect(),
            Ok((mut conn, Err(e))) if rows.len() > 1 && is_data_error(&e) => {
                break write_rows(&mut conn, &rows).await;
            }
            Ok((_, Err(e))) | Err(e) => {
                if attempt < retries && is_dropped_connection(&e) {
                    attempt += 1;
                    continue;
                }
                break fail_all(rows.len(), e);
            }
        }
    };
    for (job, r) in group.into_iter().zip(results) {
        // A caller that is gone is no error.
        let _ = job.done.send(r);
    }
}

/// The sorted rows in one transaction (a lone row: one autocommit statement).
async fn write_batch(conn: &mut PoolConnection<Postgres>, rows: &[&Row]) -> sqlx::Result<()> {
    if let [row] = rows {
        return query(row.kind(), rows).execute(&mut **conn).await.map(drop);
    }
    let mut tx = conn.begin().await?;
    for run in rows.chunk_by(|a, b| a.kind() == b.kind()) {
        query(run[0].kind(), run).execute(&mut *tx).await?;
    }
    // A transaction dropped on an error above is rolled back before the connection's
    // next statement.
    tx.commit().await
}

/// Each row in its own statement, in order; each gets its own result.
async fn write_rows(
    conn: &mut PoolConnection<Postgres>,
    rows: &[&Row],
) -> Vec<Result<(), BoxError>> {
    let mut results = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: Kind = row.kind();
        let r = query(kind, std::slice::from_ref(row))
            .execute(&mut **conn)
            .await;
        results.push(r.map(drop).map_err(db_error));
    }
    results
}

/// Whether writing the same rows again cannot succeed: then one of them is at fault.
fn is_data_error(e: &sqlx::Error) -> bool {
    super::super::is_permanent(e, super::is_permanent_code)
}

/// `n` copies of a group's error: the first is the error itself, the others its text.
fn fail_all(n: usize, e: sqlx::Error) -> Vec<Result<(), BoxError>> {
    let first = db_error(e);
    let text = first.to_string();
    let permanent = PermanentError::is_in(&*first);
    let mut out = Vec::with_capacity(n);
    out.push(Err(first));
    for _ in 1..n {
        out.push(Err(if permanent {
            PermanentError::new(text.clone()).into()
        } else {
            BoxError::from(text.clone())
        }));
    }
    out
}

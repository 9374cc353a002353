//! What the writer thread of [`SqliteRecorder`](super::SqliteRecorder) does with a group of
//! writes: multi-row prepared statements on one `rusqlite` connection, in one transaction.

use std::sync::Arc;

use rusqlite::Connection;

use super::job::{Job, Kind};
use super::lanes::Lanes;
use crate::BoxError;
use crate::recorder::PermanentError;

/// Most records of one kind in one statement. Statements are made for 1, 2, 4, … up to
/// this many rows only, so that the connection's prepared-statement cache holds every
/// shape: 6 kinds × 7 sizes (see [`STATEMENT_CACHE`]).
pub(super) const MAX_ROWS: usize = 64;

/// Prepared statements kept by the writer's connection: every (kind, rows) shape.
pub(super) const STATEMENT_CACHE: usize = 64;

/// Starts the writer thread on `conn`. It ends when the lanes are closed and empty; if it
/// panics, the lanes are closed and the jobs still queued are dropped, so their callers
/// get "the SQLite writer has stopped" instead of waiting.
pub(super) fn spawn_writer(conn: Connection, lanes: Arc<Lanes>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("aibridge-sqlite-writer".to_owned())
        .spawn(move || {
            let _closer = super::lanes::CloseOnExit(lanes.clone());
            while let Some(group) = lanes.next_group() {
                write_group(&conn, Some(&lanes), group);
            }
        })
        .map(drop)
}

/// Writes one group and answers every job of it, in one transaction (a lone job: one
/// autocommit statement). Within the transaction the records are sorted by kind (rows
/// others refer to first, ends last; stable, so arrival order within a kind) and a run of
/// one kind goes in multi-row statements of 64, 32, … rows.
///
/// A multi-row statement that fails is rolled back alone (SQLite's statement-level
/// atomicity) and its records are written one by one, so each failing record reports its
/// own error and the others still commit. If the commit itself fails, every record of the
/// transaction reports that error (every write is idempotent, so the record queue's retries
/// are safe even if part of it was written).
///
/// The fast lane: when `lanes` has awaited interceptions waiting after a statement, they
/// are written in the open transaction, which is committed there (its jobs and theirs
/// answered), and the rest of this group goes on in a new transaction. An awaited `record_interception` so waits for one statement and one commit
/// at most, not for a whole group.
pub(super) fn write_group(conn: &Connection, lanes: Option<&Lanes>, group: Vec<Job>) {
    if group.is_empty() {
        return;
    }
    if group.len() == 1 {
        let job = &group[0];
        let r = execute(conn, job.kind, &[job]).map_err(classify);
        answer(group.into_iter().map(Some).zip(std::iter::once(r)));
        return;
    }
    let (mut jobs, mut results) = sorted(group);
    let statements = plan(&jobs);
    // Jobs [from..] are not answered yet; the open transaction holds [from..to].
    let mut from = 0;
    if let Err(e) = conn.execute_batch("BEGIN") {
        return fail(jobs, &e);
    }
    for (n, range) in statements.iter().enumerate() {
        write_run(conn, &jobs, range.clone(), &mut results);
        let last = n + 1 == statements.len();
        if let Some(lanes) = lanes.filter(|l| !last && l.fast_waiting()) {
            // The waiting interceptions join the open transaction and one commit answers
            // them with everything written so far (one commit, not two: each commit
            // writes the touched pages to the WAL again).
            let (mut fast, mut fast_results) = sorted(lanes.take_fast());
            for run in plan(&fast) {
                write_run(conn, &fast, run, &mut fast_results);
            }
            let to = range.end;
            let committed = commit(conn);
            answer_committed(
                &mut jobs[from..to],
                &mut results[from..to],
                committed.as_ref(),
            );
            answer_committed(&mut fast, &mut fast_results, committed.as_ref());
            from = to;
            if let Err(e) = conn.execute_batch("BEGIN") {
                let rest: Vec<Option<Job>> = jobs[from..].iter_mut().map(Option::take).collect();
                return fail(rest, &e);
            }
        }
    }
    let to = jobs.len();
    let committed = commit(conn);
    answer_committed(
        &mut jobs[from..to],
        &mut results[from..to],
        committed.as_ref(),
    );
}

/// Writes `jobs[range]` (one kind) in one statement; if it fails, one by one, so each
/// failing record gets its own error in `results` and the others stay written.
fn write_run(
    conn: &Connection,
    jobs: &[Option<Job>],
    range: std::ops::Range<usize>,
    results: &mut [Result<(), BoxError>],
) {
    let run: Vec<&Job> = jobs[range.clone()].iter().flatten().collect();
    let Some(kind) = run.first().map(|j| j.kind) else {
        return;
    };
    if let Err(e) = execute(conn, kind, &run) {
        if run.len() == 1 {
            results[range.start] = Err(classify(e));
        } else {
            for (i, job) in range.zip(&run) {
                if let Err(e) = execute(conn, kind, &[job]) {
                    results[i] = Err(classify(e));
                }
            }
        }
    }
}

/// A group's jobs sorted by kind, so that same-kind records sit together (stable: arrival
/// order within a kind), and a result for each, `Ok` until a write says otherwise.
fn sorted(group: Vec<Job>) -> (Vec<Option<Job>>, Vec<Result<(), BoxError>>) {
    let mut jobs: Vec<Option<Job>> = group.into_iter().map(Some).collect();
    jobs.sort_by_key(|j| j.as_ref().map(|j| j.kind));
    let results = jobs.iter().map(|_| Ok(())).collect();
    (jobs, results)
}

/// The statements of a sorted group: index ranges of one kind, 64, 32, … rows long.
fn plan(jobs: &[Option<Job>]) -> Vec<std::ops::Range<usize>> {
    let kind = |i: usize| jobs[i].as_ref().map(|j| j.kind);
    let mut out = Vec::new();
    let mut at = 0;
    while at < jobs.len() {
        let run = (at..jobs.len())
            .take_while(|&i| kind(i) == kind(at))
            .count();
        let mut left = run;
        while left > 0 {
            let rows = MAX_ROWS.min(1 << left.ilog2());
            out.push(at..at + rows);
            at += rows;
            left -= rows;
        }
    }
    out
}

/// Commits the open transaction; on failure rolls it back and gives the error's text.
fn commit(conn: &Connection) -> Result<(), String> {
    conn.execute_batch("COMMIT").map_err(|e| {
        // Leave no transaction open behind a failed commit.
        let _ = conn.execute_batch("ROLLBACK");
        format!("commit failed: {e}")
    })
}

/// Answers jobs written in a transaction: their own results, or the commit's error.
fn answer_committed(
    jobs: &mut [Option<Job>],
    results: &mut [Result<(), BoxError>],
    committed: Result<&(), &String>,
) {
    if let Err(msg) = committed {
        for r in results.iter_mut() {
            *r = Err(msg.clone().into());
        }
    }
    let results = results.iter_mut().map(|r| std::mem::replace(r, Ok(())));
    answer(jobs.iter_mut().map(Option::take).zip(results));
}

/// Fails every job with the error of starting a transaction (transient: no record's fault).
fn fail(jobs: Vec<Option<Job>>, e: &rusqlite::Error) {
    let msg = e.to_string();
    let results: Vec<Result<(), BoxError>> = jobs
        .iter()
        .map(|_| Err(BoxError::from(msg.clone())))
        .collect();
    answer(jobs.into_iter().zip(results));
}

/// Frees each job's queue place and sends it its result (a caller that is gone is no
/// error): the place first, so that a caller who sees its answer also sees the room.
fn answer(jobs: impl Iterator<Item = (Option<Job>, Result<(), BoxError>)>) {
    for (job, r) in jobs {
        if let Some(job) = job {
            drop(job.permit);
            let _ = job.done.send(r);
        }
    }
}

/// Runs one statement over `jobs` (all of one kind).
fn execute(conn: &Connection, kind: Kind, jobs: &[&Job]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(statement(kind, jobs.len()))?;
    stmt.execute(rusqlite::params_from_iter(
        jobs.iter().flat_map(|j| j.args.iter()),
    ))
    .map(drop)
}

/// The SQL of a (kind, rows) shape (`rows` a power of two up to [`MAX_ROWS`]), made once.
fn statement(kind: Kind, rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<Vec<String>>> = std::sync::OnceLock::new();
    let table = SQL.get_or_init(|| {
        Kind::ALL
            .iter()
            .map(|k| (0..=MAX_ROWS.ilog2()).map(|n| k.sql(1 << n)).collect())
            .collect()
    });
    &table[kind as usize][rows.ilog2() as usize]
}

/// A statement's error for the record queue: marked [`PermanentError`] when writing the same
/// record again cannot succeed (see [`is_permanent_code`]; values SQLite cannot take too).
pub(super) fn classify(err: rusqlite::Error) -> BoxError {
    let permanent = match &err {
        rusqlite::Error::SqliteFailure(e, _) => is_permanent_code(e.extended_code),
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::InvalidParameterCount(..)
        | rusqlite::Error::SqlInputError { .. } => true,
        _ => false,
    };
    if permanent {
        PermanentError::new(err).into()
    } else {
        err.into()
    }
}

/// Whether a SQLite (extended) result code means that writing the same record again cannot
/// succeed: `SQLITE_ERROR` (an invalid statement, a missing table), `SQLITE_TOOBIG`,
/// `SQLITE_CONSTRAINT`, `SQLITE_MISMATCH`, `SQLITE_RANGE`. `SQLITE_BUSY`, `SQLITE_LOCKED`,
/// `SQLITE_IOERR`, `SQLITE_FULL` and the rest may pass on a later attempt.
pub(super) fn is_permanent_code(code: i32) -> bool {
    const ERROR: i32 = 1;
    const TOOBIG: i32 = 18;
    const CONSTRAINT: i32 = 19;
    const MISMATCH: i32 = 20;
    const RANGE: i32 = 25;
    matches!(code & 0xff, ERROR | TOOBIG | CONSTRAINT | MISMATCH | RANGE)
}

//! The checkpointer thread of [`SqliteRecorder`](super::SqliteRecorder): copies the WAL into
//! the database file on a connection of its own, so that the writer thread never does.
//!
//! With SQLite's default automatic checkpoint, the commit that takes the WAL past 1,000
//! pages copies them into the database file and syncs it, on the writer's thread: every
//! write queued behind it, the awaited `record_interception` included, waits for that
//! (the long tails of the 3,000 req/s benchmark). The writer's connection turns the
//! automatic checkpoint off; this thread runs a `PASSIVE` checkpoint every [`INTERVAL`]
//! (it never blocks the writer or a reader: it copies what it can). A page written many
//! times between two checkpoints is copied once.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
pub(super) const INTERVAL: Duration = Duration::from_millis(500);

/// The WAL file is truncated back to this size after a checkpoint lets it restart (set on
/// the writer's connection, the one that restarts it).
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Stops the checkpointer thread (after a last checkpoint) when dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    /// Dropped: the thread's last checkpoint, then its end.
    #[cfg_attr(not(test), expect(dead_code, reason = "held only to be dropped"))]
    stop: mpsc::Sender<()>,
    /// Joined by tests only.
    #[cfg_attr(not(test), expect(dead_code, reason = "held only to be dropped"))]
    thread: std::thread::JoinHandle<()>,
}

#[cfg(test)]
impl Checkpointer {
    /// Stops the thread and waits for its last checkpoint.
    pub(super) fn stop_and_wait(self) {
        drop(self.stop);
        self.thread.join().unwrap();
    }
}

/// Starts the checkpointer thread on `conn`, checkpointing every `every`.
pub(super) fn spawn(conn: Connection, every: Duration) -> std::io::Result<Checkpointer> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("aibridge-sqlite-checkpoint".to_owned())
        .spawn(move || {
            loop {
                let last = !matches!(stopped.recv_timeout(every), Err(RecvTimeoutError::Timeout));
                if let Err(e) = checkpoint(&conn) {
                    tracing::debug!(error = %e, "SQLite WAL checkpoint did not run");
                }
                if last {
                    break;
                }
            }
        })?;
    Ok(Checkpointer { stop, thread })
}

/// One `PASSIVE` checkpoint: the WAL's frames and how many of them are now in the
/// database file.
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

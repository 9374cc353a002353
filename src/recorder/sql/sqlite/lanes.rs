//! The hand-off between the callers of [`SqliteRecorder`](super::SqliteRecorder) and its
//! writer thread: two lanes (awaited interceptions first, everything else after), one
//! bound on the writes waiting, and one wake-up per group.
//!
//! A caller puts its job in a lane under a mutex and wakes the writer only if it sleeps;
//! the writer takes everything queued meanwhile as one group. Under load the writer never
//! sleeps between groups, so a record costs no thread wake-up at all; the only hand-off
//! back is the job's oneshot answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::Semaphore;

use super::job::Job;
use crate::BoxError;

/// Most records of the slow lane taken into one group (the fast lane is always taken
/// whole: it holds at most one interception per request in flight).
const MAX_BATCH: usize = 256;

/// The two lanes and the writer's bed.
pub(super) struct Lanes {
    state: Mutex<State>,
    wake: Condvar,
    /// Places in the queue: a write waits for one before it is queued.
    room: Arc<Semaphore>,
    /// Whether the fast lane holds jobs (read between statements without the lock).
    fast_waiting: AtomicBool,
    /// Held by a test to keep the writer from taking up a group.
    #[cfg(test)]
    pub(super) gate: Mutex<()>,
}

#[derive(Default)]
struct State {
    fast: Vec<Job>,
    slow: Vec<Job>,
    /// The writer waits on `wake`.
    sleeping: bool,
    /// The recorder is gone (or the writer died): no new jobs, the writer ends when empty.
    closed: bool,
}

/// Which lane a write takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// An awaited `record_interception`: written before anything else waiting.
    Fast,
    /// Every other record.
    Slow,
}

impl Lanes {
    /// Lanes for up to `room` waiting writes.
    pub(super) fn new(room: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            room: Arc::new(Semaphore::new(room.max(1))),
            fast_waiting: AtomicBool::new(false),
            #[cfg(test)]
            gate: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job (waiting for room first) and wakes the writer if it sleeps.
    pub(super) async fn push(&self, mut job: Job, lane: Lane) -> Result<(), BoxError> {
        let stopped = || BoxError::from("the SQLite writer has stopped");
        let permit = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        job.permit = Some(permit);
        let wake = {
            let mut state = self.lock();
            if state.closed {
                return Err(stopped());
            }
            match lane {
                Lane::Fast => {
                    state.fast.push(job);
                    self.fast_waiting.store(true, Ordering::Release);
                }
                Lane::Slow => state.slow.push(job),
            }
            std::mem::replace(&mut state.sleeping, false)
        };
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Places left in the queue.
    #[cfg(test)]
    pub(super) fn room(&self) -> usize {
        self.room.available_permits()
    }

    /// No more jobs; the writer writes what is queued and ends.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Whether awaited interceptions wait in the fast lane.
    pub(super) fn fast_waiting(&self) -> bool {
        self.fast_waiting.load(Ordering::Acquire)
    }

    /// Everything in the fast lane.
    pub(super) fn take_fast(&self) -> Vec<Job> {
        let mut state = self.lock();
        self.fast_waiting.store(false, Ordering::Release);
        live(std::mem::take(&mut state.fast))
    }

    /// The next group: the whole fast lane, then up to [`MAX_BATCH`] of the slow lane.
    /// Sleeps while both are empty; `None` once closed and empty.
    pub(super) fn next_group(&self) -> Option<Vec<Job>> {
        loop {
            #[cfg(test)]
            drop(self.gate.lock().unwrap_or_else(|e| e.into_inner()));
            let mut state = self.lock();
            if state.fast.is_empty() && state.slow.is_empty() {
                if state.closed {
                    return None;
                }
                state.sleeping = true;
                drop(self.wake.wait(state).unwrap_or_else(|e| e.into_inner()));
                continue;
            }
            state.sleeping = false;
            self.fast_waiting.store(false, Ordering::Release);
            let mut group = std::mem::take(&mut state.fast);
            let n = state.slow.len().min(MAX_BATCH);
            if n == state.slow.len() {
                group.append(&mut state.slow);
            } else {
                group.extend(state.slow.drain(..n));
            }
            drop(state);
            return Some(live(group));
        }
    }
}

/// The jobs whose caller still waits. A job whose caller is gone (its future was dropped:
/// cancelled, or timed out under the record queue's `call_timeout`) is skipped: nobody
/// would learn its result, and a caller that retries sends it again under the same id.
/// Without this, the calls that time out during a long database stall would all be written
/// when it recovers, among them interceptions whose requests were answered 503 and never
/// sent.
fn live(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.retain(|j| !j.done.is_closed());
    jobs
}

/// Closes the lanes and drops what they hold when the writer thread ends in any way.
pub(super) struct CloseOnExit(pub(super) Arc<Lanes>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        state.fast.clear();
        state.slow.clear();
        drop(state);
        self.0.room.close();
    }
}

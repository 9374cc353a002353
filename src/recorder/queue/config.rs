//! [`RecordQueueConfig`] and [`QueueFullPolicy`].

use std::time::Duration;

/// Settings of the queue between the interceptors and the recorder.
///
/// ```
/// use std::time::Duration;
/// use aibridge::recorder::{QueueFullPolicy, RecordQueueConfig};
/// let q = RecordQueueConfig::default().with_capacity(100).with_full_policy(QueueFullPolicy::Drop);
/// assert_eq!(q.capacity, 100);
/// assert_eq!(q.call_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordQueueConfig {
    /// Records the queue holds; default 10 000.
    pub capacity: usize,
    /// Worker tasks calling the recorder; default 32.
    pub workers: usize,
    /// Timeout of each recorder call; default 10 s.
    pub call_timeout: Duration,
    /// Attempts per record, the first included; default 4. A record whose error is marked
    /// [`PermanentError`](crate::recorder::PermanentError) gets one attempt only.
    pub max_attempts: u32,
    /// First retry delay; default 200 ms, doubled per retry, with ±25 % jitter.
    pub initial_backoff: Duration,
    /// Largest retry delay; default 5 s.
    pub max_backoff: Duration,
    /// What happens when the queue is full.
    pub full_policy: QueueFullPolicy,
    /// Consecutive failed `record_interception` calls (errors, timeouts, panics; not
    /// [`PermanentError`](crate::recorder::PermanentError)s) that open the recorder
    /// breaker; default 5, 0 turns it off. While it is open, new requests are answered 503
    /// at once without calling the recorder (a database outage does not make every request
    /// wait for its own failure); every [`breaker_cooldown`](Self::breaker_cooldown) one
    /// request probes the recorder, and its success closes the breaker.
    pub breaker_failures: u32,
    /// Time between probes of an open recorder breaker; default 1 s.
    pub breaker_cooldown: Duration,
    /// Whether the request waits for its interception record; default
    /// [`InterceptionRecord::Awaited`].
    pub interception: InterceptionRecord,
}

impl Default for RecordQueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            workers: 32,
            call_timeout: Duration::from_secs(10),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            full_policy: QueueFullPolicy::WaitThenDrop(Duration::from_secs(1)),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            interception: InterceptionRecord::Awaited,
        }
    }
}

impl RecordQueueConfig {
    /// Sets [`capacity`](Self::capacity).
    #[must_use]
    pub fn with_capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }
    /// Sets [`workers`](Self::workers).
    #[must_use]
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Sets [`call_timeout`](Self::call_timeout).
    #[must_use]
    pub fn with_call_timeout(mut self, d: Duration) -> Self {
        self.call_timeout = d;
        self
    }
    /// Sets [`max_attempts`](Self::max_attempts).
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets [`initial_backoff`](Self::initial_backoff).
    #[must_use]
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }
    /// Sets [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }
    /// Sets [`breaker_failures`](Self::breaker_failures) (0: no breaker).
    #[must_use]
    pub fn with_breaker_failures(mut self, n: u32) -> Self {
        self.breaker_failures = n;
        self
    }
    /// Sets [`breaker_cooldown`](Self::breaker_cooldown).
    #[must_use]
    pub fn with_breaker_cooldown(mut self, d: Duration) -> Self {
        self.breaker_cooldown = d;
        self
    }
    /// Sets [`interception`](Self::interception).
    #[must_use]
    pub fn with_interception(mut self, how: InterceptionRecord) -> Self {
        self.interception = how;
        self
    }
    /// Sets [`full_policy`](Self::full_policy).
    #[must_use]
    pub fn with_full_policy(mut self, p: QueueFullPolicy) -> Self {
        self.full_policy = p;
        self
    }
}

/// What enqueueing does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueFullPolicy {
    /// Wait up to this long for space, then drop the record (counted and logged).
    WaitThenDrop(Duration),
    /// Drop the record at once (counted and logged).
    Drop,
}

/// How the interception record (the row every other record of a request refers to) is
/// written: the trade-off between "nothing is sent upstream that is not recorded" and "the
/// client never waits on the database". Either way every interception row lands before
/// its child rows and its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InterceptionRecord {
    /// `record_interception` is awaited before the upstream call (the default): if it
    /// fails, the client gets 503 and nothing is sent upstream. Each request waits for one
    /// database write (see the `record_interception_seconds` histogram).
    #[default]
    Awaited,
    /// `record_interception` is queued ahead of the interception's other records and the
    /// upstream call starts at once: the client never waits on the database. The record is
    /// retried like the others, and its children are written only after it lands (failed
    /// with it if it cannot be written). The price: a request may be relayed whose
    /// interception is never recorded (the database stays down past the retries, or the
    /// process crashes before the row lands, losing it with its children). The recorder
    /// breaker still refuses new requests (503) while it is open.
    Queued,
}

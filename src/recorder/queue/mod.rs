//! The bounded record queue between the interceptors and the [`Recorder`](super::Recorder).

mod ahead;
mod breaker;
mod call;
mod config;
mod inline;
#[cfg(test)]
mod tests;

pub use self::config::{InterceptionRecord, QueueFullPolicy, RecordQueueConfig};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use self::breaker::{Admit, Breaker};
#[cfg(doc)]
use self::call::TIMED_OUT_NOT_SENT;
use self::call::{CallError, call_recorder};
use super::Delivery;
use super::limits::RecordLimits;
use super::{Interception, InterceptionEnded, Record, RecordId, RecordKind, Recorder, deliver};
use crate::BoxError;

/// Called once per record with its final delivery outcome (metrics hook).
pub(crate) type DeliveryHook = Arc<dyn Fn(RecordKind, Delivery) + Send + Sync>;

/// The queue shared by all interceptions of a bridge.
pub(crate) struct RecordQueue {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Job>,
}

struct Shared {
    recorder: Arc<dyn Recorder>,
    config: RecordQueueConfig,
    limits: RecordLimits,
    /// Queued or in-delivery records, ended records waiting for their siblings included
    /// (a copy of the ledger's sum, for lock-free reads).
    depth: AtomicUsize,
    idle: Notify,
    hook: Mutex<Option<DeliveryHook>>,
    metrics: std::sync::OnceLock<crate::metrics::Metrics>,
    dropped_total: AtomicU64,
    ledger: Mutex<Ledger>,
    /// Refuses `record_interception` at once while the recorder is down.
    breaker: Breaker,
}

/// Which records are unfinished, and whether the shutdown deadline has passed.
///
/// Every tracked record is counted exactly once: its outcome is decided under this lock,
/// either when it finishes (written, failed or dropped) before the deadline, or by
/// [`Shared::abandon`] at the deadline (dropped), or when it arrives after the deadline
/// (dropped, never delivered).
#[derive(Default)]
struct Ledger {
    /// Unfinished records per kind.
    unfinished: [u64; KINDS.len()],
    /// Set at the shutdown deadline: what was unfinished then is counted as dropped, what
    /// finishes later is not counted again, and nothing more is delivered.
    abandoned: bool,
}

const KINDS: [RecordKind; 6] = [
    RecordKind::Interception,
    RecordKind::InterceptionEnded,
    RecordKind::TokenUsage,
    RecordKind::PromptUsage,
    RecordKind::ToolUsage,
    RecordKind::ModelThought,
];

fn kind_index(kind: RecordKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

struct Job {
    record: Record,
    tracker: Option<Arc<Tracker>>,
}

/// Per-interception bookkeeping that holds the ended record until every other record of
/// the interception has finished.
struct Tracker {
    /// Outstanding records plus one for the running interception.
    pending: AtomicUsize,
    ended: Mutex<Option<InterceptionEnded>>,
    /// With the interception queued ahead: `Some(written)` once it has its outcome. Its
    /// other records wait for it.
    landed: Option<tokio::sync::watch::Receiver<Option<bool>>>,
}

impl std::fmt::Debug for RecordQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordQueue")
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

impl RecordQueue {
    /// Creates the queue and spawns its workers (needs a Tokio runtime).
    #[cfg(test)]
    pub(crate) fn start(recorder: Arc<dyn Recorder>, config: RecordQueueConfig) -> Self {
        Self::start_with(recorder, config, RecordLimits::default())
    }

    /// Creates the queue with these record size limits and spawns its workers.
    pub(crate) fn start_with(
        recorder: Arc<dyn Recorder>,
        config: RecordQueueConfig,
        limits: RecordLimits,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let shared = Arc::new(Shared {
            recorder,
            limits,
            depth: AtomicUsize::new(0),
            idle: Notify::new(),
            hook: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
            dropped_total: AtomicU64::new(0),
            ledger: Mutex::new(Ledger::default()),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            config,
        });
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..shared.config.workers.max(1) {
            let shared = shared.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { break };
                    shared.process(job).await;
                }
            });
        }
        Self { shared, tx }
    }

    /// Installs a per-record outcome hook (tests and benchmarks).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn set_hook(&self, hook: DeliveryHook) {
        *self.shared.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Reports record outcomes and the queue depth to these metrics.
    pub(crate) fn set_metrics(&self, metrics: crate::metrics::Metrics) {
        let _ = self.shared.metrics.set(metrics);
    }

    /// Records not yet finished.
    pub(crate) fn depth(&self) -> usize {
        self.shared.depth.load(Ordering::Acquire)
    }

    /// Records dropped so far.
    #[cfg(test)]
    pub(crate) fn dropped_total(&self) -> u64 {
        self.shared.dropped_total.load(Ordering::Relaxed)
    }

    /// `record_interception`, awaited inline with the call timeout and no retry.
    ///
    /// A call that times out is answered as a failure (the request is not sent upstream)
    /// but not abandoned: a recorder may still commit the row (the SQLite writer does), so
    /// the call finishes in the background, and a row that lands after all gets its end
    /// record, `failed` with [`TIMED_OUT_NOT_SENT`]. No row stays without an end.
    pub(crate) async fn record_interception(&self, rec: Interception) -> Result<(), BoxError> {
        let started = std::time::Instant::now();
        let admitted = self.shared.breaker.admit();
        let r = if admitted == Admit::Reject {
            Err(BoxError::from(
                "the recorder breaker is open (recent record_interception calls failed); \
                 request refused without calling the recorder",
            ))
        } else {
            let r = self.call_record_interception(rec).await;
            let unavailable = matches!(&r, Err(e) if !e.is_permanent());
            self.shared.breaker.settle(admitted, unavailable);
            r.map_err(CallError::into_box)
        };
        if let Some(m) = self.shared.metrics.get() {
            m.record_interception_time(started.elapsed());
        }
        self.shared.report(
            RecordKind::Interception,
            if r.is_ok() {
                Delivery::Written
            } else {
                Delivery::Failed
            },
        );
        r
    }

    /// A sink for the records of one interception.
    pub(crate) fn sink(&self, interception_id: RecordId) -> RecordSink {
        self.sink_landing(interception_id, None)
    }

    /// A sink whose records wait until `landed` says the interception was written.
    fn sink_landing(
        &self,
        interception_id: RecordId,
        landed: Option<tokio::sync::watch::Receiver<Option<bool>>>,
    ) -> RecordSink {
        RecordSink {
            interception_id,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            tracker: Arc::new(Tracker {
                pending: AtomicUsize::new(1),
                ended: Mutex::new(None),
                landed,
            }),
            ended: false,
        }
    }

    /// Waits until every queued record has finished, or the deadline passes. Returns the
    /// number of records still unfinished (then counted as dropped).
    pub(crate) async fn drain(&self, deadline: tokio::time::Instant) -> u64 {
        loop {
            let notified = self.shared.idle.notified();
            if self.depth() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.shared.abandon();
            }
        }
    }
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_abandoned(&self) -> bool {
        self.ledger().abandoned
    }

    /// Counts one outcome (metrics, the dropped total and the test hook).
    fn report(&self, kind: RecordKind, outcome: Delivery) {
        if let Some(m) = self.metrics.get() {
            m.record(kind, outcome);
        }
        if outcome == Delivery::Dropped {
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hook) = hook {
            hook(kind, outcome);
        }
    }

    /// At the shutdown deadline: every unfinished record is dropped, counted per kind.
    fn abandon(&self) -> u64 {
        let counts = {
            let mut ledger = self.ledger();
            if ledger.abandoned {
                return 0;
            }
            ledger.abandoned = true;
            self.depth.store(0, Ordering::Release);
            std::mem::take(&mut ledger.unfinished)
        };
        let mut left = 0;
        for (kind, n) in KINDS.iter().zip(counts) {
            for _ in 0..n {
                self.report(*kind, Delivery::Dropped);
            }
            left += n;
        }
        if left > 0 {
            tracing::error!(
                records = left,
                "record queue not drained by the shutdown deadline; dropping"
            );
        }
        if let Some(m) = self.metrics.get() {
            m.queue_depth(0);
        }
        left
    }

    /// A record of `kind` is about to be queued (or held until its interception's other
    /// records finish). After the shutdown deadline it is counted as dropped instead, and
    /// `false` says it must not be queued.
    fn started(&self, kind: RecordKind) -> bool {
        {
            let mut ledger = self.ledger();
            if !ledger.abandoned {
                ledger.unfinished[kind_index(kind)] += 1;
                self.depth.fetch_add(1, Ordering::AcqRel);
                drop(ledger);
                self.depth_changed();
                return true;
            }
        }
        self.report(kind, Delivery::Dropped);
        false
    }

    /// A started record has its final outcome. Not counted again if the shutdown deadline
    /// already counted it as dropped.
    fn settle(&self, kind: RecordKind, outcome: Delivery) {
        let before = {
            let mut ledger = self.ledger();
            if ledger.abandoned {
                return;
            }
            let n = &mut ledger.unfinished[kind_index(kind)];
            *n = n.saturating_sub(1);
            self.depth.fetch_sub(1, Ordering::AcqRel)
        };
        self.report(kind, outcome);
        self.depth_changed();
        if before == 1 {
            self.idle.notify_waiters();
        }
    }

    fn depth_changed(&self) {
        if let Some(m) = self.metrics.get() {
            m.queue_depth(self.depth.load(Ordering::Acquire));
        }
    }

    async fn process(&self, job: Job) {
        if self.is_abandoned() {
            // Counted as dropped at the deadline; its interception's end was too.
            return;
        }
        let kind = job.record.kind();
        let landed = match &job.tracker {
            Some(tracker) => tracker.landed().await,
            None => true,
        };
        let outcome = if landed {
            self.deliver_with_retry(&job.record).await
        } else {
            tracing::error!(kind = kind.as_str(), record_id = %job.record.id(), "the interception of this record was not written; not writing it");
            Delivery::Failed
        };
        self.settle(kind, outcome);
        if let Some(tracker) = job.tracker {
            self.release(&tracker).await;
        }
    }

    /// One outstanding record of the tracker's interception finished; when it was the last,
    /// the held ended record is delivered here (never re-queued, so a full queue cannot
    /// deadlock the workers).
    async fn release(&self, tracker: &Tracker) {
        if tracker.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ended = tracker
                .ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(ended) = ended {
                if self.is_abandoned() {
                    return;
                }
                let outcome = if tracker.landed().await {
                    self.deliver_with_retry(&Record::InterceptionEnded(ended))
                        .await
                } else {
                    Delivery::Failed
                };
                self.settle(RecordKind::InterceptionEnded, outcome);
            }
        }
    }

    /// Calls the recorder until the record is written, fails permanently, runs out of
    /// attempts, or the shutdown deadline passes (then it is already counted as dropped).
    async fn deliver_with_retry(&self, record: &Record) -> Delivery {
        let cfg = &self.config;
        let attempts = cfg.max_attempts.max(1);
        let kind = record.kind().as_str();
        for attempt in 1..=attempts {
            // D17: queued records are written by the workers, after the interception's
            // span may have closed: the span is a root that names the record.
            let span = tracing::info_span!(
                parent: None,
                "aibridge.record",
                kind,
                record_id = %record.id(),
                attempt,
                outcome = tracing::field::Empty,
            );
            let call = call_recorder(cfg.call_timeout, deliver(self.recorder.as_ref(), record));
            let result = tracing::Instrument::instrument(call, span.clone()).await;
            span.record("outcome", if result.is_ok() { "written" } else { "error" });
            let err = match result {
                Ok(()) => return Delivery::Written,
                Err(e) => e,
            };
            if err.is_permanent() {
                tracing::error!(kind, record_id = %record.id(), attempt, error = %err, "recording failed permanently; not retrying");
                return Delivery::Failed;
            }
            if attempt == attempts {
                tracing::error!(kind, record_id = %record.id(), attempts, error = %err, "recording failed; giving up");
                return Delivery::Failed;
            }
            let delay = backoff(cfg.initial_backoff, cfg.max_backoff, attempt - 1);
            tracing::warn!(kind, record_id = %record.id(), attempt, error = %err, ?delay, "recording failed; retrying");
            tokio::time::sleep(delay).await;
            if self.is_abandoned() {
                return Delivery::Dropped;
            }
        }
        Delivery::Failed
    }
}

/// The delay before retry `n` (0-based): ±25 % jitter.
fn backoff(initial: Duration, max: Duration, n: u32) -> Duration {
    crate::backoff::delay(initial, max, n, crate::backoff::Jitter::Around25)
}

/// Hands the records of one interception to the queue.
///
/// Dropped without [`end`](Self::end) (the interception task panicked), it still ends the
/// interception, `failed` with [`ABANDONED`]: a recorded interception always gets its end.
pub(crate) struct RecordSink {
    interception_id: RecordId,
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
    /// Set by `end`.
    ended: bool,
}

/// The end record's error of an interception whose task ended without ending it.
pub(crate) const ABANDONED: &str = "aibridge: internal error (the interception task stopped)";

impl Drop for RecordSink {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(interception_id = %self.interception_id, "interception not ended: no runtime");
            return;
        };
        let sink = RecordSink {
            interception_id: self.interception_id,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            tracker: self.tracker.clone(),
            // Never again: a copy dropped unpolled (runtime shutting down) must not respawn.
            ended: true,
        };
        tracing::error!(interception_id = %self.interception_id, "interception task stopped without ending the interception; ending it as failed");
        runtime.spawn(sink.end(InterceptionEnded {
            id: self.interception_id,
            ended_at: std::time::SystemTime::now(),
            outcome: super::Outcome::Failed,
            error: Some(ABANDONED.to_owned()),
        }));
    }
}

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSink")
            .field("interception_id", &self.interception_id)
            .finish_non_exhaustive()
    }
}

impl RecordSink {
    /// The size limits of recorded prompts and tool inputs.
    pub(crate) fn limits(&self) -> RecordLimits {
        self.shared.limits
    }

    /// Queues one record, following the queue-full policy. Never awaits the recorder.
    pub(crate) async fn push(&self, record: Record) {
        if !self.shared.started(record.kind()) {
            self.log_dropped(
                &record,
                "record arrived after the shutdown deadline; dropped",
            );
            return;
        }
        self.tracker.pending.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            record,
            tracker: Some(self.tracker.clone()),
        };
        if let Err(job) = self.send(job).await {
            self.log_dropped(&job.record, "record queue full or closed; record dropped");
            self.shared.settle(job.record.kind(), Delivery::Dropped);
            self.shared.release(&self.tracker).await;
        }
    }

    async fn send(&self, job: Job) -> Result<(), Job> {
        let job = match self.tx.try_send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(job)) => return Err(job),
            Err(mpsc::error::TrySendError::Full(job)) => job,
        };
        match self.shared.config.full_policy {
            QueueFullPolicy::Drop => Err(job),
            QueueFullPolicy::WaitThenDrop(wait) => {
                let permit = tokio::time::timeout(wait, self.tx.reserve()).await;
                match permit {
                    Ok(Ok(permit)) => {
                        permit.send(job);
                        Ok(())
                    }
                    _ => Err(job),
                }
            }
        }
    }

    fn log_dropped(&self, record: &Record, message: &'static str) {
        tracing::error!(
            kind = record.kind().as_str(),
            record_id = %record.id(),
            interception_id = %self.interception_id,
            "{message}"
        );
    }

    /// Ends the interception: the ended record is delivered once every record pushed before
    /// it has finished.
    pub(crate) async fn end(mut self, ended: InterceptionEnded) {
        self.ended = true;
        if !self.shared.started(RecordKind::InterceptionEnded) {
            let record = Record::InterceptionEnded(ended);
            self.log_dropped(
                &record,
                "record arrived after the shutdown deadline; dropped",
            );
            return;
        }
        *self.tracker.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(ended);
        if self.tracker.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ended = self
                .tracker
                .ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(ended) = ended {
                if self.tracker.never_landed() {
                    self.shared
                        .settle(RecordKind::InterceptionEnded, Delivery::Failed);
                    return;
                }
                let job = Job {
                    record: Record::InterceptionEnded(ended),
                    tracker: None,
                };
                if let Err(job) = self.send(job).await {
                    self.log_dropped(&job.record, "record queue full or closed; record dropped");
                    self.shared
                        .settle(RecordKind::InterceptionEnded, Delivery::Dropped);
                }
            }
        }
    }
}

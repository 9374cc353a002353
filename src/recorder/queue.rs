//! The bounded record queue between the interceptors and the [`Recorder`](super::Recorder).

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
    /// Attempts per record, the first included; default 4.
    pub max_attempts: u32,
    /// First retry delay; default 200 ms, doubled per retry, with ±25 % jitter.
    pub initial_backoff: Duration,
    /// Largest retry delay; default 5 s.
    pub max_backoff: Duration,
    /// What happens when the queue is full.
    pub full_policy: QueueFullPolicy,
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

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;

use tokio::sync::{Notify, mpsc};

use super::{
    Delivery, Interception, InterceptionEnded, Record, RecordId, RecordKind, Recorder, deliver,
};
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
    /// Queued or in-delivery records, ended records waiting for their siblings included.
    depth: AtomicUsize,
    idle: Notify,
    hook: Mutex<Option<DeliveryHook>>,
    metrics: std::sync::OnceLock<crate::metrics::Metrics>,
    dropped_total: AtomicU64,
    /// Unfinished records per kind (to count what a shutdown deadline drops).
    unfinished: [AtomicU64; KINDS.len()],
    /// Set at the shutdown deadline: what finishes later is no longer reported.
    abandoned: std::sync::atomic::AtomicBool,
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
    pub(crate) fn start(recorder: Arc<dyn Recorder>, config: RecordQueueConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let shared = Arc::new(Shared {
            recorder,
            depth: AtomicUsize::new(0),
            idle: Notify::new(),
            hook: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
            dropped_total: AtomicU64::new(0),
            unfinished: Default::default(),
            abandoned: std::sync::atomic::AtomicBool::new(false),
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

    /// Installs a per-record outcome hook (tests).
    #[cfg(test)]
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
    pub(crate) async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        let r = call_recorder(
            self.shared.config.call_timeout,
            self.shared.recorder.record_interception(rec),
        )
        .await
        .map_err(BoxError::from);
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
        RecordSink {
            interception_id,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            tracker: Arc::new(Tracker {
                pending: AtomicUsize::new(1),
                ended: Mutex::new(None),
            }),
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
    fn report(&self, kind: RecordKind, outcome: Delivery) {
        if self.abandoned.load(Ordering::Acquire) {
            return;
        }
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
        let mut left = 0;
        let counts: Vec<(RecordKind, u64)> = KINDS
            .iter()
            .map(|k| (*k, self.unfinished[kind_index(*k)].load(Ordering::Acquire)))
            .collect();
        for (kind, n) in counts {
            for _ in 0..n {
                self.report(kind, Delivery::Dropped);
            }
            left += n;
        }
        self.abandoned.store(true, Ordering::Release);
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

    /// A record of `kind` was queued (or is held until its interception's other records finish).
    fn started(&self, kind: RecordKind) {
        self.unfinished[kind_index(kind)].fetch_add(1, Ordering::AcqRel);
        self.depth.fetch_add(1, Ordering::AcqRel);
        self.depth_changed();
    }

    fn depth_changed(&self) {
        if self.abandoned.load(Ordering::Acquire) {
            return;
        }
        if let Some(m) = self.metrics.get() {
            m.queue_depth(self.depth.load(Ordering::Acquire));
        }
    }

    fn finish_one(&self, kind: RecordKind) {
        self.unfinished[kind_index(kind)].fetch_sub(1, Ordering::AcqRel);
        let before = self.depth.fetch_sub(1, Ordering::AcqRel);
        self.depth_changed();
        if before == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn process(&self, job: Job) {
        self.deliver_with_retry(&job.record).await;
        if let Some(tracker) = job.tracker {
            self.release(&tracker).await;
        }
        self.finish_one(job.record.kind());
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
                self.deliver_with_retry(&Record::InterceptionEnded(ended))
                    .await;
                self.finish_one(RecordKind::InterceptionEnded);
            }
        }
    }

    async fn deliver_with_retry(&self, record: &Record) {
        let cfg = &self.config;
        let attempts = cfg.max_attempts.max(1);
        for attempt in 1..=attempts {
            let result =
                call_recorder(cfg.call_timeout, deliver(self.recorder.as_ref(), record)).await;
            let err = match result {
                Ok(()) => {
                    self.report(record.kind(), Delivery::Written);
                    return;
                }
                Err(e) => e,
            };
            if attempt == attempts {
                tracing::error!(
                    kind = record.kind().as_str(),
                    record_id = %record.id(),
                    attempts,
                    error = %err,
                    "recording failed; giving up"
                );
                self.report(record.kind(), Delivery::Failed);
                return;
            }
            let delay = backoff(cfg.initial_backoff, cfg.max_backoff, attempt - 1);
            tracing::warn!(kind = record.kind().as_str(), record_id = %record.id(), attempt, error = %err, ?delay, "recording failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// One recorder call under the call timeout. A panic inside the recorder is caught and
/// becomes an error like any other (retried, then counted): it must kill neither the
/// worker task nor the request that awaits `record_interception`.
async fn call_recorder<F>(timeout: Duration, call: F) -> Result<(), String>
where
    F: Future<Output = Result<(), BoxError>>,
{
    match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            Err(format!("recorder panicked: {what}"))
        }
        Err(_) => Err("recorder call timed out".to_owned()),
    }
}

/// `min(initial · 2^n, max)` with ±25 % jitter.
fn backoff(initial: Duration, max: Duration, n: u32) -> Duration {
    let base = initial.saturating_mul(2u32.saturating_pow(n)).min(max);
    let jitter: f64 = rand::random_range(0.75..1.25);
    base.mul_f64(jitter)
}

/// Hands the records of one interception to the queue.
pub(crate) struct RecordSink {
    interception_id: RecordId,
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
}

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSink")
            .field("interception_id", &self.interception_id)
            .finish_non_exhaustive()
    }
}

impl RecordSink {
    /// Queues one record, following the queue-full policy. Never awaits the recorder.
    pub(crate) async fn push(&self, record: Record) {
        self.tracker.pending.fetch_add(1, Ordering::AcqRel);
        self.shared.started(record.kind());
        let job = Job {
            record,
            tracker: Some(self.tracker.clone()),
        };
        if let Err(job) = self.send(job).await {
            self.dropped(&job.record);
            self.shared.release(&self.tracker).await;
            self.shared.finish_one(job.record.kind());
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

    fn dropped(&self, record: &Record) {
        tracing::error!(
            kind = record.kind().as_str(),
            record_id = %record.id(),
            interception_id = %self.interception_id,
            "record queue full or closed; record dropped"
        );
        self.shared.report(record.kind(), Delivery::Dropped);
    }

    /// Ends the interception: the ended record is delivered once every record pushed before
    /// it has finished.
    pub(crate) async fn end(self, ended: InterceptionEnded) {
        self.shared.started(RecordKind::InterceptionEnded);
        *self.tracker.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(ended);
        if self.tracker.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ended = self
                .tracker
                .ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(ended) = ended {
                let job = Job {
                    record: Record::InterceptionEnded(ended),
                    tracker: None,
                };
                if let Err(job) = self.send(job).await {
                    self.dropped(&job.record);
                    self.shared.finish_one(RecordKind::InterceptionEnded);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{MemoryRecorder, Outcome, TokenUsage};
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn usage(interception_id: RecordId) -> Record {
        Record::TokenUsage(TokenUsage {
            id: RecordId::new(),
            interception_id,
            provider_response_id: None,
            input_tokens: 1,
            output_tokens: 2,
            cache_read_input_tokens: 0,
            cache_write_input_tokens: 0,
            extra: BTreeMap::new(),
            created_at: SystemTime::now(),
        })
    }

    fn ended(id: RecordId) -> InterceptionEnded {
        InterceptionEnded {
            id,
            ended_at: SystemTime::now(),
            outcome: Outcome::Completed,
            error: None,
        }
    }

    /// A recorder whose token-usage writes never return.
    #[derive(Debug)]
    struct Stall;
    #[async_trait::async_trait]
    impl Recorder for Stall {
        async fn record_interception(&self, _: &Interception) -> Result<(), BoxError> {
            Ok(())
        }
        async fn record_interception_ended(&self, _: &InterceptionEnded) -> Result<(), BoxError> {
            Ok(())
        }
        async fn record_token_usage(&self, _: &TokenUsage) -> Result<(), BoxError> {
            std::future::pending().await
        }
        async fn record_prompt_usage(&self, _: &super::super::PromptUsage) -> Result<(), BoxError> {
            Ok(())
        }
        async fn record_tool_usage(&self, _: &super::super::ToolUsage) -> Result<(), BoxError> {
            Ok(())
        }
        async fn record_model_thought(
            &self,
            _: &super::super::ModelThought,
        ) -> Result<(), BoxError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_calls_are_retried_and_ended_comes_last() {
        let mem = MemoryRecorder::new();
        mem.fail_next(RecordKind::TokenUsage, 2);
        let q = RecordQueue::start(Arc::new(mem.clone()), RecordQueueConfig::default());
        let id = RecordId::new();
        let sink = q.sink(id);
        sink.push(usage(id)).await;
        sink.end(ended(id)).await;
        let left = q
            .drain(tokio::time::Instant::now() + Duration::from_secs(30))
            .await;
        assert_eq!(left, 0);
        assert_eq!(mem.token_usages().len(), 1, "third attempt lands");
        assert_eq!(mem.interceptions_ended().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ended_waits_for_a_record_that_is_still_retrying() {
        let mem = MemoryRecorder::new();
        mem.fail_next(RecordKind::TokenUsage, 1);
        let q = RecordQueue::start(
            Arc::new(mem.clone()),
            RecordQueueConfig::default().with_workers(2),
        );
        let id = RecordId::new();
        let sink = q.sink(id);
        sink.push(usage(id)).await;
        sink.end(ended(id)).await;
        // Let the first (failing) attempt run; the retry is now sleeping in backoff.
        tokio::task::yield_now().await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            mem.interceptions_ended().is_empty(),
            "ended must not overtake its token usage"
        );
        q.drain(tokio::time::Instant::now() + Duration::from_secs(30))
            .await;
        assert_eq!(mem.token_usages().len(), 1);
        assert_eq!(mem.interceptions_ended().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn final_failure_is_counted_and_the_interception_still_ends() {
        let mem = MemoryRecorder::new();
        mem.fail_next(RecordKind::TokenUsage, 100);
        let counts = Arc::new(Mutex::new(Vec::new()));
        let q = RecordQueue::start(
            Arc::new(mem.clone()),
            RecordQueueConfig::default().with_max_attempts(3),
        );
        let c = counts.clone();
        q.set_hook(Arc::new(move |k, d| c.lock().unwrap().push((k, d))));
        let id = RecordId::new();
        let sink = q.sink(id);
        sink.push(usage(id)).await;
        sink.end(ended(id)).await;
        assert_eq!(
            q.drain(tokio::time::Instant::now() + Duration::from_secs(60))
                .await,
            0
        );
        let counts = counts.lock().unwrap().clone();
        assert!(counts.contains(&(RecordKind::TokenUsage, Delivery::Failed)));
        assert!(counts.contains(&(RecordKind::InterceptionEnded, Delivery::Written)));
        assert!(mem.token_usages().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_with_drop_policy_counts_the_drop() {
        // One worker, blocked on a recorder that never answers within the timeout.
        let cfg = RecordQueueConfig::default()
            .with_capacity(1)
            .with_workers(1)
            .with_full_policy(QueueFullPolicy::Drop);
        let q = RecordQueue::start(Arc::new(Stall), cfg);
        let id = RecordId::new();
        let sink = q.sink(id);
        sink.push(usage(id)).await; // taken by the worker (stalls)
        tokio::task::yield_now().await;
        sink.push(usage(id)).await; // fills the queue
        sink.push(usage(id)).await; // dropped
        assert_eq!(q.dropped_total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn records_left_at_the_deadline_are_counted_as_dropped_per_kind() {
        let registry = prometheus::Registry::new();
        let metrics = crate::metrics::Metrics::new(&registry).unwrap();
        let q = RecordQueue::start(
            Arc::new(Stall),
            RecordQueueConfig::default().with_call_timeout(Duration::from_secs(3600)),
        );
        q.set_metrics(metrics);
        let id = RecordId::new();
        let sink = q.sink(id);
        sink.push(usage(id)).await;
        sink.end(ended(id)).await;
        let left = q
            .drain(tokio::time::Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(left, 2);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"records_total{kind="token_usage",outcome="dropped"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"records_total{kind="interception_ended",outcome="dropped"} 1"#),
            "{text}"
        );
        assert!(text.contains("record_queue_depth 0"), "{text}");
    }
}

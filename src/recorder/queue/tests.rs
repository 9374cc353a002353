//! The record queue's unit tests.

use super::*;
use crate::recorder::PermanentError;
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
        cost_usd: None,
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
    async fn record_model_thought(&self, _: &super::super::ModelThought) -> Result<(), BoxError> {
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

/// A recorder that answers every call at once, except that calls of the kinds in `stall`
/// never return. Counts the calls per kind.
#[derive(Debug, Default)]
struct Scripted {
    stall: Vec<RecordKind>,
    calls: Mutex<Vec<RecordKind>>,
}

impl Scripted {
    fn stalling(kinds: &[RecordKind]) -> Self {
        Self {
            stall: kinds.to_vec(),
            ..Self::default()
        }
    }

    fn calls(&self, kind: RecordKind) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == kind)
            .count()
    }

    async fn call(&self, kind: RecordKind) -> Result<(), BoxError> {
        self.calls.lock().unwrap().push(kind);
        if self.stall.contains(&kind) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Recorder for Scripted {
    async fn record_interception(&self, _: &Interception) -> Result<(), BoxError> {
        self.call(RecordKind::Interception).await
    }
    async fn record_interception_ended(&self, _: &InterceptionEnded) -> Result<(), BoxError> {
        self.call(RecordKind::InterceptionEnded).await
    }
    async fn record_token_usage(&self, _: &TokenUsage) -> Result<(), BoxError> {
        self.call(RecordKind::TokenUsage).await
    }
    async fn record_prompt_usage(&self, _: &super::super::PromptUsage) -> Result<(), BoxError> {
        self.call(RecordKind::PromptUsage).await
    }
    async fn record_tool_usage(&self, _: &super::super::ToolUsage) -> Result<(), BoxError> {
        self.call(RecordKind::ToolUsage).await
    }
    async fn record_model_thought(&self, _: &super::super::ModelThought) -> Result<(), BoxError> {
        self.call(RecordKind::ModelThought).await
    }
}

/// Every outcome the queue reports, in order.
fn outcomes(q: &RecordQueue) -> Arc<Mutex<Vec<(RecordKind, Delivery)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    q.set_hook(Arc::new(move |k, d| s.lock().unwrap().push((k, d))));
    seen
}

#[tokio::test(start_paused = true)]
async fn a_record_written_before_the_deadline_is_not_also_counted_as_dropped() {
    // The token usage is written; its interception's end then stalls past the deadline. The
    // worker is still busy with the end (delivered right after the usage, on the same
    // worker), but the usage itself is finished: written, and only written.
    let rec = Arc::new(Scripted::stalling(&[RecordKind::InterceptionEnded]));
    let q = RecordQueue::start(
        rec.clone(),
        RecordQueueConfig::default().with_call_timeout(Duration::from_secs(3600)),
    );
    let seen = outcomes(&q);
    let id = RecordId::new();
    let sink = q.sink(id);
    sink.push(usage(id)).await;
    sink.end(ended(id)).await;
    let left = q
        .drain(tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(rec.calls(RecordKind::TokenUsage), 1);
    assert_eq!(rec.calls(RecordKind::InterceptionEnded), 1);
    assert_eq!(left, 1, "only the end was unfinished");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (RecordKind::TokenUsage, Delivery::Written),
            (RecordKind::InterceptionEnded, Delivery::Dropped),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_record_queued_after_the_deadline_is_counted_as_dropped_and_not_delivered() {
    let rec = Arc::new(Scripted::stalling(&[RecordKind::TokenUsage]));
    let q = RecordQueue::start(
        rec.clone(),
        RecordQueueConfig::default().with_call_timeout(Duration::from_secs(3600)),
    );
    let seen = outcomes(&q);
    let id = RecordId::new();
    let sink = q.sink(id);
    sink.push(usage(id)).await;
    let left = q
        .drain(tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(left, 1);
    // An interception that outlived the deadline queues its last records now.
    let late = RecordId::new();
    let sink = q.sink(late);
    sink.push(Record::ModelThought(crate::recorder::ModelThought {
        id: RecordId::new(),
        interception_id: late,
        provider_response_id: None,
        content: "late".to_owned(),
        source: crate::recorder::ThoughtSource::Thinking,
        created_at: SystemTime::now(),
    }))
    .await;
    sink.end(ended(late)).await;
    // Give the workers every chance to deliver them (paused time: no wall-clock wait).
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rec.calls(RecordKind::ModelThought), 0);
    assert_eq!(rec.calls(RecordKind::InterceptionEnded), 0);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (RecordKind::TokenUsage, Delivery::Dropped),
            (RecordKind::ModelThought, Delivery::Dropped),
            (RecordKind::InterceptionEnded, Delivery::Dropped),
        ]
    );
    assert_eq!(q.dropped_total(), 3);
}

/// A recorder whose token-usage writes fail with the given error, counting the calls.
#[derive(Debug)]
struct Failing {
    error: fn() -> BoxError,
    calls: AtomicUsize,
    mem: MemoryRecorder,
}

#[async_trait::async_trait]
impl Recorder for Failing {
    async fn record_interception(&self, r: &Interception) -> Result<(), BoxError> {
        self.mem.record_interception(r).await
    }
    async fn record_interception_ended(&self, r: &InterceptionEnded) -> Result<(), BoxError> {
        self.mem.record_interception_ended(r).await
    }
    async fn record_token_usage(&self, _: &TokenUsage) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err((self.error)())
    }
    async fn record_prompt_usage(&self, r: &super::super::PromptUsage) -> Result<(), BoxError> {
        self.mem.record_prompt_usage(r).await
    }
    async fn record_tool_usage(&self, r: &super::super::ToolUsage) -> Result<(), BoxError> {
        self.mem.record_tool_usage(r).await
    }
    async fn record_model_thought(&self, r: &super::super::ModelThought) -> Result<(), BoxError> {
        self.mem.record_model_thought(r).await
    }
}

/// Delivers one token usage and the interception's end through a queue over `error`;
/// returns the token-usage calls and the outcomes.
async fn deliver_failing(error: fn() -> BoxError) -> (usize, Vec<(RecordKind, Delivery)>) {
    let rec = Arc::new(Failing {
        error,
        calls: Default::default(),
        mem: MemoryRecorder::new(),
    });
    let q = RecordQueue::start(rec.clone(), RecordQueueConfig::default());
    let seen = outcomes(&q);
    let id = RecordId::new();
    let sink = q.sink(id);
    sink.push(usage(id)).await;
    sink.end(ended(id)).await;
    let left = q
        .drain(tokio::time::Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(left, 0);
    assert_eq!(rec.mem.interceptions_ended().len(), 1);
    let seen = seen.lock().unwrap().clone();
    (rec.calls.load(Ordering::SeqCst), seen)
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    /// As the SQL recorders return it: the marker under an error of their own.
    #[derive(Debug)]
    struct Wrapped(BoxError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot record token usage: {}", self.0)
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }
    let start = tokio::time::Instant::now();
    let (calls, seen) = deliver_failing(|| {
        Box::new(Wrapped(
            PermanentError::new("FOREIGN KEY constraint failed").into(),
        ))
    })
    .await;
    assert_eq!(calls, 1, "not retried");
    assert_eq!(start.elapsed(), Duration::ZERO, "no back-off either");
    assert_eq!(
        seen,
        [
            (RecordKind::TokenUsage, Delivery::Failed),
            (RecordKind::InterceptionEnded, Delivery::Written),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_error_is_retried_up_to_max_attempts() {
    let (calls, seen) = deliver_failing(|| "database is locked".into()).await;
    assert_eq!(calls, RecordQueueConfig::default().max_attempts as usize);
    assert_eq!(
        seen,
        [
            (RecordKind::TokenUsage, Delivery::Failed),
            (RecordKind::InterceptionEnded, Delivery::Written),
        ]
    );
}

/// An interception task that stops without ending its interception (a panic) still gets
/// the end record, after the records it queued.
#[tokio::test(start_paused = true)]
async fn a_sink_dropped_without_end_ends_the_interception_failed() {
    let mem = MemoryRecorder::new();
    let q = RecordQueue::start(Arc::new(mem.clone()), RecordQueueConfig::default());
    let id = RecordId::new();
    let sink = q.sink(id);
    sink.push(usage(id)).await;
    drop(sink);
    let left = q
        .drain(tokio::time::Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(left, 0);
    assert_eq!(mem.token_usages().len(), 1);
    let ends = mem.interceptions_ended();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].outcome, Outcome::Failed);
    assert_eq!(ends[0].error.as_deref(), Some(ABANDONED));
}

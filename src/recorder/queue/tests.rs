//! The record queue's unit tests.

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

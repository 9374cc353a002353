//! [`MemoryRecorder`]: keeps every record in memory, for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::{
    Interception, InterceptionEnded, ModelThought, PromptUsage, RecordKind, Recorder, TokenUsage,
    ToolUsage,
};
use crate::BoxError;

/// A recorder that keeps every record in memory; the reference implementation for tests.
///
/// It is idempotent by record id like the SQL recorders: a repeated call with the same id
/// is a no-op. Clones share the same storage.
///
/// ```
/// use aibridge::recorder::MemoryRecorder;
/// let rec = MemoryRecorder::new();
/// assert!(rec.token_usages().is_empty());
/// ```
///
/// With the `test-util` feature, `fail_next` makes calls fail on
/// purpose, to test retries and the 503 of an unrecordable interception.
#[derive(Debug, Clone, Default)]
pub struct MemoryRecorder {
    inner: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    interceptions: Vec<Interception>,
    ended: Vec<InterceptionEnded>,
    tokens: Vec<TokenUsage>,
    prompts: Vec<PromptUsage>,
    tools: Vec<ToolUsage>,
    thoughts: Vec<ModelThought>,
    fail: HashMap<RecordKind, usize>,
}

impl MemoryRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panicking test thread; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every interception recorded so far.
    pub fn interceptions(&self) -> Vec<Interception> {
        self.lock().interceptions.clone()
    }
    /// Every interception end recorded so far.
    pub fn interceptions_ended(&self) -> Vec<InterceptionEnded> {
        self.lock().ended.clone()
    }
    /// Every token usage recorded so far.
    pub fn token_usages(&self) -> Vec<TokenUsage> {
        self.lock().tokens.clone()
    }
    /// Every prompt recorded so far.
    pub fn prompt_usages(&self) -> Vec<PromptUsage> {
        self.lock().prompts.clone()
    }
    /// Every tool usage recorded so far.
    pub fn tool_usages(&self) -> Vec<ToolUsage> {
        self.lock().tools.clone()
    }
    /// Every model thought recorded so far.
    pub fn model_thoughts(&self) -> Vec<ModelThought> {
        self.lock().thoughts.clone()
    }

    /// Waits until at least `n` interception ends have been recorded. An interception's
    /// end is delivered after all its other records, so this is the point where a test
    /// can read them.
    pub async fn wait_for_ended(&self, n: usize) {
        loop {
            let notified = self.changed.notified();
            if self.lock().ended.len() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Makes the next `n` calls of the given kind fail (to test retries and 503s).
    ///
    /// ```
    /// use aibridge::recorder::{MemoryRecorder, RecordKind};
    /// let rec = MemoryRecorder::new();
    /// rec.fail_next(RecordKind::TokenUsage, 2); // the next two token usages fail
    /// ```
    #[cfg(any(test, feature = "test-util"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn fail_next(&self, kind: RecordKind, n: usize) {
        self.lock().fail.insert(kind, n);
    }

    fn should_fail(state: &mut State, kind: RecordKind) -> bool {
        match state.fail.get_mut(&kind) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

fn injected_failure(kind: RecordKind) -> BoxError {
    format!("memory recorder: injected failure for {}", kind.as_str()).into()
}

macro_rules! store {
    ($self:ident, $rec:ident, $kind:expr, $field:ident) => {{
        let mut state = $self.lock();
        if Self::should_fail(&mut state, $kind) {
            return Err(injected_failure($kind));
        }
        if !state.$field.iter().any(|r| r.id == $rec.id) {
            state.$field.push($rec.clone());
        }
        drop(state);
        $self.changed.notify_waiters();
        Ok(())
    }};
}

#[async_trait::async_trait]
impl Recorder for MemoryRecorder {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        store!(self, rec, RecordKind::Interception, interceptions)
    }
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        store!(self, rec, RecordKind::InterceptionEnded, ended)
    }
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        store!(self, rec, RecordKind::TokenUsage, tokens)
    }
    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        store!(self, rec, RecordKind::PromptUsage, prompts)
    }
    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        store!(self, rec, RecordKind::ToolUsage, tools)
    }
    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        store!(self, rec, RecordKind::ModelThought, thoughts)
    }
}

//! [`SpendSource`]: where a replica reads what every replica spent, and the spend figures.

use std::time::SystemTime;

use async_trait::async_trait;

use super::rules::Window;
use crate::BoxError;

/// The store the [`RulesPolicy`](super::RulesPolicy) refreshes its ledger from, so that
/// replicas sharing one database enforce one budget. Implemented by `SqliteRecorder` and
/// `PostgresRecorder`. Called in the background (every `refresh_every`), never per request.
#[async_trait]
pub trait SpendSource: Send + Sync + 'static {
    /// Per actor (`initiator_id`), the sums of every token-usage record created at or after
    /// `since`.
    ///
    /// # Errors
    ///
    /// The store could not be read; the policy keeps its last figures and tries again.
    async fn spend_since(&self, since: SystemTime) -> Result<Vec<ActorSpend>, BoxError>;
}

/// What one actor spent since some time: the four token counts and the cost.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ActorSpend {
    /// The actor (`initiator_id`).
    pub actor: String,
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// The sum of the records' `cost_usd` (records without a price add nothing).
    pub cost_usd: f64,
}

impl ActorSpend {
    /// An actor's spend, counts in the order input, output, cache read, cache write.
    pub fn new(actor: impl Into<String>, tokens: [u64; 4], cost_usd: f64) -> Self {
        let [
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
        ] = tokens;
        Self {
            actor: actor.into(),
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            cost_usd,
        }
    }

    /// All four counts together (what a token budget counts).
    pub fn tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }
}

/// An actor's spend in the current window of its budget.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct Spend {
    /// The window counted; `None` when the actor has no budget (the figures are then 0).
    pub window: Option<Window>,
    /// Tokens (all four counts).
    pub tokens: u64,
    /// US dollars.
    pub usd: f64,
    /// When the window resets.
    pub resets_at: Option<SystemTime>,
}

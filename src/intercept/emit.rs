//! Turns facts into records and hands them to the interception's record sink.

use std::sync::Arc;
use std::time::SystemTime;

use super::facts::Fact;
use crate::error::truncate_error;
use crate::metrics::{Labels, Metrics};
use crate::policy::{Policy, Prices};
use crate::recorder::limits::RecordLimits;
use crate::recorder::queue::RecordSink;
use crate::recorder::{
    InterceptionEnded, ModelThought, Outcome, PromptUsage, Record, RecordId, TokenUsage, ToolUsage,
};

/// The records of one interception.
#[derive(Debug)]
pub(crate) struct Emitter {
    sink: RecordSink,
    interception_id: RecordId,
    /// The prompt (already cut to its recorded size), until it is recorded.
    prompt: Option<String>,
    /// The size caps of recorded prompts and tool inputs.
    limits: RecordLimits,
    /// Set once an upstream call was attempted (S14).
    pub(crate) attempted: bool,
    metrics: Option<(Metrics, Labels)>,
    /// The first and the last upstream response id with token usage (S20).
    response_ids: Option<(String, String)>,
    /// Input and output tokens over the interception's calls (span attributes).
    tokens: (u64, u64),
    /// Prices the token usage and tells the policy about it.
    account: Option<Account>,
}

/// What the token-usage records of an interception cost, and who is told.
pub(crate) struct Account {
    pub(crate) prices: Arc<Prices>,
    pub(crate) policy: Option<Arc<dyn Policy>>,
    pub(crate) actor: String,
    pub(crate) model: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("policy", &self.policy.is_some())
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Emitter {
    pub(crate) fn new(
        sink: RecordSink,
        interception_id: RecordId,
        prompt: Option<String>,
        metrics: Option<(Metrics, Labels)>,
    ) -> Self {
        // Cut now, so a huge prompt is not held in full until it is recorded.
        let limits = sink.limits();
        Self {
            sink,
            interception_id,
            prompt: prompt.map(|p| limits.prompt(p)),
            limits,
            attempted: false,
            metrics,
            response_ids: None,
            tokens: (0, 0),
            account: None,
        }
    }

    /// Prices token usage with `account` and reports it to its policy.
    pub(crate) fn with_account(mut self, account: Account) -> Self {
        self.account = Some(account);
        self
    }

    /// The first and the last upstream response id of the interception's calls (each
    /// call's token usage names its response), once there is one.
    pub(crate) fn response_ids(&self) -> Option<&(String, String)> {
        self.response_ids.as_ref()
    }

    /// Input and output tokens over the interception's calls so far.
    pub(crate) fn tokens(&self) -> (u64, u64) {
        self.tokens
    }

    /// Metrics are driven by the records themselves, when they are created.
    fn observe(&self, record: &Record) {
        let Some((m, labels)) = &self.metrics else {
            return;
        };
        match record {
            Record::TokenUsage(t) => m.tokens(labels, t),
            Record::PromptUsage(_) => m.prompt(labels),
            Record::ToolUsage(t) if !t.injected => m.tool_selection(labels, &t.tool),
            _ => {}
        }
    }

    /// Records every fact, draining the vector.
    pub(crate) async fn facts(&mut self, facts: &mut Vec<Fact>) {
        for fact in facts.drain(..) {
            let record = self.record(fact);
            if let Some(record) = record {
                self.observe(&record);
                self.sink.push(record).await;
            }
        }
    }

    fn record(&mut self, fact: Fact) -> Option<Record> {
        let id = RecordId::new();
        let interception_id = self.interception_id;
        let created_at = SystemTime::now();
        Some(match fact {
            Fact::ResponseId(rid) => {
                let prompt = self.prompt.take()?;
                Record::PromptUsage(PromptUsage {
                    id,
                    interception_id,
                    provider_response_id: Some(rid),
                    prompt,
                    created_at,
                })
            }
            Fact::Usage { response_id, usage } => {
                self.tokens.0 = self.tokens.0.saturating_add(usage.input);
                self.tokens.1 = self.tokens.1.saturating_add(usage.output);
                if let Some(rid) = &response_id {
                    match &mut self.response_ids {
                        Some((_, last)) => last.clone_from(rid),
                        None => self.response_ids = Some((rid.clone(), rid.clone())),
                    }
                }
                let mut t = TokenUsage {
                    id,
                    interception_id,
                    provider_response_id: response_id,
                    input_tokens: usage.input,
                    output_tokens: usage.output,
                    cache_read_input_tokens: usage.cache_read,
                    cache_write_input_tokens: usage.cache_write,
                    extra: usage.extra,
                    cost_usd: None,
                    created_at,
                };
                if let Some(a) = &self.account {
                    t.cost_usd = a.prices.cost(&a.model, &t);
                    if let Some(policy) = &a.policy {
                        policy.usage(&a.actor, &a.model, &t);
                    }
                }
                Record::TokenUsage(t)
            }
            Fact::Tool {
                response_id,
                name,
                call_id,
                input,
                provider_executed,
            } => Record::ToolUsage(ToolUsage {
                id,
                interception_id,
                provider_response_id: response_id,
                tool: name,
                tool_call_id: call_id,
                server_url: None,
                input: self.limits.tool_input(input),
                injected: false,
                provider_executed,
                invocation_error: None,
                created_at,
            }),
            Fact::InjectedTool {
                response_id,
                name,
                call_id,
                server_url,
                input,
                error,
                executed,
            } => {
                if executed && let Some((m, labels)) = &self.metrics {
                    m.injected_tool(labels, &server_url, &name);
                }
                Record::ToolUsage(ToolUsage {
                    id,
                    interception_id,
                    provider_response_id: response_id,
                    tool: name,
                    tool_call_id: call_id,
                    server_url: Some(server_url),
                    input: self.limits.tool_input(input),
                    injected: true,
                    provider_executed: false,
                    invocation_error: error,
                    created_at,
                })
            }
            Fact::Thought {
                response_id,
                content,
                source,
            } => Record::ModelThought(ModelThought {
                id,
                interception_id,
                provider_response_id: response_id,
                content,
                source,
                created_at,
            }),
        })
    }

    /// Ends the interception: the pending prompt (if an upstream call was attempted), then
    /// the ended record, delivered after all others.
    pub(crate) async fn end(mut self, outcome: Outcome, error: Option<String>) {
        if self.attempted
            && let Some(prompt) = self.prompt.take()
        {
            let record = Record::PromptUsage(PromptUsage {
                id: RecordId::new(),
                interception_id: self.interception_id,
                provider_response_id: None,
                prompt,
                created_at: SystemTime::now(),
            });
            self.observe(&record);
            self.sink.push(record).await;
        }
        let error = if outcome == Outcome::Completed {
            None
        } else {
            error.map(truncate_error)
        };
        self.sink
            .end(InterceptionEnded {
                id: self.interception_id,
                ended_at: SystemTime::now(),
                outcome,
                error,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::recorder::queue::RecordQueue;
    use crate::recorder::{MemoryRecorder, RecordQueueConfig};

    fn input_of(record: Option<Record>) -> String {
        match record {
            Some(Record::ToolUsage(t)) => t.input,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn prompts_and_tool_inputs_are_cut_as_records_are_made() {
        let limits = RecordLimits {
            prompt: 50,
            tool_input: 100,
        };
        let queue = RecordQueue::start_with(
            Arc::new(MemoryRecorder::new()),
            RecordQueueConfig::default(),
            limits,
        );
        let id = RecordId::new();
        let mut emitter = Emitter::new(queue.sink(id), id, Some("p".repeat(500)), None);
        // Held cut, not whole, until it is recorded.
        let held = emitter.prompt.clone().unwrap();
        assert_eq!(held, format!("{}…[truncated: 500 bytes]", "p".repeat(25)));

        let big = format!("{{\"q\":\"{}\"}}", "z".repeat(300));
        for fact in [
            Fact::Tool {
                response_id: None,
                name: "read_file".to_owned(),
                call_id: "c1".to_owned(),
                input: big.clone(),
                provider_executed: false,
            },
            Fact::InjectedTool {
                response_id: None,
                name: "list_workspaces".to_owned(),
                call_id: "c2".to_owned(),
                server_url: "http://127.0.0.1:1/mcp".to_owned(),
                input: big.clone(),
                error: None,
                executed: true,
            },
        ] {
            let input = input_of(emitter.record(fact));
            assert!(input.len() <= 100, "{input}");
            let v: serde_json::Value = serde_json::from_str(&input).unwrap();
            assert_eq!(v["aibridge_truncated"], true);
            assert_eq!(v["original_bytes"], big.len());
            assert!(big.starts_with(v["prefix"].as_str().unwrap()));
        }
        let small = Fact::Tool {
            response_id: None,
            name: "read_file".to_owned(),
            call_id: "c3".to_owned(),
            input: "{\"q\":1}".to_owned(),
            provider_executed: false,
        };
        assert_eq!(input_of(emitter.record(small)), "{\"q\":1}");
    }
}

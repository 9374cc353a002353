//! Turns facts into records and hands them to the interception's record sink.

use std::time::SystemTime;

use super::facts::Fact;
use crate::error::truncate_error;
use crate::metrics::{Labels, Metrics};
use crate::recorder::queue::RecordSink;
use crate::recorder::{
    InterceptionEnded, ModelThought, Outcome, PromptUsage, Record, RecordId, TokenUsage, ToolUsage,
};

/// The records of one interception.
#[derive(Debug)]
pub(crate) struct Emitter {
    sink: RecordSink,
    interception_id: RecordId,
    /// The prompt, until it is recorded.
    prompt: Option<String>,
    /// Set once an upstream call was attempted (S14).
    pub(crate) attempted: bool,
    metrics: Option<(Metrics, Labels)>,
}

impl Emitter {
    pub(crate) fn new(
        sink: RecordSink,
        interception_id: RecordId,
        prompt: Option<String>,
        metrics: Option<(Metrics, Labels)>,
    ) -> Self {
        Self {
            sink,
            interception_id,
            prompt,
            attempted: false,
            metrics,
        }
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
            Fact::Usage { response_id, usage } => Record::TokenUsage(TokenUsage {
                id,
                interception_id,
                provider_response_id: response_id,
                input_tokens: usage.input,
                output_tokens: usage.output,
                cache_read_input_tokens: usage.cache_read,
                cache_write_input_tokens: usage.cache_write,
                extra: usage.extra,
                created_at,
            }),
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
                input,
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
                    input,
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

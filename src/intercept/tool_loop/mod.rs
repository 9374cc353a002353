//! The MCP tool loop's generic part (mcp.md "The loop"): which tools a request gets, the
//! continue-or-finish decision, executing the injected calls, the loop's state and usage
//! sums, and the streaming view skeleton. What differs per API is behind the API adapters
//! (`super::adapter`), which depend on this module, never the other way round.

mod decide;
mod view;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

pub(crate) use self::decide::{Decision, Ending, NotExecuted, decide, limit_result};
pub(crate) use self::view::{McpView, Rewrite, ViewLoop};
use super::facts::Fact;
use super::request::{RequestInfo, client_tool_names};
use crate::BoxFuture;
use crate::mcp::{InjectedTool, ToolOutcome};

/// Executes injected tool calls (the MCP registry; a fake in tests).
pub(crate) trait ToolExecutor: Send + Sync {
    /// Calls `tool` with `arguments`; never fails (failures are in the outcome).
    fn call<'a>(
        &'a self,
        tool: &'a InjectedTool,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, ToolOutcome>;
}

/// Where the tool loop gets its tools, bounds and executor (the MCP registry).
pub(crate) trait ToolSource: Send + Sync {
    /// The tools `actor` gets right now (sorted by id) and the executor of their calls
    /// (the actor's own MCP sessions where it has a credential of its own).
    /// `allow` is the policy stage's per-actor tool filter (original names), if any.
    fn tools_for<'a>(
        &'a self,
        actor: &'a crate::Actor,
        allow: Option<crate::mcp::AllowTool>,
    ) -> BoxFuture<'a, Offer>;
    /// Whether tools are injected into an `api` request for this model (the skip
    /// predicate).
    fn should_inject(&self, api: crate::provider::Api, model: &str) -> bool;
    /// The loop bounds.
    fn loop_config(&self) -> LoopConfig;
}

/// The tools an actor is offered and where their calls go.
pub(crate) struct Offer {
    /// Sorted by id.
    pub(crate) tools: Vec<InjectedTool>,
    /// Executes calls of these tools.
    pub(crate) executor: Arc<dyn ToolExecutor>,
}

/// The injected tools of one interception (a snapshot, sorted by id), and those the
/// policy refused this request ([`Allow::mcp_tools`](crate::policy::Allow)): not injected,
/// and a call the model still makes to one is answered as not executed, never run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tools(pub(crate) Vec<InjectedTool>, Vec<InjectedTool>);

/// The invocation error (and the model's tool result) of a call to a tool the policy
/// refused this request.
pub(crate) const REFUSED: &str = "not executed: the tool is not allowed for this request by policy";

fn find<'a>(list: &'a [InjectedTool], id: &str) -> Option<&'a InjectedTool> {
    list.binary_search_by(|t| t.id.as_str().cmp(id))
        .ok()
        .map(|i| &list[i])
}

impl Tools {
    /// Injected tools (sorted by id), none refused.
    pub(crate) fn new(tools: Vec<InjectedTool>) -> Self {
        Self(tools, Vec::new())
    }

    /// The injected tool with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&InjectedTool> {
        find(&self.0, id)
    }

    /// The refused tool with this id.
    pub(crate) fn refused(&self, id: &str) -> Option<&InjectedTool> {
        find(&self.1, id)
    }

    /// Whether `name` is the id of an injected or a refused tool (its calls are the
    /// bridge's, never the client's).
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some() || self.refused(name).is_some()
    }
}

/// The injected tools a request gets: the snapshot minus ids a client tool already uses,
/// split by the policy's filter on original names into injected and refused.
pub(crate) fn tools_for_request(
    body: &[u8],
    snapshot: &[InjectedTool],
    filter: Option<&crate::policy::ToolFilter>,
) -> Tools {
    let client = client_tool_names(body);
    let mut list: Vec<InjectedTool> = snapshot
        .iter()
        .filter(|t| {
            let clash = client.contains(&t.id);
            if clash {
                tracing::warn!(tool = %t.id, "a client tool has an injected tool's id; not injecting it");
            }
            !clash
        })
        .cloned()
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    match filter {
        None => Tools::new(list),
        Some(f) => {
            let (allowed, refused) = list.into_iter().partition(|t| f.allows(&t.name));
            Tools(allowed, refused)
        }
    }
}

/// Loop bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopConfig {
    pub(crate) max_iterations: u32,
    pub(crate) max_result_bytes: usize,
    pub(crate) keep_alive: Duration,
}

/// One call of an injected tool that the model made.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    /// The provider's call id.
    pub(crate) call_id: String,
    /// The injected id (`bmcp_…`).
    pub(crate) tool_id: String,
    /// The arguments as the model sent them (JSON text).
    pub(crate) raw_input: String,
}

impl ToolCall {
    /// The arguments as a JSON object; empty ⇒ `{}`; anything else ⇒ the reason.
    pub(crate) fn arguments(&self) -> Result<Map<String, Value>, String> {
        if self.raw_input.trim().is_empty() {
            return Ok(Map::new());
        }
        match serde_json::from_str::<Value>(&self.raw_input) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(format!(
                "invalid arguments: expected a JSON object, got {}",
                kind(&other)
            )),
            Err(e) => Err(format!("invalid arguments: {e}")),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What one upstream message of the loop asked for.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    /// The upstream message id.
    pub(crate) response_id: Option<String>,
    /// The message(s) to append to the request for the next iteration, as JSON texts (the
    /// assistant turn in the API's format).
    pub(crate) assistant: Vec<String>,
    /// The injected calls, in order.
    pub(crate) calls: Vec<ToolCall>,
}

/// What a blocking response asks of the loop: its turn, whether it also called client
/// tools, and its usage object.
#[derive(Debug, Default)]
pub(crate) struct BlockingTurn {
    pub(crate) turn: Turn,
    pub(crate) client_tool: bool,
    pub(crate) usage: Map<String, Value>,
}

impl BlockingTurn {
    /// How the response ended, for [`decide`].
    pub(crate) fn ending(&self) -> Ending {
        Ending {
            injected: !self.turn.calls.is_empty(),
            client_tool: self.client_tool,
            complete: true,
        }
    }
}

/// A call with its outcome.
#[derive(Debug)]
pub(crate) struct Executed {
    pub(crate) call: ToolCall,
    pub(crate) outcome: ToolOutcome,
}

/// The invocation error of a call interrupted by the client leaving (or shutdown).
pub(crate) const CANCELLED: &str = "cancelled";

/// Runs the calls of one turn in order, producing their ToolUsage facts.
///
/// If `abort` resolves first (the client left, the bridge shuts down), the running call is
/// dropped, which cancels it on its server; it is recorded with the invocation error
/// `cancelled` and `abort`'s value is returned.
pub(crate) async fn execute<R>(
    tools: &Tools,
    executor: &dyn ToolExecutor,
    turn: &Turn,
    facts: &mut Vec<Fact>,
    abort: impl Future<Output = R>,
) -> Result<Vec<Executed>, R> {
    tokio::pin!(abort);
    let mut out = Vec::with_capacity(turn.calls.len());
    for call in &turn.calls {
        let Some(tool) = tools.get(&call.tool_id) else {
            if let Some(tool) = tools.refused(&call.tool_id) {
                out.push(refuse(tool, turn, call, REFUSED, facts));
            }
            continue;
        };
        let (outcome, executed, input) = match call.arguments() {
            Ok(args) => {
                let input = Value::Object(args.clone()).to_string();
                let span = tracing::info_span!(
                    "aibridge.tool_call",
                    mcp_server = %tool.server,
                    mcp_server_url = %tool.server_url,
                    mcp_tool = %tool.name,
                    tool_call_id = %call.call_id,
                );
                let running = tracing::Instrument::instrument(executor.call(tool, args), span);
                tokio::select! {
                    outcome = running => (outcome, true, input),
                    r = &mut abort => {
                        facts.push(Fact::InjectedTool {
                            response_id: turn.response_id.clone(),
                            name: tool.name.clone(),
                            call_id: call.call_id.clone(),
                            server_url: tool.server_url.clone(),
                            input,
                            error: Some(CANCELLED.to_owned()),
                            executed: true,
                        });
                        return Err(r);
                    }
                }
            }
            Err(reason) => (
                ToolOutcome::failed(reason),
                false,
                super::facts::json_text(&call.raw_input),
            ),
        };
        facts.push(Fact::InjectedTool {
            response_id: turn.response_id.clone(),
            name: tool.name.clone(),
            call_id: call.call_id.clone(),
            server_url: tool.server_url.clone(),
            input,
            error: outcome.invocation_error(),
            executed,
        });
        out.push(Executed {
            call: call.clone(),
            outcome,
        });
    }
    Ok(out)
}

/// Removes the client-tool facts (from index `from` on) that are calls of injected tools:
/// those are recorded when the bridge runs them, not as client tools.
pub(crate) fn drop_injected(facts: &mut Vec<Fact>, from: usize, tools: &Tools) {
    let mut i = from;
    while i < facts.len() {
        if matches!(&facts[i], Fact::Tool { name, .. } if tools.contains(name)) {
            facts.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Facts for injected calls that are not executed (loop limit, mixed with client calls).
pub(crate) fn not_executed(
    tools: &Tools,
    turn: &Turn,
    reason: NotExecuted,
    facts: &mut Vec<Fact>,
) -> Vec<Executed> {
    turn.calls
        .iter()
        .filter_map(|call| match tools.get(&call.tool_id) {
            Some(tool) => Some(refuse(tool, turn, call, reason.as_str(), facts)),
            None => tools
                .refused(&call.tool_id)
                .map(|tool| refuse(tool, turn, call, REFUSED, facts)),
        })
        .collect()
}

/// A call answered with `why` and recorded as not executed.
fn refuse(
    tool: &InjectedTool,
    turn: &Turn,
    call: &ToolCall,
    why: &str,
    facts: &mut Vec<Fact>,
) -> Executed {
    facts.push(Fact::InjectedTool {
        response_id: turn.response_id.clone(),
        name: tool.name.clone(),
        call_id: call.call_id.clone(),
        server_url: tool.server_url.clone(),
        input: super::facts::json_text(&call.raw_input),
        error: Some(why.to_owned()),
        executed: false,
    });
    Executed {
        call: call.clone(),
        outcome: ToolOutcome::failed(why.to_owned()),
    }
}

/// The state of one interception's tool loop.
pub(crate) struct LoopState {
    pub(crate) tools: Arc<Tools>,
    pub(crate) executor: Arc<dyn ToolExecutor>,
    pub(crate) config: LoopConfig,
    original: Bytes,
    info: RequestInfo,
    turns: Vec<String>,
    iteration: u32,
    /// Usage of the finished iterations (blocking loops).
    pub(crate) sum: UsageSum,
    /// The first upstream response's id (blocking loops): the id the client is shown
    /// (openai-responses.md S20).
    pub(crate) first_id: Option<String>,
}

impl std::fmt::Debug for LoopState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopState")
            .field("tools", &self.tools.0.len())
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

impl LoopState {
    pub(crate) fn new(
        tools: Arc<Tools>,
        executor: Arc<dyn ToolExecutor>,
        config: LoopConfig,
        original: Bytes,
        info: RequestInfo,
    ) -> Self {
        Self {
            tools,
            executor,
            config,
            original,
            info,
            turns: Vec::new(),
            iteration: 1,
            sum: UsageSum::default(),
            first_id: None,
        }
    }

    /// The client's original request body.
    pub(crate) fn original(&self) -> &Bytes {
        &self.original
    }

    /// The client's request, as classified.
    pub(crate) fn info(&self) -> &RequestInfo {
        &self.info
    }

    /// The turns appended to the client's conversation so far (JSON texts).
    pub(crate) fn turns(&self) -> &[String] {
        &self.turns
    }

    /// The current iteration (1-based): the number of the upstream call being answered.
    pub(crate) fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The decision for the current iteration's response.
    pub(crate) fn decide(&self, ending: Ending) -> Decision {
        decide(self.iteration, self.config.max_iterations, ending)
    }

    /// The result text of calls answered by the limit procedure.
    pub(crate) fn limit_result(&self) -> String {
        limit_result(self.config.max_iterations)
    }

    /// Appends a turn and its results (JSON texts in the API's format) to the
    /// conversation; the loop moves on to the next iteration.
    pub(crate) fn append(&mut self, assistant: Vec<String>, results: Vec<String>) {
        self.turns.extend(assistant);
        self.turns.extend(results);
        self.iteration = self.iteration.saturating_add(1);
    }
}

/// Integer usage fields summed over iterations (nested objects summed member-wise).
#[derive(Debug, Default, Clone)]
pub(crate) struct UsageSum(pub(crate) Map<String, Value>);

impl UsageSum {
    /// Adds one message's merged usage object.
    pub(crate) fn add(&mut self, usage: &Map<String, Value>) {
        add_into(&mut self.0, usage);
    }
}

fn add_into(acc: &mut Map<String, Value>, add: &Map<String, Value>) {
    for (k, v) in add {
        match v {
            Value::Number(n) if n.as_u64().is_some() => {
                let prev = acc.get(k).and_then(Value::as_u64).unwrap_or(0);
                acc.insert(
                    k.clone(),
                    Value::from(prev.saturating_add(n.as_u64().unwrap_or(0))),
                );
            }
            Value::Object(inner) => {
                let entry = acc
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(e) = entry {
                    add_into(e, inner);
                }
            }
            _ => {}
        }
    }
}

/// Merges `over` onto `base` (top-level keys of `over` win), as D9 merges usage.
pub(crate) fn merge_usage(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        if !v.is_null() {
            base.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_an_object() {
        let c = |raw: &str| ToolCall {
            call_id: "c".into(),
            tool_id: "t".into(),
            raw_input: raw.into(),
        };
        assert!(c("").arguments().unwrap().is_empty());
        assert_eq!(c(r#"{"a":1}"#).arguments().unwrap()["a"], 1);
        assert!(c("[1]").arguments().unwrap_err().contains("an array"));
        assert!(
            c("{")
                .arguments()
                .unwrap_err()
                .starts_with("invalid arguments: ")
        );
    }

    #[test]
    fn usage_sums_integers_recursively() {
        let mut s = UsageSum::default();
        let a: Value = serde_json::json!({"input_tokens": 7545, "output_tokens": 74, "service_tier": "x", "cache_creation": {"ephemeral_5m_input_tokens": 1}});
        let b: Value = serde_json::json!({"input_tokens": 7763, "output_tokens": 128, "cache_creation": {"ephemeral_5m_input_tokens": 2}});
        s.add(a.as_object().unwrap());
        s.add(b.as_object().unwrap());
        assert_eq!(s.0["input_tokens"], 15308);
        assert_eq!(s.0["output_tokens"], 202);
        assert_eq!(s.0["cache_creation"]["ephemeral_5m_input_tokens"], 3);
        assert!(!s.0.contains_key("service_tier"));
    }
}

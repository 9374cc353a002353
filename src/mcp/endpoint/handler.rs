//! One MCP session of the endpoint: bound to the actor that initialized it; lists and
//! calls that actor's tools, records every call, and announces tool-set changes.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::Actor;
use crate::clients::Client;
use crate::mcp::per_actor::ActorTools;
use crate::mcp::registry::McpRegistry;
use crate::mcp::result::{Block, ToolOutcome};
use crate::mcp::tools::InjectedTool;
use crate::pipeline::Shared;
use crate::policy::{Decision, Denial, PolicyRequest, ToolFilter};
use crate::provider::{Api, CredentialKind, ProviderKind};
use crate::recorder::{Interception, InterceptionEnded, Outcome, Record, RecordId, ToolUsage};

/// The record `provider_name` of calls through the endpoint.
const PROVIDER_NAME: &str = "mcp";
/// The invocation error of a call of a tool the actor does not have.
const NOT_AVAILABLE: &str = "tool not available to this actor";
/// The invocation error of a call of a tool the policy's tool filter refuses (as in the
/// bridge's tool loop).
const REFUSED: &str = "not executed: the tool is not allowed for this request by policy";

/// What every session of the endpoint shares.
pub(crate) struct EndpointCtx {
    registry: Arc<McpRegistry>,
    shared: Arc<Shared>,
}

/// One MCP session's handler (rmcp creates one per session).
pub(crate) struct Handler {
    ctx: Arc<EndpointCtx>,
    /// The actor that initialized the session.
    actor: OnceLock<Actor>,
    /// Sends `notifications/tools/list_changed`; stopped with the session.
    watcher: Mutex<Option<JoinHandle<()>>>,
}

/// The request's HTTP head, as rmcp hands it to the handler.
struct Head<'a> {
    actor: Option<&'a Actor>,
    headers: Option<&'a http::HeaderMap>,
}

// === impl EndpointCtx ===

impl EndpointCtx {
    pub(crate) fn new(registry: Arc<McpRegistry>, shared: Arc<Shared>) -> Self {
        Self { registry, shared }
    }
}

// === impl Handler ===

impl Handler {
    pub(crate) fn new(ctx: Arc<EndpointCtx>) -> Self {
        Self {
            ctx,
            actor: OnceLock::new(),
            watcher: Mutex::new(None),
        }
    }

    /// The request's actor. In a session (protocol versions with `initialize`) it must be
    /// the actor that initialized it; stateless requests (protocol 2026-07-28, a handler
    /// per request) have only the request's own.
    fn actor<'a>(
        &'a self,
        extensions: &'a rmcp::model::Extensions,
    ) -> Result<&'a Actor, ErrorData> {
        let head = Head::of(extensions);
        match (self.actor.get(), head.actor) {
            (_, None) => Err(ErrorData::invalid_request("no authenticated actor", None)),
            (Some(bound), Some(actor)) if bound.id() != actor.id() => Err(
                ErrorData::invalid_request("this MCP session belongs to another actor", None),
            ),
            (_, Some(actor)) => Ok(actor),
        }
    }

    async fn tools(&self, actor: &Actor) -> ActorTools {
        self.ctx.registry.tools_for(actor, None).await
    }

    /// Asks the host's policy about `actor` using the endpoint (provider kind and API
    /// `mcp`, no model): `Ok(filter)` with the policy's tool filter (original names), or
    /// the denial.
    async fn policy(&self, actor: &Actor, client: &str) -> Result<Option<ToolFilter>, Denial> {
        let Some(policy) = &self.ctx.shared.policy else {
            return Ok(None);
        };
        let mut ask = PolicyRequest::new(actor, PROVIDER_NAME, "");
        ask.provider_kind = ProviderKind::Mcp;
        ask.api = Api::Mcp;
        ask.client = client;
        match policy.check(&ask).await {
            Decision::Allow(allow) => Ok(allow.mcp_tools),
            Decision::Deny(denial) => Err(denial),
        }
    }

    /// Executes and records one call.
    async fn call(
        &self,
        actor: &Actor,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started_at = SystemTime::now();
        let head = Head::of(&context.extensions);
        let headers = head.headers.cloned().unwrap_or_default();
        let client = Client::detect(&headers);
        let policy = self.policy(actor, client.label()).await;
        let tools = self.tools(actor).await;
        let id_asked = request.name.to_string();
        let listed = tools.get(&id_asked).cloned();
        // Why the call is not executed, if it is not.
        let refusal = match (&policy, &listed) {
            (Err(denial), _) => Some((Outcome::Denied, denial.message.clone())),
            (Ok(_), None) => Some((Outcome::Failed, NOT_AVAILABLE.to_owned())),
            (Ok(Some(filter)), Some(t)) if !filter.allows(&t.name) => {
                Some((Outcome::Failed, REFUSED.to_owned()))
            }
            (Ok(_), Some(_)) => None,
        };
        let tool = listed.filter(|_| refusal.is_none());
        let arguments: Map<String, Value> = request.arguments.unwrap_or_default();
        let id = RecordId::new();
        let interception = Interception {
            id,
            initiator_id: actor.id().to_owned(),
            metadata: actor.metadata().clone(),
            provider: ProviderKind::Mcp,
            provider_name: PROVIDER_NAME.to_owned(),
            api: Api::Mcp,
            model: String::new(),
            streaming: false,
            client: client.label().to_owned(),
            client_session_id: headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            credential_kind: CredentialKind::Centralized,
            credential_hint: None,
            correlating_tool_call_id: None,
            started_at,
        };
        let queue = &self.ctx.shared.queue;
        // Nothing is executed that is not recorded (D10).
        if let Err(e) = queue.record_interception(interception).await {
            tracing::error!(error = %e, "record_interception failed; MCP tool call not executed");
            return Err(ErrorData::internal_error(
                "the bridge cannot record the call",
                None,
            ));
        }
        let sink = queue.sink(id);
        let (outcome, executed) = match &tool {
            None => (
                ToolOutcome::failed(refusal.as_ref().map_or(NOT_AVAILABLE, |(_, why)| why)),
                false,
            ),
            Some(tool) => {
                let call = tools.call(tool, arguments.clone());
                let outcome = tokio::select! {
                    outcome = call => outcome,
                    () = context.ct.cancelled() => ToolOutcome::failed("cancelled"),
                };
                (outcome, true)
            }
        };
        if executed && let (Some(m), Some(tool)) = (&self.ctx.shared.metrics, &tool) {
            let labels = m.labels(PROVIDER_NAME, "", actor.id(), client.label().to_owned());
            m.injected_tool(&labels, &tool.server_url, &tool.name);
        }
        let invocation_error = outcome.invocation_error();
        let limits = sink.limits();
        sink.push(Record::ToolUsage(ToolUsage {
            id: RecordId::new(),
            interception_id: id,
            provider_response_id: None,
            tool: listed_name(&tools, &id_asked),
            tool_call_id: request_id(&context),
            server_url: tools.get(&id_asked).map(|t| t.server_url.clone()),
            input: limits.tool_input(Value::Object(arguments).to_string()),
            injected: true,
            provider_executed: false,
            invocation_error: invocation_error.clone(),
            created_at: SystemTime::now(),
        }))
        .await;
        let (end, error) = match (&refusal, &outcome.result) {
            (Some((end, why)), _) => (*end, Some(why.clone())),
            (None, Ok(_)) => (Outcome::Completed, None),
            (None, Err(reason)) if reason == "cancelled" => {
                (Outcome::Cancelled, Some(reason.clone()))
            }
            (None, Err(reason)) => (Outcome::Failed, Some(reason.clone())),
        };
        sink.end(InterceptionEnded {
            id,
            ended_at: SystemTime::now(),
            outcome: end,
            error,
        })
        .await;
        if let Some((_, why)) = refusal {
            return Err(ErrorData::invalid_params(
                format!("{why}: {id_asked}"),
                None,
            ));
        }
        Ok(result(&outcome, self.ctx.registry.config().result_limit()).into())
    }

    /// Watches the actor's tool set and sends `notifications/tools/list_changed` when it
    /// changes, until the session ends.
    fn watch(&self, actor: Actor, peer: rmcp::Peer<RoleServer>) {
        let registry = self.ctx.registry.clone();
        let mut changes = registry.changes();
        let task = tokio::spawn(async move {
            let mut last = fingerprint(registry.tools_for(&actor, None).await.tools());
            while changes.changed().await.is_ok() {
                let now = fingerprint(registry.tools_for(&actor, None).await.tools());
                if now != last {
                    last = now;
                    if peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                }
            }
        });
        let old = self
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        if let Some(task) = self
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("aibridge", env!("CARGO_PKG_VERSION")))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let Some(actor) = Head::of(&context.extensions).actor else {
            return Err(ErrorData::invalid_request("no authenticated actor", None));
        };
        if self.actor.set(actor.clone()).is_err() && self.actor.get() != Some(actor) {
            return Err(ErrorData::invalid_request(
                "this MCP session belongs to another actor",
                None,
            ));
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if let Some(actor) = self.actor.get() {
            self.watch(actor.clone(), context.peer);
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let actor = self.actor(&context.extensions)?;
        let head = Head::of(&context.extensions);
        let client = Client::detect(head.headers.unwrap_or(&http::HeaderMap::new()));
        let filter = match self.policy(actor, client.label()).await {
            Ok(filter) => filter,
            Err(denial) => return Err(ErrorData::invalid_request(denial.message, None)),
        };
        let tools = self.tools(actor).await;
        Ok(ListToolsResult::with_all_items(
            tools
                .tools()
                .iter()
                .filter(|t| filter.as_ref().is_none_or(|f| f.allows(&t.name)))
                .filter_map(mcp_tool)
                .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let actor = self.actor(&context.extensions)?.clone();
        self.call(&actor, request, context).await
    }
}

// === impl Head ===

impl<'a> Head<'a> {
    fn of(extensions: &'a rmcp::model::Extensions) -> Self {
        let parts = extensions.get::<http::request::Parts>();
        Self {
            actor: parts
                .and_then(|p| p.extensions.get::<Actor>())
                .filter(|a| !a.id().is_empty()),
            headers: parts.map(|p| &p.headers),
        }
    }
}

// === helpers ===

/// The MCP view of an injected tool: its `bmcp_…` id, description and schema.
fn mcp_tool(tool: &InjectedTool) -> Option<Tool> {
    let schema: JsonObject = serde_json::from_str(tool.input_schema.get()).ok()?;
    let mut out = Tool::new(
        tool.id.clone(),
        tool.description.clone().unwrap_or_default(),
        Arc::new(schema),
    );
    if tool.description.is_none() {
        out.description = None;
    }
    Some(out)
}

/// The call's result as the editor gets it: the server's content within the result-size
/// bound; a failed call is an `isError` result with the failure text.
fn result(outcome: &ToolOutcome, max_bytes: usize) -> CallToolResult {
    let content = outcome
        .limited_blocks(max_bytes)
        .into_iter()
        .map(|block| match block {
            Block::Text(text) => ContentBlock::text(text),
            Block::Image { mime_type, data } => ContentBlock::image(data, mime_type),
        })
        .collect();
    let mut result = if outcome.is_error() {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    if let Ok(r) = &outcome.result {
        result.structured_content.clone_from(&r.structured_content);
    }
    result
}

/// The recorded tool name: the original name of a tool of the actor, else the id asked for.
fn listed_name(tools: &ActorTools, id: &str) -> String {
    tools
        .get(id)
        .map_or_else(|| id.to_owned(), |t| t.name.clone())
}

/// The JSON-RPC request id as text (the record's `tool_call_id`).
fn request_id(context: &RequestContext<RoleServer>) -> String {
    serde_json::to_value(&context.id)
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// What the editor sees of a tool set: ids, descriptions and schemas.
fn fingerprint(tools: &[InjectedTool]) -> Vec<(String, Option<String>, String)> {
    tools
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                t.description.clone(),
                t.input_schema.get().to_owned(),
            )
        })
        .collect()
}

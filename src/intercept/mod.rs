//! Interceptors: the handling of one bridged request (an interception), from its record to
//! the end of the response.
//!
//! One task per interception runs [`drive`]: it calls the upstream, relays the answer (a
//! blocking JSON body or an SSE stream, chosen by the response's `Content-Type`), turns
//! what the per-API parsers find into records, and ends the interception. The client's
//! response head travels back to the service future through a oneshot channel; a streaming
//! body is fed through a small bounded channel, so backpressure reaches the upstream read.

mod chat_completions;
mod emit;
mod facts;
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) mod harness;
#[cfg(feature = "mcp")]
mod json_edit;
mod messages;
#[cfg(test)]
mod proptests;
mod relay;
pub(crate) mod request;
mod responses;
#[cfg(feature = "mcp")]
mod tool_loop;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response};
use tokio::sync::oneshot;

pub(crate) use self::facts::{Fact, FrameAction, StreamStatus};
pub(crate) use self::request::RequestInfo;
#[cfg(feature = "mcp")]
pub(crate) use self::tool_loop::{LoopConfig, ToolExecutor, ToolSource};
use crate::Actor;
use crate::body::Body;
use crate::breaker::Key;
use crate::clients::Client;
use crate::error::{BridgeError, Flavor};
use crate::metrics::Labels;
use crate::pipeline::Shared;
use crate::provider::{Api, Credential, Provider};
use crate::recorder::{Interception, RecordId};
use crate::sse::Frame;
use crate::upstream::{self, Mode, route_label};

/// A bridged request that passed every check of routing.md steps 1–7.
#[derive(Debug)]
pub(crate) struct Bridged {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) api: Api,
    /// The route path relative to the provider prefix (also the upstream relative path).
    pub(crate) endpoint: Cow<'static, str>,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) actor: Actor,
    pub(crate) credential: Credential,
    pub(crate) info: RequestInfo,
    pub(crate) started_at: SystemTime,
    pub(crate) start: Instant,
}

/// A per-API parser of upstream SSE streams. Synchronous and free of I/O, so it can be
/// tested and fuzzed on its own.
pub(crate) trait StreamObserver: Send + Sync {
    /// Looks at one frame, appending what is worth recording. `Err` is an invalid event (a
    /// JSON decode failure of an event the bridge needs).
    fn on_frame(&mut self, frame: &Frame, facts: &mut Vec<Fact>) -> Result<FrameAction, String>;
    /// The stream ended or broke: flush what is pending (usage seen so far, open blocks).
    fn flush(&mut self, facts: &mut Vec<Fact>);
    /// How the stream stands.
    fn status(&self) -> StreamStatus;
    /// Whether content (a block, a chunk with content, an output item) was seen.
    fn content_started(&self) -> bool;
    /// The API's terminal error event (D7).
    fn terminal_event(&self, message: &str) -> Bytes;
    /// After status `ToolCalls`: the turn that called injected tools.
    #[cfg(feature = "mcp")]
    fn take_turn(&mut self) -> Option<tool_loop::Turn> {
        None
    }
    /// Prepares for the next upstream call of a tool loop (`last` = without injected tools).
    #[cfg(feature = "mcp")]
    fn next_iteration(&mut self, last: bool) {
        let _ = last;
    }
}

/// Classifies a request body per its API (routing.md steps 7–8).
pub(crate) fn parse_request(api: Api, body: &[u8]) -> Result<RequestInfo, BridgeError> {
    match api {
        Api::Messages => messages::parse_request(body),
        Api::ChatCompletions => chat_completions::parse_request(body),
        Api::Responses => responses::parse_request(body),
    }
}

/// The stream parser for an API.
fn observer(api: Api, info: &RequestInfo) -> Box<dyn StreamObserver> {
    match api {
        Api::Messages => Box::new(messages::MessagesStream::new()),
        Api::ChatCompletions => Box::new(chat_completions::ChatStream::new(info)),
        Api::Responses => Box::new(responses::ResponsesStream::new()),
    }
}

/// The bytes sent upstream: the client's, with the API's targeted edits (D1), if any.
fn upstream_body(api: Api, info: &RequestInfo, body: Bytes) -> Bytes {
    match api {
        Api::ChatCompletions => chat_completions::upstream_body(info, body),
        Api::Messages | Api::Responses => body,
    }
}

/// The stream parser for an API named by its `as_str()` (benchmarks and tests).
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) fn bench_observer(api: &str) -> Box<dyn StreamObserver> {
    let api = match api {
        "chat_completions" => Api::ChatCompletions,
        "responses" => Api::Responses,
        _ => Api::Messages,
    };
    observer(api, &RequestInfo::default())
}

/// Facts of a blocking response body.
fn blocking_facts(api: Api, body: &[u8], facts: &mut Vec<Fact>) -> Result<(), String> {
    match api {
        Api::Messages => messages::blocking_facts(body, facts),
        Api::ChatCompletions => chat_completions::blocking_facts(body, facts),
        Api::Responses => responses::blocking_facts(body, facts),
    }
}

/// Decides on injection (mcp.md "When injection happens") and builds the first body.
#[cfg(feature = "mcp")]
fn start_loop(
    source: &Arc<dyn ToolSource>,
    api: Api,
    info: &RequestInfo,
    body: &Bytes,
) -> Option<(tool_loop::LoopState, Bytes)> {
    if !source.should_inject(&info.model)
        || (api == Api::Responses && !responses::mcp::injectable(body))
    {
        return None;
    }
    let tools = messages::mcp::tools_for_request(body, &source.snapshot());
    if tools.0.is_empty() {
        return None;
    }
    let executor: Arc<dyn ToolExecutor> = source.clone();
    let lp = tool_loop::LoopState::new(
        Arc::new(tools),
        executor,
        source.loop_config(),
        body.clone(),
        info.clone(),
    );
    let first = lp.first_body(api)?;
    Some((lp, first))
}

/// Records the interception and runs it (routing.md steps 9–15).
pub(crate) async fn run(shared: Arc<Shared>, req: Bridged) -> Response<Body> {
    let flavor = Flavor::from(req.provider.kind());
    let client = Client::detect(&req.headers);
    let session = client.session_id(&req.headers, req.info.metadata_user_id.as_deref());
    let id = RecordId::new();
    let interception = Interception {
        id,
        initiator_id: req.actor.id().to_owned(),
        metadata: req.actor.metadata().clone(),
        provider: req.provider.kind(),
        provider_name: req.provider.name().to_owned(),
        api: req.api,
        model: req.info.model.clone(),
        streaming: req.info.streaming,
        client: client.label().to_owned(),
        client_session_id: session,
        user_agent: req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        credential_kind: req.credential.kind(),
        credential_hint: Some(req.credential.hint().to_owned()),
        correlating_tool_call_id: req.info.correlating_tool_call_id.clone(),
        started_at: req.started_at,
    };
    let span = tracing::info_span!(
        "aibridge.interception",
        interception_id = %id,
        provider = req.provider.name(),
        api = req.api.as_str(),
        model = %req.info.model,
        streaming = req.info.streaming,
        initiator_id = %req.actor.id(),
        client = client.label(),
    );
    let recorded = shared.queue.record_interception(&interception).await;
    if let Err(e) = recorded {
        span.in_scope(
            || tracing::error!(error = %e, "record_interception failed; request not sent upstream"),
        );
        return BridgeError::recorder_unavailable().into_response(flavor, Some(id));
    }
    let url = upstream::upstream_url(req.provider.base_url(), &req.endpoint, req.query.as_deref());
    let headers = upstream::request_headers(
        &req.headers,
        req.provider.as_ref(),
        Some(&req.credential),
        Mode::Bridged(&req.actor),
    );
    let route = route_label(req.provider.as_ref(), &req.endpoint);
    let labels = Labels {
        provider: req.provider.name().to_owned(),
        model: req.info.model.clone(),
        initiator: req.actor.id().to_owned(),
        client: client.label().to_owned(),
    };
    let metrics = shared.metrics.clone();
    if let Some(m) = &metrics {
        m.interception_started(&labels.provider, &labels.model, &route);
    }
    #[cfg(feature = "mcp")]
    let tool_loop = shared
        .tool_source
        .as_ref()
        .and_then(|source| start_loop(source, req.api, &req.info, &req.body));
    #[cfg(feature = "mcp")]
    let (body, observer): (Bytes, Box<dyn StreamObserver>) = match &tool_loop {
        Some((lp, body)) => {
            let view: Box<dyn StreamObserver> = match req.api {
                Api::ChatCompletions => Box::new(chat_completions::mcp::McpChat::new(
                    &req.info,
                    lp.tools.clone(),
                )),
                Api::Responses => Box::new(responses::mcp::McpResponses::new(
                    &req.body,
                    lp.tools.clone(),
                )),
                Api::Messages => Box::new(messages::mcp::McpMessages::new(lp.tools.clone())),
            };
            (body.clone(), view)
        }
        None => (
            upstream_body(req.api, &req.info, req.body),
            observer(req.api, &req.info),
        ),
    };
    #[cfg(not(feature = "mcp"))]
    let (body, observer) = (
        upstream_body(req.api, &req.info, req.body),
        observer(req.api, &req.info),
    );
    let sink = emit::Emitter::new(
        shared.queue.sink(id),
        id,
        req.info.prompt,
        metrics.clone().map(|m| (m, labels.clone())),
    );
    let breaker_key = Key {
        provider: labels.provider.clone(),
        endpoint: route.clone(),
        model: labels.model.clone(),
    };
    let ctx = relay::Ctx::new(
        shared.clone(),
        req.provider.clone(),
        req.api,
        id,
        url,
        headers,
        body,
        observer,
        sink,
        req.start,
        breaker_key,
        req.credential.kind(),
    );
    #[cfg(feature = "mcp")]
    let ctx = ctx.with_tool_loop(tool_loop.map(|(lp, _)| lp));
    let (head_tx, head_rx) = oneshot::channel();
    // The task counts as running until its records are queued, so shutdown drains them.
    let task_guard = shared.track_task();
    let start = req.start;
    let task = async move {
        let (outcome, waited) = relay::drive(ctx, head_tx).await;
        if let Some(m) = &metrics {
            let total = start.elapsed();
            // The awaited `record_interception` counts: the client waits for it too.
            let overhead = total.saturating_sub(waited);
            m.interception_ended(
                &labels,
                outcome.as_str(),
                true,
                total,
                overhead,
                &route,
                "POST",
            );
        }
        drop(task_guard);
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
    match head_rx.await {
        Ok(resp) => resp,
        Err(_) => BridgeError::internal().into_response(flavor, Some(id)),
    }
}

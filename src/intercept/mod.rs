//! Interceptors: the handling of one bridged request (an interception), from its record to
//! the end of the response.
//!
//! One task per interception runs [`drive`]: it calls the upstream, relays the answer (a
//! blocking JSON body or an SSE stream, chosen by the response's `Content-Type`), turns
//! what the per-API parsers find into records, and ends the interception. The client's
//! response head travels back to the service future through a oneshot channel; a streaming
//! body is fed through a small bounded channel, so backpressure reaches the upstream read.

mod adapter;
mod chat_completions;
mod emit;
mod facts;
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) mod harness;
#[cfg(feature = "mcp")]
mod json_edit;
mod messages;
mod observer;
mod openai;
mod policy;
#[cfg(test)]
mod proptests;
mod relay;
pub(crate) mod request;
mod responses;
mod step;
#[cfg(feature = "mcp")]
mod tool_loop;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response};
use tokio::sync::oneshot;

use self::adapter::Adapter;
pub(crate) use self::observer::StreamObserver;
#[cfg(feature = "mcp")]
pub(crate) use self::observer::UpstreamError;
pub(crate) use self::request::RequestInfo;
#[cfg(feature = "mcp")]
pub(crate) use self::tool_loop::{LoopConfig, Offer, ToolExecutor, ToolSource};
use crate::Actor;
use crate::body::Body;
use crate::breaker::Key;
use crate::clients::Client;
use crate::error::{BridgeError, Flavor};
use crate::pipeline::Shared;
use crate::provider::{Api, Credential, Provider};
use crate::recorder::{Interception, RecordId};
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

/// The adapter of an API: the one place an API is matched on.
pub(crate) fn adapter_for(api: Api) -> &'static dyn Adapter {
    match api {
        Api::Messages => &messages::Messages,
        Api::ChatCompletions => &chat_completions::ChatCompletions,
        Api::Responses => &responses::Responses,
        // Not a bridged API: `parse_request` refuses it, so no interception gets here.
        Api::Mcp => &chat_completions::ChatCompletions,
    }
}

/// Classifies a request body per its API (routing.md steps 7–8).
#[allow(
    clippy::result_large_err,
    reason = "BridgeError is the engine's request error type"
)]
pub(crate) fn parse_request(api: Api, body: &[u8]) -> Result<RequestInfo, BridgeError> {
    if api == Api::Mcp {
        return Err(BridgeError::bad_body(
            "the mcp API is served by the MCP endpoint, not a provider route",
        ));
    }
    adapter_for(api).parse_request(body)
}

/// What the policy stage needs of the request.
fn asked(req: &Bridged) -> policy::Asked<'_> {
    policy::Asked {
        actor: &req.actor,
        provider: req.provider.as_ref(),
        api: req.api,
        endpoint: &req.endpoint,
        info: &req.info,
        body: &req.body,
        credential_kind: req.credential.kind(),
    }
}

/// Records the interception and runs it (routing.md steps 9–15).
///
/// Everything from `record_interception` on runs in the interception's own task, which the
/// client's response future only waits on: a client that leaves (or a host timeout that
/// drops the future) while the recorder is slow no longer leaves a recorded interception
/// without its end (issue 17, defect 3): the task goes on, sees the client gone, and ends
/// the interception `cancelled`.
pub(crate) async fn run(shared: Arc<Shared>, req: Bridged) -> Response<Body> {
    // A cloud provider's interception is recorded with the cloud model (cloud-anthropic.md).
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    let req = {
        let mut req = req;
        if let Some(cloud) = req.provider.cloud() {
            req.info.model = cloud.map_model(&req.info.model);
        }
        req
    };
    let flavor = Flavor::from(req.provider.kind());
    let client = Client::detect(&req.headers);
    let session = client.session_id(&req.headers, req.info.metadata_user_id.as_deref());
    // The policy stage: without a policy, one `Option` check.
    let verdict = match &shared.policy {
        None => policy::Verdict::Allow,
        Some(p) => policy::check(p, &asked(&req), client.label(), session.as_deref()).await,
    };
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
        outcome = tracing::field::Empty,
        gen_ai.system = req.provider.kind().as_str(),
        gen_ai.request.model = %req.info.model,
        gen_ai.response.id = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    );
    let (head_tx, head_rx) = oneshot::channel();
    // The task counts as running until its records are queued, so shutdown drains them.
    let task_guard = shared.track_task();
    let task = async move {
        intercept(shared, req, interception, verdict, head_tx).await;
        drop(task_guard);
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
    match head_rx.await {
        Ok(resp) => resp,
        Err(_) => BridgeError::internal().into_response(flavor, Some(id)),
    }
}

/// The interception task: records the interception (awaited: nothing is sent upstream
/// that is not recorded, D10; or queued ahead of its children, if the host chose
/// `InterceptionRecord::Queued`), then relays and ends it.
async fn intercept(
    shared: Arc<Shared>,
    req: Bridged,
    interception: Interception,
    verdict: policy::Verdict,
    head_tx: oneshot::Sender<Response<Body>>,
) {
    let filter = match verdict {
        policy::Verdict::Allow => None,
        policy::Verdict::Narrow(f) => Some(f),
        policy::Verdict::Deny(d) => {
            let resp = policy::deny(&shared, &asked(&req), interception, &d).await;
            let _ = head_tx.send(resp);
            return;
        }
    };
    #[cfg(not(feature = "mcp"))]
    let _ = filter; // nothing to narrow without injected tools
    let id = interception.id;
    let flavor = Flavor::from(req.provider.kind());
    let client = interception.client.clone();
    let recorded = if shared.queue.queues_interceptions() {
        shared.queue.record_interception_ahead(interception)
    } else {
        match shared.queue.record_interception(interception).await {
            Ok(()) => Ok(shared.queue.sink(id)),
            Err(e) => Err(e),
        }
    };
    let record_sink = match recorded {
        Ok(sink) => sink,
        Err(e) => {
            tracing::error!(error = %e, "record_interception failed; request not sent upstream");
            let _ =
                head_tx.send(BridgeError::recorder_unavailable().into_response(flavor, Some(id)));
            return;
        }
    };
    let url = upstream::upstream_url(req.provider.base_url(), &req.endpoint, req.query.as_deref());
    let headers = upstream::request_headers(
        &req.headers,
        req.provider.as_ref(),
        Some(&req.credential),
        Mode::Bridged(&req.actor),
    );
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    let cloud = req.provider.cloud().map(|c| {
        crate::provider::cloud::Call::new(
            &c,
            req.provider.base_url(),
            req.info.model.clone(),
            &req.headers,
        )
    });
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    let (url, headers) = match &cloud {
        Some(call) => (call.url(req.info.streaming), call.headers(headers)),
        None => (url, headers),
    };
    let route = route_label(req.provider.as_ref(), &req.endpoint);
    let metrics = shared.metrics.clone();
    let labels = metrics.as_ref().map(|m| {
        let labels = m.labels(req.provider.name(), &req.info.model, req.actor.id(), client);
        m.interception_started(&labels, &route);
        labels
    });
    let adapter = adapter_for(req.api);
    // S20: a `previous_response_id` naming an id a tool loop presented continues from the
    // last upstream response of that interception.
    #[cfg(feature = "mcp")]
    let mut req = req;
    #[cfg(feature = "mcp")]
    if let Some(presented) = adapter.previous_response_id(&req.body)
        && let Some(last) = shared.response_ids.resolve(&presented).await
        && let Some(body) = adapter.continue_from(&req.body, &last)
    {
        tracing::debug!(
            presented,
            last,
            "previous_response_id continues from the last upstream response"
        );
        req.body = body;
    }
    // Requests that get no tools pay for two checks and nothing else: the actor's tool set
    // is only asked for when the skip predicate and the API's shapes allow injection.
    #[cfg(feature = "mcp")]
    let tool_loop = match &shared.tool_source {
        Some(source)
            if source.should_inject(req.api, &req.info.model) && adapter.injectable(&req.body) =>
        {
            // The policy's tool filter splits the actor's tools per request
            // (`tools_for_request`): refused tools are not injected and their calls are
            // recorded as not executed.
            let offer = source.tools_for(&req.actor, None).await;
            adapter.start_loop(
                offer,
                source.loop_config(),
                &req.info,
                &req.body,
                filter.as_ref(),
            )
        }
        _ => None,
    };
    #[cfg(feature = "mcp")]
    let (body, observer) = match &tool_loop {
        Some((lp, body)) => {
            let view = adapter.mcp_view(
                &req.info,
                &req.body,
                lp.tools.clone(),
                lp.config.max_iterations,
            );
            (body.clone(), view)
        }
        None => (
            adapter.upstream_body(&req.info, req.body),
            adapter.observer(&req.info),
        ),
    };
    #[cfg(not(feature = "mcp"))]
    let (body, observer) = (
        adapter.upstream_body(&req.info, req.body),
        adapter.observer(&req.info),
    );
    let sink = emit::Emitter::new(
        record_sink,
        id,
        req.info.prompt,
        metrics.clone().zip(labels.clone()),
    )
    .with_account(emit::Account {
        prices: shared.prices.clone(),
        policy: shared.policy.clone(),
        // Only a policy needs the actor (no allocation without one).
        actor: match &shared.policy {
            Some(_) => req.actor.id().to_owned(),
            None => String::new(),
        },
        model: req.info.model.clone(),
    });
    let breaker_key = Key {
        provider: req.provider.name().to_owned(),
        endpoint: route.clone(),
        model: req.info.model.clone(),
    };
    let mut ctx = relay::Ctx::new(
        shared.clone(),
        req.provider.clone(),
        adapter,
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
    ctx.presents_first_id = adapter.presents_first_id();
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    let ctx = ctx.with_cloud(cloud);
    let start = req.start;
    let (outcome, waited) = relay::drive(
        ctx,
        #[cfg(feature = "mcp")]
        tool_loop.map(|(lp, _)| lp),
        head_tx,
    )
    .await;
    if let (Some(m), Some(labels)) = (&metrics, &labels) {
        let total = start.elapsed();
        // The awaited `record_interception` counts: the client waits for it too.
        let overhead = total.saturating_sub(waited);
        m.interception_ended(
            labels,
            outcome.as_str(),
            true,
            total,
            overhead,
            &route,
            "POST",
        );
    }
}

//! The policy stage (issue 12): asked once per bridged request, after the body is parsed
//! and the client detected, before the interception is recorded and anything goes
//! upstream. A denial is answered at once in the provider's error shape, recorded as an
//! interception ended `denied` (no prompt), and counted.

use std::sync::Arc;

use http::Response;

use super::emit::Emitter;
use super::request::RequestInfo;
use crate::Actor;
use crate::body::Body;
use crate::error::{BridgeError, Flavor};
use crate::pipeline::Shared;
use crate::policy::{ClientTools, Decision, Denial, Policy, PolicyRequest, ToolFilter};
use crate::provider::{Api, CredentialKind, Provider};
use crate::recorder::{Interception, Outcome};
use crate::upstream::route_label;

/// What the stage needs of a bridged request.
#[derive(Debug)]
pub(crate) struct Asked<'a> {
    pub(crate) actor: &'a Actor,
    pub(crate) provider: &'a dyn Provider,
    pub(crate) api: Api,
    pub(crate) endpoint: &'a str,
    pub(crate) info: &'a RequestInfo,
    pub(crate) body: &'a [u8],
    pub(crate) credential_kind: CredentialKind,
}

/// What the stage decided.
#[derive(Debug, Default)]
pub(crate) enum Verdict {
    /// Go upstream with every injected tool.
    #[default]
    Allow,
    /// Go upstream with the injected tools the filter allows.
    Narrow(ToolFilter),
    /// Do not go upstream.
    Deny(Denial),
}

/// Asks the policy about `req`.
pub(crate) async fn check(
    policy: &Arc<dyn Policy>,
    req: &Asked<'_>,
    client: &str,
    session_id: Option<&str>,
) -> Verdict {
    let mut ask = PolicyRequest::new(req.actor, req.provider.name(), &req.info.model);
    ask.provider_kind = req.provider.kind();
    ask.api = req.api;
    ask.streaming = req.info.streaming;
    ask.client = client;
    ask.session_id = session_id;
    ask.credential_kind = req.credential_kind;
    ask.body_len = req.body.len();
    // Parsed from the body only if the policy asks (the built-in one does not).
    ask.client_tools = ClientTools::from_body(req.body, |body| {
        super::request::client_tool_names(body)
            .into_iter()
            .collect()
    });
    match policy.check(&ask).await {
        Decision::Allow(a) => match a.mcp_tools {
            Some(f) => Verdict::Narrow(f),
            None => Verdict::Allow,
        },
        Decision::Deny(d) => Verdict::Deny(d),
    }
}

/// Answers a denied request: records the interception (awaited, as for every
/// interception) and its end `denied`, counts it, and returns the error response. Nothing
/// goes upstream.
pub(crate) async fn deny(
    shared: &Shared,
    req: &Asked<'_>,
    interception: Interception,
    denial: &Denial,
) -> Response<Body> {
    let id = interception.id;
    let flavor = Flavor::from(req.provider.kind());
    tracing::info!(
        reason = denial.kind.reason(),
        message = %denial.message,
        "request denied by policy"
    );
    let client = interception.client.clone();
    if let Err(e) = shared.queue.record_interception(interception).await {
        // The denial stands: nothing is sent upstream either way.
        tracing::error!(error = %e, "record_interception of a denied request failed");
    } else {
        Emitter::new(shared.queue.sink(id), id, None, None)
            .end(Outcome::Denied, Some(denial.message.clone()))
            .await;
    }
    if let Some(m) = &shared.metrics {
        let labels = m.labels(req.provider.name(), &req.info.model, req.actor.id(), client);
        let route = route_label(req.provider, req.endpoint);
        m.denied(&labels, denial.kind.reason(), &route);
    }
    BridgeError::denied(denial).into_response(flavor, Some(id))
}

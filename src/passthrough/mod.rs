//! Passthrough: allowlisted routes reverse-proxied with streaming bodies both ways.
//!
//! Not recorded, never retried, no circuit breaker. Credentials follow the provider's
//! policy, except that `ClientOnly` without a client credential forwards the request
//! without one (the upstream answers 401) (S22).

#[cfg(any(feature = "bedrock", feature = "vertex"))]
mod cloud;

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http::request::Parts;
use http::{Response, header};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::BoxError;
use crate::body::Body;
use crate::error::{BridgeError, Flavor};
use crate::pipeline::Shared;
use crate::provider::{Provider, Route};
use crate::upstream::{
    Mode, connect_error_kind, passthrough_response_headers, request_headers, route_label,
    upstream_url,
};

/// Proxies one passthrough request.
pub(crate) async fn proxy<B>(
    shared: &Shared,
    provider: &Arc<dyn Provider>,
    route: &Route,
    rest: &str,
    parts: Parts,
    body: B,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    if let Some(cloud) = provider.cloud() {
        return cloud::answer(shared, provider.as_ref(), &cloud, rest, parts, body).await;
    }
    let flavor = Flavor::from(provider.kind());
    let limit = shared.max_request_body;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return BridgeError::body_too_large(limit).into_response(flavor, None);
    }
    let credential = provider.credential(&parts.headers).ok();
    let headers = request_headers(
        &parts.headers,
        provider.as_ref(),
        credential.as_ref(),
        Mode::Passthrough,
    );
    let rest = continued(shared, rest).await;
    let url = upstream_url(provider.base_url(), &rest, parts.uri.query());
    // D17: the passthrough call's span, a child of the host's request span.
    let span = tracing::info_span!(
        "aibridge.passthrough",
        provider = provider.name(),
        route = %route.path,
        method = %parts.method,
        upstream_url = crate::upstream::url_for_span(&url),
        status = tracing::field::Empty,
    );
    // The request body streams through, capped at the limit (no body at all when the
    // client sent none, so a GET stays a GET without a chunked empty body).
    let empty = http_body::Body::is_end_stream(&body);
    let stream = http_body_util::Limited::new(body, limit).into_data_stream();
    let mut req = shared
        .client
        .request(parts.method.clone(), url)
        .headers(headers);
    if !empty {
        req = req.body(reqwest::Body::wrap_stream(stream));
    }
    // At the shutdown deadline an open passthrough is cut off, before or after its head.
    let cancel = shared.cancel.subscribe();
    let send = tracing::Instrument::instrument(req.send(), span.clone());
    let sent = tokio::select! {
        r = send => Some(r),
        () = cancelled(cancel.clone()) => None,
    };
    if let Some(m) = &shared.metrics {
        m.passthrough(
            provider.name(),
            &route_label(provider.as_ref(), &route.path),
            parts.method.as_str(),
        );
    }
    let Some(sent) = sent else {
        return BridgeError::shutting_down().into_response(flavor, None);
    };
    match sent {
        Ok(resp) => {
            let status = resp.status();
            span.record("status", i64::from(status.as_u16()));
            let headers = passthrough_response_headers(resp.headers());
            let body = until_cancelled(resp.bytes_stream().map_err(BoxError::from), cancel);
            let mut out = Response::new(Body::new(http_body_util::StreamBody::new(
                body.map_ok(http_body::Frame::data),
            )));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            tracing::debug!(provider = provider.name(), route = %route.path, status = status.as_u16(), "passthrough");
            out
        }
        Err(err) => {
            if is_body_limit(&err) {
                return BridgeError::body_too_large(limit).into_response(flavor, None);
            }
            let kind = connect_error_kind(&err);
            tracing::warn!(provider = provider.name(), route = %route.path, error = %err, "passthrough upstream unreachable");
            BridgeError::upstream_unreachable(kind).into_response(flavor, None)
        }
    }
}

/// Resolves when the bridge cancels in-flight work (never if the bridge is gone).
/// `/responses/{id}…` with `{id}` resolved as a presented Responses id (S20): a tool
/// loop showed the client its first upstream id; the upstream knows the conversation under
/// the last one.
async fn continued<'a>(shared: &Shared, rest: &'a str) -> std::borrow::Cow<'a, str> {
    let Some(tail) = rest.strip_prefix("/responses/") else {
        return rest.into();
    };
    let (id, after) = tail.split_at(tail.find('/').unwrap_or(tail.len()));
    if id.is_empty() {
        return rest.into();
    }
    match shared.response_ids.resolve(id).await {
        Some(last) => format!("/responses/{last}{after}").into(),
        None => rest.into(),
    }
}

async fn cancelled(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The body stream, ending with an error (the client's connection is then closed and the
/// upstream response dropped) if the bridge cancels in-flight work first.
fn until_cancelled<S>(
    body: S,
    cancel: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    let state = Some((Box::pin(body), Box::pin(cancelled(cancel))));
    futures::stream::unfold(state, |state| async move {
        let (mut body, mut cancel) = state?;
        tokio::select! {
            item = body.next() => item.map(|item| (item, Some((body, cancel)))),
            () = &mut cancel => Some((Err(BoxError::from("aibridge: gateway is shutting down")), None)),
        }
    })
}

fn is_body_limit(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return true;
        }
        source = e.source();
    }
    false
}

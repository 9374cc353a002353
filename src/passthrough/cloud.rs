//! The passthrough routes of a cloud provider (cloud-anthropic.md): `/v1/models` answered
//! from the model mapping, count_tokens through the cloud, every other route 404.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::BoxError;
use crate::body::Body;
use crate::error::{BridgeError, Flavor, plain_not_found};
use crate::pipeline::Shared;
use crate::provider::cloud::{CountError, anthropic_error};
use crate::provider::{CloudTransport, Provider};

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut out = Response::new(Body::new(http_body_util::Full::new(body)));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// Answers one passthrough request of a cloud provider.
pub(super) async fn answer<B>(
    shared: &Shared,
    provider: &dyn Provider,
    cloud: &CloudTransport,
    rest: &str,
    parts: Parts,
    body: B,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let flavor = Flavor::from(provider.kind());
    let get = parts.method == Method::GET || parts.method == Method::HEAD;
    if rest == "/v1/models" && get {
        return json(StatusCode::OK, cloud.models_body());
    }
    if let Some(id) = rest.strip_prefix("/v1/models/")
        && get
    {
        let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
        return match cloud.model_body(&id) {
            Some(b) => json(StatusCode::OK, b),
            None => json(
                StatusCode::NOT_FOUND,
                anthropic_error(
                    StatusCode::NOT_FOUND,
                    None,
                    format!(
                        r#"{{"message":"model not found: {}"}}"#,
                        crate::error::json_string(&id).trim_matches('"')
                    )
                    .as_bytes(),
                ),
            ),
        };
    }
    if rest != "/v1/messages/count_tokens" || parts.method != Method::POST {
        return BridgeError::route_not_supported(&parts.method, parts.uri.path())
            .into_response(flavor, None);
    }
    let limit = shared.max_request_body;
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return BridgeError::body_too_large(limit).into_response(flavor, None),
    };
    let answer = cloud
        .count_tokens(&shared.client, provider.base_url(), &parts.headers, bytes)
        .await;
    if let Some(m) = &shared.metrics {
        m.passthrough(provider.name(), rest, parts.method.as_str());
    }
    match answer {
        Ok(Some((status, _, body))) => json(status, body),
        Ok(None) => plain_not_found(&parts.method, parts.uri.path()),
        Err(CountError::BadBody) => {
            BridgeError::bad_body(CountError::BadBody.to_string()).into_response(flavor, None)
        }
        Err(CountError::Auth(e)) => BridgeError::cloud_auth(e.0).into_response(flavor, None),
        Err(CountError::Send(e)) => {
            let kind = crate::upstream::connect_error_kind(&e);
            tracing::warn!(provider = provider.name(), error = %e, "count_tokens upstream unreachable");
            BridgeError::upstream_unreachable(kind).into_response(flavor, None)
        }
    }
}

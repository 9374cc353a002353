//! Claude through a cloud: AWS Bedrock and Google Vertex AI (cloud-anthropic.md).
//!
//! A cloud provider is an Anthropic Messages provider with another *transport*: the
//! Messages adapter, the relay, records, the MCP loop, retries, the breaker and metrics are
//! the Anthropic ones. The transport only maps the client's model, edits the body and the
//! path per model and stream flag, signs (Bedrock) or authorizes (Vertex) each upstream
//! call, and turns the cloud's answer back into the Anthropic API (Bedrock's EventStream
//! into SSE; the clouds' errors into the Anthropic error shape).

#[cfg(feature = "bedrock")]
pub(crate) mod bedrock;
mod edit;
mod error_shape;
pub(crate) mod models;
pub(crate) mod transport;
#[cfg(feature = "vertex")]
pub(crate) mod vertex;

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};

pub(crate) use self::models::ModelMap;
pub(crate) use self::transport::CloudTransport;
pub(crate) use self::transport::{AuthError, Transport, rebuild};

pub(crate) use self::error_shape::anthropic_error;

/// Largest cloud error body the bridge reads to reshape it.
const MAX_ERROR_BODY: usize = 1024 * 1024;

impl CloudTransport {
    /// The cloud model a client model goes to.
    pub(crate) fn map_model(&self, client_model: &str) -> String {
        self.0.map_model(client_model)
    }

    /// The `/v1/models` answer: the mapping's cloud models in the Anthropic list shape.
    pub(crate) fn models_body(&self) -> Bytes {
        models::list_body(&self.0.models())
    }

    /// The `/v1/models/{id}` answer, if `id` is one of the mapping's models.
    pub(crate) fn model_body(&self, id: &str) -> Option<Bytes> {
        self.0
            .models()
            .iter()
            .any(|m| m == id)
            .then(|| Bytes::from(models::model_object(id).to_string()))
    }

    /// count_tokens through the cloud: the client's `body` (its `model` mapped), signed or
    /// authorized, answered in the Anthropic shape. `Ok(None)`: the cloud offers none.
    pub(crate) async fn count_tokens(
        &self,
        http: &reqwest::Client,
        base: &http::Uri,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Option<(StatusCode, HeaderMap, Bytes)>, CountError> {
        #[derive(serde::Deserialize)]
        struct Model {
            model: String,
        }
        let model = serde_json::from_slice::<Model>(&body)
            .map_err(|_| CountError::BadBody)?
            .model;
        let model = self.0.map_model(&model);
        let beta = beta_flags(client_headers);
        let Some((url, body)) = self.0.count_tokens(&trim_base(base), &body, &model, &beta) else {
            return Ok(None);
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(beta) = client_headers.get("anthropic-beta") {
            headers.insert("anthropic-beta", beta.clone());
        }
        self.0.edit_headers(&mut headers);
        self.0
            .authorize("POST", &url, &mut headers, &body)
            .await
            .map_err(CountError::Auth)?;
        let resp = http
            .post(&url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(CountError::Send)?;
        let resp = reshape(self.0.as_ref(), resp);
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(CountError::Send)?;
        let body = if status.is_success() {
            self.0.count_tokens_answer(body)
        } else {
            body
        };
        Ok(Some((status, headers, body)))
    }
}

/// Why count_tokens through a cloud failed before the cloud answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CountError {
    /// The body is not a JSON object with a string `model`.
    #[error("aibridge: count_tokens needs a JSON body with a string \"model\"")]
    BadBody,
    /// No credentials or token.
    #[error(transparent)]
    Auth(AuthError),
    /// The call failed.
    #[error("cloud unreachable")]
    Send(#[source] reqwest::Error),
}

/// `impl Provider` for a cloud provider type with the fields `common` (`Common`) and
/// `inner` (its transport state): kind Anthropic, the cloud routes, a `cloud` credential
/// (the host's own is never forwarded), no actor headers, and its [`CloudTransport`].
macro_rules! impl_cloud_provider {
    ($ty:ty) => {
        impl $crate::provider::Provider for $ty {
            fn kind(&self) -> $crate::provider::ProviderKind {
                $crate::provider::ProviderKind::Anthropic
            }
            fn name(&self) -> &str {
                &self.common.name
            }
            fn base_url(&self) -> &http::Uri {
                &self.common.base_url
            }
            fn routes(&self) -> &[$crate::provider::Route] {
                $crate::provider::cloud::cloud_routes()
            }
            fn credential(
                &self,
                _client_headers: &http::HeaderMap,
            ) -> Result<$crate::provider::Credential, $crate::provider::CredentialError> {
                Ok($crate::provider::Credential::cloud(self.inner.hint()))
            }
            fn retry(&self) -> &$crate::provider::RetryConfig {
                &self.common.retry
            }
            fn circuit_breaker(&self) -> Option<&$crate::provider::CircuitBreakerConfig> {
                self.common.breaker.as_ref()
            }
            fn sends_actor_headers(&self) -> bool {
                false
            }
            fn extra_headers(&self) -> &http::HeaderMap {
                &self.common.extra_headers
            }
            fn cloud(&self) -> Option<$crate::provider::CloudTransport> {
                Some($crate::provider::CloudTransport(self.inner.clone()))
            }
        }
    };
}
pub(crate) use impl_cloud_provider;

/// The route table of a cloud provider: Messages bridged; `/v1/models` and count_tokens
/// answered by the bridge through the cloud; no other passthrough route.
pub(crate) fn cloud_routes() -> &'static [super::Route] {
    ROUTES
}

const ROUTES: &[super::Route] = &[
    super::Route::new(
        "/v1/messages",
        super::Match::Exact,
        super::RouteKind::Bridged(super::Api::Messages),
    ),
    super::Route::new(
        "/v1/models",
        super::Match::Exact,
        super::RouteKind::Passthrough,
    ),
    super::Route::new(
        "/v1/models/",
        super::Match::Subtree,
        super::RouteKind::Passthrough,
    ),
    super::Route::new(
        "/v1/messages/count_tokens",
        super::Match::Exact,
        super::RouteKind::Passthrough,
    ),
];

/// The `anthropic-beta` values of a request, split on commas and trimmed.
pub(crate) fn beta_flags(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One interception's use of a cloud: its mapped model, stream flag and beta flags.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    transport: Arc<dyn Transport>,
    base: String,
    model: String,
    beta: Vec<String>,
}

impl Call {
    /// The call of a request whose (already mapped) model is `model`.
    pub(crate) fn new(
        cloud: &CloudTransport,
        base: &http::Uri,
        model: String,
        client_headers: &HeaderMap,
    ) -> Self {
        Self {
            transport: cloud.0.clone(),
            base: trim_base(base),
            model,
            beta: beta_flags(client_headers),
        }
    }

    /// The upstream URL of the interception.
    pub(crate) fn url(&self, stream: bool) -> String {
        self.transport.messages_url(&self.base, &self.model, stream)
    }

    /// The upstream headers without what the cloud must not get.
    pub(crate) fn headers(&self, mut headers: HeaderMap) -> HeaderMap {
        self.transport.edit_headers(&mut headers);
        headers
    }

    /// The bytes and headers of one upstream call (each call: the body changes inside a
    /// tool loop, and a signature or token is per call).
    pub(crate) async fn prepare(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(HeaderMap, Bytes), AuthError> {
        let body = self.transport.edit_body(body, &self.model, &self.beta);
        let mut headers = headers.clone();
        self.transport
            .authorize("POST", url, &mut headers, &body)
            .await?;
        Ok((headers, body))
    }

    /// The cloud's answer as the Anthropic API's: errors reshaped, an EventStream turned
    /// into SSE; anything else unchanged.
    pub(crate) fn response(&self, resp: reqwest::Response) -> reqwest::Response {
        reshape(self.transport.as_ref(), resp)
    }
}

/// The answer of a cloud as the Anthropic API's (shared by bridged calls and count_tokens).
pub(crate) fn reshape(transport: &dyn Transport, resp: reqwest::Response) -> reqwest::Response {
    let status = resp.status();
    if !status.is_success() {
        return reshape_error(resp);
    }
    #[cfg(feature = "bedrock")]
    if transport.event_stream() && bedrock::eventstream::is_event_stream(resp.headers()) {
        return bedrock::eventstream::to_sse(resp);
    }
    let _ = transport;
    resp
}

/// An error answer with its body in the Anthropic error shape (same status).
fn reshape_error(resp: reqwest::Response) -> reqwest::Response {
    let status = resp.status();
    let mut headers = resp.headers().clone();
    let error_type = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = futures::stream::once(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) if buf.len() + c.len() <= MAX_ERROR_BODY => buf.extend_from_slice(&c),
                _ => break,
            }
        }
        Ok::<_, std::io::Error>(anthropic_error(status, error_type.as_deref(), &buf))
    });
    rebuild(status, headers, reqwest::Body::wrap_stream(body))
}

/// Percent-encodes a model id as one path segment (ARNs hold `:` and `/`).
pub(crate) fn path_segment(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

/// `base` without a trailing `/`.
pub(crate) fn trim_base(base: &http::Uri) -> String {
    base.to_string().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_flags_split_and_trim() {
        let mut h = HeaderMap::new();
        h.append("anthropic-beta", HeaderValue::from_static("a, b ,,c"));
        h.append("anthropic-beta", HeaderValue::from_static(" d"));
        assert_eq!(beta_flags(&h), ["a", "b", "c", "d"]);
    }

    #[test]
    fn arns_are_one_path_segment() {
        assert_eq!(
            path_segment("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.x-v1:0"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.x-v1%3A0"
        );
        assert_eq!(
            path_segment("claude-sonnet-4-5@20250929"),
            "claude-sonnet-4-5%4020250929"
        );
    }
}

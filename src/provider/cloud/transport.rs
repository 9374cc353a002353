//! The transport interface of the cloud providers (a leaf: what `Provider::cloud` returns
//! and what the clouds implement).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// Why a cloud call could not be authorized (no token, no credentials). The message names
/// the failing step, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AuthError(pub(crate) String);

/// What differs between the clouds. One value per provider, shared by its requests.
#[async_trait::async_trait]
pub(crate) trait Transport: Send + Sync + fmt::Debug {
    /// The cloud model a client model goes to (the interception's `model`).
    fn map_model(&self, client_model: &str) -> String;
    /// The upstream URL of a Messages call (`base`: the provider's base URL, no trailing
    /// `/`).
    fn messages_url(&self, base: &str, model: &str, stream: bool) -> String;
    /// The body sent to the cloud: the adapter's body with the cloud's targeted edits.
    fn edit_body(&self, body: &Bytes, model: &str, beta: &[String]) -> Bytes;
    /// Removes what must not reach the cloud from the upstream request headers.
    fn edit_headers(&self, headers: &mut HeaderMap);
    /// Adds the credentials (signature or token) for these exact bytes.
    async fn authorize(
        &self,
        method: &str,
        url: &str,
        headers: &mut HeaderMap,
        body: &Bytes,
    ) -> Result<(), AuthError>;
    /// Whether a successful streaming answer is AWS EventStream to turn into SSE.
    #[cfg(feature = "bedrock")]
    fn event_stream(&self) -> bool {
        false
    }
    /// The models listed at `/v1/models` (cloud ids, in order).
    fn models(&self) -> Vec<String>;
    /// The count_tokens call for a client body: URL and body, or `None` (not offered).
    fn count_tokens(
        &self,
        base: &str,
        body: &Bytes,
        model: &str,
        beta: &[String],
    ) -> Option<(String, Bytes)>;
    /// The Anthropic count_tokens answer from the cloud's successful one.
    fn count_tokens_answer(&self, body: Bytes) -> Bytes {
        body
    }
    /// The credential hint recorded with each interception.
    fn hint(&self) -> String;
}

/// The transport of a built-in cloud provider (`Bedrock`, `Vertex`): opaque, returned by
/// [`Provider::cloud`](crate::provider::Provider::cloud) so the bridge can call the cloud.
#[derive(Clone)]
pub struct CloudTransport(pub(crate) Arc<dyn Transport>);

impl fmt::Debug for CloudTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A `reqwest::Response` with another body (the relay reads every answer as one).
pub(crate) fn rebuild(
    status: StatusCode,
    headers: HeaderMap,
    body: reqwest::Body,
) -> reqwest::Response {
    let mut out = http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    reqwest::Response::from(out)
}

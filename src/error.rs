//! Client-facing errors: every bridge-made error is rendered in the shape the client's SDK
//! parses (resilience.md "Client-facing errors").

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;
use crate::provider::ProviderKind;
use crate::recorder::RecordId;

/// The response header carrying the interception id.
pub(crate) const INTERCEPTION_ID_HEADER: &str = "x-aibridge-interception-id";

/// Which error body shape a client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `{"type":"error","error":{"type","message"}}`
    Anthropic,
    /// `{"error":{"message","type","param","code"}}`
    OpenAi,
}

impl From<ProviderKind> for Flavor {
    fn from(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Anthropic => Self::Anthropic,
            ProviderKind::OpenAi | ProviderKind::Copilot | ProviderKind::Mcp => Self::OpenAi,
        }
    }
}

/// An error the bridge itself answers with.
#[derive(Debug, Clone)]
pub(crate) struct BridgeError {
    pub(crate) status: StatusCode,
    anthropic_type: &'static str,
    openai_type: &'static str,
    code: Cow<'static, str>,
    param: Option<&'static str>,
    pub(crate) message: String,
    extra_header: Extra,
}

/// A header some errors carry.
#[derive(Debug, Clone, Copy)]
enum Extra {
    None,
    /// `Allow: POST`
    AllowPost,
    /// `Retry-After: N`
    RetryAfter(u64),
}

impl BridgeError {
    fn new(
        status: StatusCode,
        anthropic_type: &'static str,
        openai_type: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            anthropic_type,
            openai_type,
            code: Cow::Borrowed(code),
            param: None,
            message: message.into(),
            extra_header: Extra::None,
        }
    }

    fn invalid(
        status: StatusCode,
        anthropic_type: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(
            status,
            anthropic_type,
            "invalid_request_error",
            code,
            message,
        )
    }

    fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub(crate) fn route_not_supported(method: &http::Method, path: &str) -> Self {
        Self::invalid(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "route_not_supported",
            format!("aibridge: route not supported: {method} {path}"),
        )
    }

    pub(crate) fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "server_error",
            "shutting_down",
            "aibridge: gateway is shutting down",
        )
    }

    pub(crate) fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        let mut e = Self::invalid(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("aibridge: method {method} is not allowed on {path}; use POST"),
        );
        e.extra_header = Extra::AllowPost;
        e
    }

    pub(crate) fn no_actor() -> Self {
        Self::invalid(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "aibridge: request has no authenticated actor",
        )
    }

    pub(crate) fn credential(message: String) -> Self {
        Self::invalid(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message,
        )
    }

    pub(crate) fn unsupported_encoding(value: &str) -> Self {
        Self::invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_content_encoding",
            format!("aibridge: request bodies with Content-Encoding {value} are not supported"),
        )
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "request_too_large",
            format!("aibridge: request body exceeds the limit of {limit} bytes"),
        )
    }

    pub(crate) fn bad_body(message: impl Into<String>) -> Self {
        Self::invalid(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request_body",
            message,
        )
    }

    pub(crate) fn body_unreadable(reason: &str) -> Self {
        Self::bad_body(format!(
            "aibridge: request body could not be read: {reason}"
        ))
    }

    pub(crate) fn bad_model() -> Self {
        Self::invalid(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "missing_required_parameter",
            "aibridge: \"model\" must be a non-empty string",
        )
        .with_param("model")
    }

    pub(crate) fn background_unsupported() -> Self {
        Self::invalid(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "unsupported_parameter",
            "aibridge: background responses are not supported",
        )
        .with_param("background")
    }

    pub(crate) fn recorder_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "server_error",
            "recorder_unavailable",
            "aibridge: usage recording is unavailable; the request was not sent upstream",
        )
    }

    pub(crate) fn circuit_open(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "server_error",
            "service_unavailable",
            "circuit breaker is open",
        );
        e.extra_header = Extra::RetryAfter(retry_after_secs.max(1));
        e
    }

    /// The bridge-wide budget of buffered request bytes had no room for this body within
    /// the wait (resilience.md "Limits"). A 503 with `Retry-After`, as for an overloaded
    /// server: the SDKs retry it with back-off, and the client did nothing wrong (a 429
    /// would blame its rate).
    pub(crate) fn request_buffer_full() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "server_error",
            "request_buffer_full",
            "aibridge: too many request bytes are buffered; retry shortly",
        );
        e.extra_header = Extra::RetryAfter(1);
        e
    }

    pub(crate) fn upstream_unreachable(kind: &str) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "server_error",
            "upstream_unreachable",
            format!("aibridge: upstream unreachable ({kind})"),
        )
    }

    /// A cloud call that could not be signed or authorized (no credentials, no token).
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    pub(crate) fn cloud_auth(message: String) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "server_error",
            "cloud_credentials_unavailable",
            message,
        )
    }

    pub(crate) fn upstream_timeout(secs: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            "server_error",
            "upstream_timeout",
            format!("aibridge: upstream did not respond within {secs}s"),
        )
    }

    pub(crate) fn upstream_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "server_error",
            "upstream_response_too_large",
            format!("aibridge: upstream response exceeds {limit} bytes"),
        )
    }

    /// The policy refused the request (403, 429 with `Retry-After`, or the host's status).
    pub(crate) fn denied(d: &crate::policy::Denial) -> Self {
        let status = d.kind.status();
        let kind = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            _ if status.is_server_error() => "api_error",
            _ => "permission_error",
        };
        let mut e = Self::new(status, kind, kind, "", d.message.clone());
        e.code = Cow::Owned(d.kind.code().to_owned());
        if status == StatusCode::TOO_MANY_REQUESTS || d.retry_after.is_some() {
            let secs = d.retry_after.map_or(1, crate::policy::retry_after_secs);
            e.extra_header = Extra::RetryAfter(secs);
        }
        e
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "server_error",
            "internal_error",
            "aibridge: internal error",
        )
    }

    /// The JSON body in the given shape.
    pub(crate) fn body(&self, flavor: Flavor) -> Bytes {
        let message = json_string(&self.message);
        let mut s = String::with_capacity(message.len() + 96);
        match flavor {
            Flavor::Anthropic => {
                let _ = write!(
                    s,
                    r#"{{"type":"error","error":{{"type":"{}","message":{message}}}}}"#,
                    self.anthropic_type
                );
            }
            Flavor::OpenAi => {
                let param = self.param.map_or_else(|| "null".to_owned(), json_string);
                let code = json_string(&self.code);
                let _ = write!(
                    s,
                    r#"{{"error":{{"message":{message},"type":"{}","param":{param},"code":{code}}}}}"#,
                    self.openai_type
                );
            }
        }
        Bytes::from(s)
    }

    /// The complete response.
    pub(crate) fn into_response(
        self,
        flavor: Flavor,
        interception: Option<RecordId>,
    ) -> Response<Body> {
        let mut resp = Response::new(Body::from(self.body(flavor)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self.extra_header {
            Extra::None => {}
            Extra::AllowPost => {
                h.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Extra::RetryAfter(secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
        }
        if let Some(id) = interception {
            set_interception_header(h, id);
        }
        resp
    }
}

/// Adds `x-aibridge-interception-id`.
pub(crate) fn set_interception_header(h: &mut http::HeaderMap, id: RecordId) {
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        h.insert(INTERCEPTION_ID_HEADER, v);
    }
}

/// The plain-text 404 for paths under no provider prefix.
pub(crate) fn plain_not_found(method: &http::Method, path: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!(
        "route not supported: {method} {path}\n"
    )));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Truncates an error text to at most 1 KiB on a char boundary.
pub(crate) fn truncate_error(mut s: String) -> String {
    const MAX: usize = 1024;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The `error` object of an upstream's error body, as far as the bridge reads it: its
/// `type`, its `code` (a string, or a number as text) and its `message`. `None` when the
/// body is not JSON with an `error` object.
pub(crate) struct UpstreamErrorObject {
    pub(crate) kind: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
}

impl UpstreamErrorObject {
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Option<ErrorObj>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorObj {
            #[serde(rename = "type")]
            kind: Option<String>,
            code: Option<serde_json::Value>,
            message: Option<String>,
        }
        let e = serde_json::from_slice::<Envelope>(body).ok()?.error?;
        Some(Self {
            kind: e.kind,
            code: e.code.and_then(|c| match c {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            message: e.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_open_bodies_are_exact() {
        let e = BridgeError::circuit_open(3);
        assert_eq!(
            e.body(Flavor::Anthropic),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"circuit breaker is open"}}"#
        );
        assert_eq!(
            e.body(Flavor::OpenAi),
            r#"{"error":{"message":"circuit breaker is open","type":"server_error","param":null,"code":"service_unavailable"}}"#
        );
        let r = e.into_response(Flavor::OpenAi, None);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "3");
    }

    #[test]
    fn request_buffer_full_is_an_overloaded_503_with_retry_after() {
        let e = BridgeError::request_buffer_full();
        assert_eq!(
            e.body(Flavor::Anthropic),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"aibridge: too many request bytes are buffered; retry shortly"}}"#
        );
        assert_eq!(
            e.body(Flavor::OpenAi),
            r#"{"error":{"message":"aibridge: too many request bytes are buffered; retry shortly","type":"server_error","param":null,"code":"request_buffer_full"}}"#
        );
        let r = e.into_response(Flavor::Anthropic, None);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
    }

    #[test]
    fn model_error_names_its_param() {
        let body = BridgeError::bad_model().body(Flavor::OpenAi);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "missing_required_parameter");
        assert_eq!(
            v["error"]["message"],
            "aibridge: \"model\" must be a non-empty string"
        );
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(600);
        let t = truncate_error(s);
        assert!(t.len() <= 1024);
        assert!(t.chars().all(|c| c == 'é'));
    }
}

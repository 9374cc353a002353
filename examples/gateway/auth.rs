//! Gateway tokens: the middleware in front of the bridge, the `/usage` check and the
//! `/metrics` bearer token. Every comparison runs in constant time.

use std::collections::HashMap;

use aibridge::Actor;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::routes::AppState;

/// Equal bytes, compared in time independent of where they differ (the length is not
/// hidden).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(v: &str) -> Option<&str> {
    let mut parts = v.split_ascii_whitespace();
    let (scheme, token) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && scheme.eq_ignore_ascii_case("bearer")).then_some(token)
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
pub(crate) fn has_bearer(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .is_some_and(|presented| ct_eq(presented.as_bytes(), token.as_bytes()))
}

/// The actor of a presented token (every configured token is compared, in constant time).
pub(crate) fn actor_for(tokens: &HashMap<String, String>, presented: &str) -> Option<String> {
    let mut found = None;
    for (token, actor) in tokens {
        if ct_eq(token.as_bytes(), presented.as_bytes()) {
            found = Some(actor.clone());
        }
    }
    found
}

/// The actor for a presented credential, and the header it came in.
pub(crate) fn authenticate(
    tokens: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<(String, header::HeaderName)> {
    let find = |presented: &str| actor_for(tokens, presented);
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok())
        && let Some(actor) = find(v)
    {
        return Some((actor, header::HeaderName::from_static("x-api-key")));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)?;
    find(auth).map(|actor| (actor, header::AUTHORIZATION))
}

/// The middleware in front of the bridge: token mode authenticates and strips the token,
/// local mode runs everything as actor `local`.
pub(crate) async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(tokens) = &state.tokens else {
        req.extensions_mut().insert(Actor::new("local"));
        return next.run(req).await;
    };
    match authenticate(tokens, req.headers()) {
        Some((actor, used)) => {
            req.headers_mut().remove(used);
            req.extensions_mut().insert(Actor::new(actor));
            next.run(req).await
        }
        None => unauthorized(req.uri().path()),
    }
}

/// 401 with `WWW-Authenticate: Bearer`, provider-shaped under the bridge's paths.
pub(crate) fn unauthorized(path: &str) -> Response {
    let msg = "aibridge: missing or invalid gateway token";
    let (ct, body) = if path.starts_with("/api/v2/aibridge/anthropic/") {
        (
            "application/json",
            format!(
                r#"{{"type":"error","error":{{"type":"authentication_error","message":"{msg}"}}}}"#
            ),
        )
    } else if path.starts_with("/api/v2/aibridge/") {
        (
            "application/json",
            format!(
                r#"{{"error":{{"message":"{msg}","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
            ),
        )
    } else {
        ("text/plain; charset=utf-8", "unauthorized\n".to_owned())
    };
    let mut resp = (StatusCode::UNAUTHORIZED, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The password of an `Authorization: Basic` header (the user name is ignored).
pub(crate) fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    decoded.split_once(':').map(|(_, pass)| pass.to_owned())
}

/// Standard base64 with optional padding; `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

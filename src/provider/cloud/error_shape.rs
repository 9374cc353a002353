//! The clouds' errors in the Anthropic error shape (cloud-anthropic.md "Errors").

use bytes::Bytes;
use http::StatusCode;

/// The Anthropic error type of a status (403 permission, 404 not found, 429 rate limit,
/// 400 invalid request, 401 authentication, 529 overloaded, 5xx api error).
fn error_type(status: StatusCode, aws_type: Option<&str>) -> &'static str {
    match status.as_u16() {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        503 if aws_type.is_some_and(|t| t.contains("ServiceUnavailable")) => "overloaded_error",
        _ => "api_error",
    }
}

/// The Anthropic error body for a cloud error answer. AWS: `{"message"}` (or `Message`)
/// with `x-amzn-errortype`; Google: `{"error":{"code","message","status"}}` (also inside a
/// one-element array). An Anthropic-shaped body is kept as it is.
pub(crate) fn anthropic_error(status: StatusCode, aws_type: Option<&str>, body: &[u8]) -> Bytes {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let value = match value {
        Some(serde_json::Value::Array(mut items)) if !items.is_empty() => Some(items.remove(0)),
        v => v,
    };
    if let Some(v) = &value
        && v.get("type").and_then(|t| t.as_str()) == Some("error")
        && v.get("error").is_some_and(serde_json::Value::is_object)
    {
        return Bytes::copy_from_slice(body);
    }
    let message = value.as_ref().and_then(|v| {
        v.get("message")
            .or_else(|| v.get("Message"))
            .or_else(|| v.get("error").and_then(|e| e.get("message")))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    // `x-amzn-errortype: ThrottlingException:http://internal.amazon.com/…`: the name only.
    let aws_name = aws_type.map(|t| t.split(':').next().unwrap_or(t).to_owned());
    let google_status = value
        .as_ref()
        .and_then(|v| v.get("error")?.get("status")?.as_str().map(str::to_owned));
    let message = message
        .or_else(|| aws_name.clone())
        .or(google_status)
        .unwrap_or_else(|| {
            format!(
                "upstream returned {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned()
        });
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": error_type(status, aws_name.as_deref()), "message": message},
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(status: u16, t: Option<&str>, body: &str) -> serde_json::Value {
        let b = anthropic_error(StatusCode::from_u16(status).unwrap(), t, body.as_bytes());
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn aws_errors_take_the_anthropic_shape() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (503, "api_error"),
        ] {
            let v = shape(status, Some("SomeException"), r#"{"message":"m1"}"#);
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{status}");
            assert_eq!(v["error"]["message"], "m1");
        }
        let v = shape(429, Some("ThrottlingException:http://x"), "");
        assert_eq!(v["error"]["message"], "ThrottlingException");
        let v = shape(400, None, r#"{"Message":"capital"}"#);
        assert_eq!(v["error"]["message"], "capital");
    }

    #[test]
    fn google_errors_take_the_anthropic_shape() {
        let v = shape(
            403,
            None,
            r#"[{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}]"#,
        );
        assert_eq!(v["error"]["type"], "permission_error");
        assert_eq!(v["error"]["message"], "Permission denied");
        let v = shape(404, None, r#"{"error":{"code":404,"status":"NOT_FOUND"}}"#);
        assert_eq!(v["error"]["message"], "NOT_FOUND");
    }

    #[test]
    fn anthropic_errors_stay_and_garbage_gets_a_message() {
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#;
        assert_eq!(
            &anthropic_error(StatusCode::from_u16(529).unwrap(), None, body.as_bytes())[..],
            body.as_bytes()
        );
        let v = shape(502, None, "<html>bad gateway</html>");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["message"], "upstream returned 502 Bad Gateway");
    }
}

//! Request intake shared by the three APIs: the JSON checks of routing.md step 7 and the
//! fields every API classifies.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::BridgeError;

/// What the bridge learned from a bridged request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    /// The `model` string, unchanged.
    pub(crate) model: String,
    /// `stream` is the JSON boolean `true`.
    pub(crate) streaming: bool,
    /// The user's prompt, per the API's rule.
    pub(crate) prompt: Option<String>,
    /// The tool call this request answers.
    pub(crate) correlating_tool_call_id: Option<String>,
    /// `metadata.user_id` when it is a JSON string (Claude Code session fallback).
    pub(crate) metadata_user_id: Option<String>,
    /// Chat: the client itself asked for `stream_options.include_usage: true`.
    pub(crate) client_include_usage: bool,
}

/// The top-level fields any API looks at, borrowed from the body.
#[derive(Deserialize)]
pub(crate) struct Top<'a> {
    #[serde(borrow)]
    pub(crate) model: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) stream: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) messages: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) input: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) background: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) stream_options: Option<&'a RawValue>,
}

impl Top<'_> {
    /// The model and streaming flag (S17: `model` must be a non-empty string).
    pub(crate) fn info(&self) -> Result<RequestInfo, BridgeError> {
        let model = self
            .model
            .and_then(|m| serde_json::from_str::<String>(m.get()).ok())
            .filter(|m| !m.is_empty())
            .ok_or_else(BridgeError::bad_model)?;
        let streaming = self.stream.is_some_and(|s| s.get().trim() == "true");
        Ok(RequestInfo {
            model,
            streaming,
            ..RequestInfo::default()
        })
    }
}

/// Parses the top level: empty, invalid JSON, or not an object ⇒ 400.
pub(crate) fn parse_top(body: &[u8]) -> Result<Top<'_>, BridgeError> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Err(BridgeError::bad_body("aibridge: request body is empty"));
    }
    if trimmed.first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => BridgeError::bad_body("aibridge: request body must be a JSON object"),
                Err(e) => {
                    BridgeError::bad_body(format!("aibridge: request body is not valid JSON: {e}"))
                }
            },
        );
    }
    // JSON text is UTF-8 (RFC 8259). serde_json checks only the strings it decodes, so
    // invalid bytes inside a value the bridge skips would otherwise be forwarded.
    if let Err(e) = std::str::from_utf8(body) {
        let at = e.valid_up_to();
        let line_start = body[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let line = body[..at].iter().filter(|b| **b == b'\n').count() + 1;
        return Err(BridgeError::bad_body(format!(
            "aibridge: request body is not valid JSON: invalid UTF-8 at line {line} column {}",
            at - line_start + 1
        )));
    }
    serde_json::from_slice::<Top<'_>>(body).map_err(|e| {
        BridgeError::bad_body(format!("aibridge: request body is not valid JSON: {e}"))
    })
}

/// The client tool names of a request (`name`, or Chat's `function.name`).
pub(crate) fn client_tool_names(body: &[u8]) -> std::collections::BTreeSet<String> {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        tools: Option<Vec<&'a RawValue>>,
    }
    let tools = serde_json::from_slice::<Top<'_>>(body)
        .ok()
        .and_then(|t| t.tools)
        .unwrap_or_default();
    tools
        .into_iter()
        .filter_map(|t| {
            let v: serde_json::Value = serde_json::from_str(t.get()).ok()?;
            v["function"]["name"]
                .as_str()
                .or_else(|| v["name"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> String {
        match parse_top(body.as_bytes()).and_then(|t| t.info()) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.message,
        }
    }

    #[test]
    fn json_checks_answer_each_case() {
        assert_eq!(msg(""), "aibridge: request body is empty");
        assert_eq!(msg("  \n"), "aibridge: request body is empty");
        assert_eq!(msg("[1,2]"), "aibridge: request body must be a JSON object");
        assert_eq!(msg("\"x\""), "aibridge: request body must be a JSON object");
        assert!(msg("{\"model\":").starts_with("aibridge: request body is not valid JSON: "));
        assert!(msg("{\"model\":").contains("line 1 column"));
        assert!(msg("nope").starts_with("aibridge: request body is not valid JSON"));
        assert_eq!(msg("{}"), "aibridge: \"model\" must be a non-empty string");
        assert_eq!(
            msg("{\"model\":\"\"}"),
            "aibridge: \"model\" must be a non-empty string"
        );
        assert_eq!(
            msg("{\"model\":5}"),
            "aibridge: \"model\" must be a non-empty string"
        );
        assert_eq!(msg("{\"model\":\"m\"}"), "ok");
    }

    #[test]
    fn invalid_utf8_anywhere_is_invalid_json() {
        let msg = |b: &[u8]| match parse_top(b).and_then(|t| t.info()) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.message,
        };
        assert_eq!(
            msg(b"{\"model\":\"m\",\n  \"x\":\"\xff\"}"),
            "aibridge: request body is not valid JSON: invalid UTF-8 at line 2 column 8"
        );
        assert_eq!(
            msg(b"{\"model\":\"m\",\"k\xc3\":1}"),
            "aibridge: request body is not valid JSON: invalid UTF-8 at line 1 column 16"
        );
        assert_eq!(
            msg("{\"model\":\"m\",\"x\":\"h\u{e9}llo \u{1f30d}\"}".as_bytes()),
            "ok"
        );
    }

    #[test]
    fn streaming_needs_the_boolean_true() {
        let info = |b: &str| parse_top(b.as_bytes()).unwrap().info().unwrap().streaming;
        assert!(info(r#"{"model":"m","stream":true}"#));
        assert!(!info(r#"{"model":"m","stream":"true"}"#));
        assert!(!info(r#"{"model":"m","stream":false}"#));
        assert!(!info(r#"{"model":"m"}"#));
    }
}

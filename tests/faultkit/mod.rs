//! The three bridged APIs as data, for the fault-injection suites: request bodies, a
//! complete upstream stream split into events, and the check of each API's terminal error
//! event (resilience.md D7).
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use serde_json::json;

use crate::support::{fixture, parse_sse};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Messages,
    Chat,
    Responses,
}

impl Api {
    pub const ALL: [Api; 3] = [Api::Messages, Api::Chat, Api::Responses];

    pub fn path(self) -> &'static str {
        match self {
            Api::Messages => "/anthropic/v1/messages",
            Api::Chat => "/openai/v1/chat/completions",
            Api::Responses => "/openai/v1/responses",
        }
    }

    pub fn stream_request(self) -> &'static str {
        match self {
            Api::Messages => {
                r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hello"}]}"#
            }
            Api::Chat => {
                r#"{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"say hello"}]}"#
            }
            Api::Responses => r#"{"model":"gpt-5-codex","stream":true,"input":"say hello"}"#,
        }
    }

    pub fn blocking_request(self) -> &'static str {
        match self {
            Api::Messages => {
                r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"say hello"}]}"#
            }
            Api::Chat => {
                r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"say hello"}]}"#
            }
            Api::Responses => r#"{"model":"gpt-5-codex","input":"say hello"}"#,
        }
    }

    /// A complete, successful upstream stream.
    pub fn stream(self) -> Bytes {
        fixture(match self {
            Api::Messages => "anthropic/text_stream.upstream.sse",
            Api::Chat => "openai/chat-simple.sse",
            Api::Responses => "openai/responses-simple.sse",
        })
    }

    pub fn blocking_body(self) -> Bytes {
        fixture(match self {
            Api::Messages => "anthropic/text_blocking.upstream.json",
            Api::Chat => "openai/chat-simple.response.json",
            Api::Responses => "openai/responses-simple.response.json",
        })
    }

    /// The stream's events, each with its blank line (the fixtures use LF line ends).
    pub fn events(self) -> Vec<Bytes> {
        let all = self.stream();
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(at) = memchr::memmem::find(&all[start..], b"\n\n") {
            out.push(all.slice(start..start + at + 2));
            start += at + 2;
        }
        assert_eq!(start, all.len(), "{self:?}: fixture ends with a blank line");
        out
    }

    /// The index of the first event that carries usage (so a stream cut after it has usage
    /// to record): `message_start`, the usage-only chunk, `response.completed`.
    pub fn usage_event(self) -> usize {
        let events = self.events();
        let needle: &[u8] = match self {
            Api::Messages => b"event: message_start",
            Api::Chat => b"\"usage\":{",
            Api::Responses => b"event: response.completed",
        };
        events
            .iter()
            .position(|e| memchr::memmem::find(e, needle).is_some())
            .unwrap_or_else(|| panic!("{self:?}: no usage event"))
    }

    /// The error shape of a provider-made error body.
    pub fn assert_error_body(self, body: &[u8], message: &str) {
        let v: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{self:?}: error body is not JSON ({e}): {body:?}"));
        match self {
            Api::Messages => {
                assert_eq!(v["type"], "error", "{v}");
                assert_eq!(v["error"]["message"], message, "{v}");
            }
            Api::Chat | Api::Responses => {
                assert_eq!(v["error"]["message"], message, "{v}");
                assert!(v["error"]["type"].is_string(), "{v}");
                assert!(v["error"]["code"].is_string(), "{v}");
            }
        }
    }

    /// The body ends with exactly one terminal error event of this API carrying `message`
    /// (and, for Chat, no `[DONE]`). Returns the events before it.
    pub fn assert_terminal(self, body: &[u8], message: &str) -> usize {
        let text = String::from_utf8_lossy(body);
        assert!(!body.is_empty(), "{self:?}: empty body");
        assert!(text.ends_with("\n\n"), "{self:?}: ends mid-event: {text}");
        let events = parse_sse(body);
        let last = events
            .last()
            .unwrap_or_else(|| panic!("{self:?}: no event in {text}"));
        let terminal = |e: &crate::support::SseEvent| match self {
            Api::Messages => {
                e.event.as_deref() == Some("error")
                    && e.json()
                        == json!({"type":"error","error":{"type":"api_error","message":message}})
            }
            Api::Chat => {
                e.event.is_none()
                    && e.data != "[DONE]"
                    && e.json()
                        == json!({"error":{"message":message,"type":"server_error","param":null,"code":"upstream_stream_error"}})
            }
            Api::Responses => {
                let v = e.json();
                e.event.as_deref() == Some("error")
                    && v["type"] == "error"
                    && v["code"] == "upstream_stream_error"
                    && v["message"] == message
                    && v["param"].is_null()
                    && v["sequence_number"].is_u64()
            }
        };
        assert!(
            terminal(last),
            "{self:?}: last event is not the terminal error with {message:?}: {text}"
        );
        let errors = events
            .iter()
            .filter(|e| e.data.contains("upstream_stream_error") || e.data.contains("api_error"))
            .count();
        assert_eq!(errors, 1, "{self:?}: exactly one terminal event: {text}");
        if self == Api::Chat {
            assert!(
                !events.iter().any(|e| e.data == "[DONE]"),
                "{self:?}: no [DONE] after a failure"
            );
        }
        events.len() - 1
    }
}

//! Fixture files under `tests/fixtures/`, and a small, independent SSE parser for assertions.

use std::path::PathBuf;

use bytes::Bytes;

/// Absolute path of `tests/fixtures/{path}`.
pub fn fixture_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(path)
}

/// The exact bytes of `tests/fixtures/{path}`; panics with the path if it cannot be read.
pub fn fixture(path: &str) -> Bytes {
    let full = fixture_path(path);
    match std::fs::read(&full) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => panic!("cannot read fixture {}: {e}", full.display()),
    }
}

/// `tests/fixtures/{path}` parsed as JSON.
pub fn fixture_json(path: &str) -> serde_json::Value {
    let bytes = fixture(path);
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("fixture {path} is not JSON: {e}"))
}

/// One dispatched server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`None` if the event had none, i.e. type `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON; panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// Parses a complete SSE stream per the WHATWG rules (LF, CRLF or CR line ends; a leading BOM
/// is skipped; `:` lines are comments; one space after the colon is dropped; a blank line
/// dispatches; an event without data is not dispatched). An unterminated last event is
/// dropped, as the standard says. Fields other than `event` and `data` are ignored.
pub fn parse_sse(input: &[u8]) -> Vec<SseEvent> {
    let text = std::str::from_utf8(input).expect("SSE stream is not UTF-8");
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut events = Vec::new();
    let mut event: Option<String> = None;
    let mut data: Option<String> = None;
    let mut rest = text;
    while let Some(pos) = rest.find(['\r', '\n']) {
        let line = &rest[..pos];
        let skip = if rest[pos..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[pos + skip..];
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(SseEvent {
                    event: event.take(),
                    data: d,
                });
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    events
}

//! The real-client request logs in `tests/fixtures/clients/*.jsonl` (see the README there).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::fixtures::fixture;

/// One logged request of a real client.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    /// 1-based order within the file.
    pub seq: u64,
    pub method: String,
    /// Path **and query** as the client sent it, relative to its base URL (no mount or
    /// provider prefix), e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Headers in the original order and case, duplicates kept. Includes `Host` and
    /// `Content-Length` as logged; credentials are masked (`sk-ant-f***(len=22)`).
    pub headers: Vec<(String, String)>,
    /// The raw JSON text of the logged `body` field (key order preserved), if any.
    pub body: Option<Box<RawValue>>,
    /// The body length in bytes as sent on the wire.
    pub body_len: usize,
}

#[derive(Deserialize)]
struct Line {
    seq: u64,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<Box<RawValue>>,
    body_len: usize,
}

/// Parses `tests/fixtures/clients/{file}` (e.g. `"cc-tool.jsonl"`), one request per line.
pub fn client_log(file: &str) -> Vec<ClientRequest> {
    let raw = fixture(&format!("clients/{file}"));
    let text = std::str::from_utf8(&raw).expect("client log is not UTF-8");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let line: Line =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{file} line {}: {e}", i + 1));
            ClientRequest {
                seq: line.seq,
                method: line.method,
                path: line.path,
                headers: line.headers,
                body: line.body,
                body_len: line.body_len,
            }
        })
        .collect()
}

/// Re-encodes logged JSON text the way the clients sent it: removes the whitespace between
/// tokens (whitespace inside strings is kept) and turns `\uXXXX` escapes of non-ASCII
/// characters back into UTF-8 (the log writer escaped them; the clients did not). Key order and
/// every other escape are preserved exactly. The input must be valid JSON.
pub fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            if c == '\\' {
                let next = chars.next().expect("escape at end of JSON text");
                if next == 'u' {
                    let hex: String = chars.by_ref().take(4).collect();
                    let unit = u32::from_str_radix(&hex, 16).expect("\\u escape");
                    if let Some(decoded) = decode_non_ascii(unit, &mut chars) {
                        out.push(decoded);
                        continue;
                    }
                    out.push_str("\\u");
                    out.push_str(&hex);
                } else {
                    out.push('\\');
                    out.push(next);
                }
                continue;
            }
            out.push(c);
            if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Decodes a `\uXXXX` escape (and its low surrogate, if it is a high one) into a non-ASCII
/// char; `None` for ASCII code points and lone surrogates, which stay escaped.
fn decode_non_ascii(
    unit: u32,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Option<char> {
    if unit < 0x80 {
        return None;
    }
    if (0xD800..0xDC00).contains(&unit) {
        // A high surrogate: only decode when a low surrogate escape follows.
        let rest: String = chars.clone().take(6).collect();
        let low = rest
            .strip_prefix("\\u")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .filter(|l| (0xDC00..0xE000).contains(l))?;
        for _ in 0..6 {
            chars.next();
        }
        return char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00));
    }
    char::from_u32(unit)
}

/// Whether a logged header value is a masked credential (`abcdefgh***(len=N)`).
pub fn is_masked(value: &str) -> bool {
    value.contains("***(len=")
}

impl ClientRequest {
    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p)
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as compact JSON bytes in the logged key order (empty if there is no body).
    /// These are the bytes a replay sends; the bridge must forward them unchanged.
    pub fn body_bytes(&self) -> Bytes {
        self.body
            .as_ref()
            .map_or_else(Bytes::new, |b| Bytes::from(compact_json(b.get())))
    }

    /// The body parsed as a JSON value.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        self.body
            .as_ref()
            .map(|b| serde_json::from_str(b.get()).expect("logged body is JSON"))
    }

    /// The headers a replay sends: the logged ones in order, minus `Host`, `Content-Length`
    /// and every masked credential header (the test adds its own credentials).
    pub fn replay_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, v)| {
                !n.eq_ignore_ascii_case("host")
                    && !n.eq_ignore_ascii_case("content-length")
                    && !is_masked(v)
            })
            .cloned()
            .collect()
    }

    /// An `http::Request` replaying this logged request under `prefix` (e.g. `/anthropic`, or
    /// `http://127.0.0.1:PORT/api/v2/aibridge/anthropic`), with [`Self::replay_headers`] and
    /// [`Self::body_bytes`]. Map the body into the service's body type with
    /// `req.map(Into::into)`.
    pub fn to_request(&self, prefix: &str) -> http::Request<Bytes> {
        let mut builder = http::Request::builder()
            .method(self.method.as_str())
            .uri(format!("{prefix}{}", self.path));
        for (name, value) in self.replay_headers() {
            builder = builder.header(name, value);
        }
        builder
            .body(self.body_bytes())
            .expect("valid replay request")
    }
}

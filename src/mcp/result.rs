//! Tool call outcomes and their renderings for the providers' tool-result formats.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::{Value, json};

/// Prefix of the text a failed call is answered with.
const FAILED_PREFIX: &str = "aibridge: tool call failed: ";
/// Longest `isError` result text recorded as the invocation error (S10).
const MAX_ERROR_TEXT: usize = 1024;

/// The outcome of one injected tool call.
#[derive(Debug, Clone)]
pub(crate) struct ToolOutcome {
    /// Ok = the server answered with a `CallToolResult` (possibly `isError`); Err = the
    /// invocation failed (transport or HTTP error, `tool error {code}: {message}`,
    /// `timed out after {N}s`, `server unavailable`, …).
    pub(crate) result: Result<ToolResult, String>,
}

/// A `CallToolResult`, converted into the blocks the renderings are built from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolResult {
    /// The content in order. Never empty: an empty result holds one text block, the compact
    /// JSON of `structured_content` or `(no content)`.
    pub(crate) content: Vec<Block>,
    /// `structuredContent`, as received.
    pub(crate) structured_content: Option<Value>,
    /// `isError: true`.
    pub(crate) is_error: bool,
}

/// One content block of a tool result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Block {
    /// Text, or the text rendering of a resource, a resource link or unsupported content.
    Text(String),
    /// A base64 image.
    Image {
        /// The image's MIME type.
        mime_type: String,
        /// Base64 data.
        data: String,
    },
}

// === impl ToolOutcome ===

impl ToolOutcome {
    /// A call that was not executed or did not complete, with the reason.
    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        Self {
            result: Err(reason.into()),
        }
    }

    /// A call the server answered.
    pub(crate) fn answered(result: ToolResult) -> Self {
        Self { result: Ok(result) }
    }

    /// The `ToolUsage.invocation_error`: the failure text, or for an `isError` result its
    /// text (at most 1 KiB).
    pub(crate) fn invocation_error(&self) -> Option<String> {
        match &self.result {
            Err(reason) => Some(reason.clone()),
            Ok(r) if r.is_error => {
                let mut text = r.joined_text();
                let cut = floor_char_boundary(&text, MAX_ERROR_TEXT);
                text.truncate(cut);
                Some(text)
            }
            Ok(_) => None,
        }
    }

    /// Whether the model is told the call failed (`isError` or an invocation error).
    pub(crate) fn is_error(&self) -> bool {
        self.result.as_ref().map_or(true, |r| r.is_error)
    }

    /// The Anthropic `tool_result.content` array, at most `max_bytes` of text plus base64
    /// image data (images dropped first, then text cut, with the truncation note).
    pub(crate) fn anthropic_content(&self, max_bytes: usize) -> Value {
        let blocks = self.limited_blocks(max_bytes);
        Value::Array(
            blocks
                .into_iter()
                .map(|block| match block {
                    Block::Text(text) => json!({"type": "text", "text": text}),
                    Block::Image { mime_type, data } => json!({
                        "type": "image",
                        "source": {"type": "base64", "media_type": mime_type, "data": data},
                    }),
                })
                .collect(),
        )
    }

    /// The content blocks, at most `max_bytes` of text plus base64 image data (images
    /// dropped first, then text cut, with the truncation note); a failed call is one text
    /// block `aibridge: tool call failed: {reason}`.
    pub(crate) fn limited_blocks(&self, max_bytes: usize) -> Vec<Block> {
        let blocks = match &self.result {
            Err(reason) => vec![Block::Text(format!("{FAILED_PREFIX}{reason}"))],
            Ok(r) => r.content.clone(),
        };
        limit_blocks(blocks, max_bytes)
    }

    /// The Chat `tool` message content / Responses `function_call_output.output`: the text
    /// renderings joined with `\n` (images as `[image {mime} not shown]`), prefixed with
    /// `Error: ` for `isError`, at most `max_bytes` (plus the truncation note).
    pub(crate) fn text(&self, max_bytes: usize) -> String {
        let text = match &self.result {
            Err(reason) => format!("{FAILED_PREFIX}{reason}"),
            Ok(r) if r.is_error => format!("Error: {}", r.joined_text()),
            Ok(r) => r.joined_text(),
        };
        limit_text(text, max_bytes)
    }
}

// === impl ToolResult ===

impl ToolResult {
    /// The text renderings joined with `\n`; images become `[image {mime} not shown]`.
    pub(crate) fn joined_text(&self) -> String {
        let mut out = String::new();
        for (i, block) in self.content.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match block {
                Block::Text(text) => out.push_str(text),
                Block::Image { mime_type, .. } => {
                    out.push_str(&format!("[image {mime_type} not shown]"));
                }
            }
        }
        out
    }
}

impl From<CallToolResult> for ToolResult {
    fn from(result: CallToolResult) -> Self {
        let mut content: Vec<Block> = result.content.into_iter().map(Block::from).collect();
        if content.is_empty() {
            let text = match &result.structured_content {
                Some(value) => value.to_string(),
                None => "(no content)".to_owned(),
            };
            content.push(Block::Text(text));
        }
        Self {
            content,
            structured_content: result.structured_content,
            is_error: result.is_error == Some(true),
        }
    }
}

// === impl Block ===

impl Block {
    fn size(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Image { data, .. } => data.len(),
        }
    }
}

impl From<ContentBlock> for Block {
    fn from(block: ContentBlock) -> Self {
        match block {
            ContentBlock::Text(t) => Self::Text(t.text),
            ContentBlock::Image(i) => Self::Image {
                mime_type: i.mime_type,
                data: i.data,
            },
            ContentBlock::Resource(r) => Self::Text(match r.resource {
                ResourceContents::TextResourceContents {
                    uri,
                    mime_type,
                    text,
                    ..
                } => format!("Resource {uri} ({}):\n{text}", mime_or_unknown(mime_type)),
                ResourceContents::BlobResourceContents {
                    uri,
                    mime_type,
                    blob,
                    ..
                } => format!(
                    "[binary resource {uri} ({}), {} bytes not shown]",
                    mime_or_unknown(mime_type),
                    base64_decoded_len(&blob)
                ),
                _ => "[unsupported resource content not shown]".to_owned(),
            }),
            ContentBlock::ResourceLink(link) => Self::Text(format!("Resource link: {}", link.uri)),
            ContentBlock::Audio(_) => {
                Self::Text("[unsupported audio content not shown]".to_owned())
            }
            other => Self::Text(format!(
                "[unsupported {} content not shown]",
                content_type(&other)
            )),
        }
    }
}

// === helpers ===

fn mime_or_unknown(mime: Option<String>) -> String {
    mime.unwrap_or_else(|| "unknown type".to_owned())
}

/// The `type` tag of a content block, for content kinds rmcp may add later.
fn content_type(block: &ContentBlock) -> String {
    serde_json::to_value(block)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Bytes encoded by a base64 string (padding and whitespace ignored).
fn base64_decoded_len(b64: &str) -> usize {
    let chars = b64
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .count();
    chars * 3 / 4
}

fn truncation_note(from: usize, limit: usize) -> String {
    format!("\n[aibridge: tool result truncated from {from} to {limit} bytes]")
}

/// Applies the size limit to blocks: over the limit, images are dropped first, then the
/// text is cut at a character boundary, and the note is appended to the last text block.
fn limit_blocks(blocks: Vec<Block>, limit: usize) -> Vec<Block> {
    let total: usize = blocks.iter().map(Block::size).sum();
    if total <= limit {
        return blocks;
    }
    let mut budget = limit;
    let mut out: Vec<Block> = Vec::new();
    for block in blocks {
        let Block::Text(mut text) = block else {
            continue;
        };
        if budget == 0 {
            break;
        }
        if text.len() > budget {
            text.truncate(floor_char_boundary(&text, budget));
            budget = 0;
        } else {
            budget -= text.len();
        }
        out.push(Block::Text(text));
    }
    let note = truncation_note(total, limit);
    match out.last_mut() {
        Some(Block::Text(text)) => text.push_str(&note),
        _ => out.push(Block::Text(note.trim_start().to_owned())),
    }
    out
}

fn limit_text(mut text: String, limit: usize) -> String {
    let total = text.len();
    if total <= limit {
        return text;
    }
    text.truncate(floor_char_boundary(&text, limit));
    text.push_str(&truncation_note(total, limit));
    text
}

/// The largest index `<= max` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use rmcp::model::{CallToolResult, ContentBlock, Resource, ResourceContents};

    use super::*;

    fn outcome(result: CallToolResult) -> ToolOutcome {
        ToolOutcome::answered(result.into())
    }

    #[test]
    fn text_result_renders_for_both_apis() {
        let o = outcome(CallToolResult::success(vec![ContentBlock::text("mock")]));
        assert_eq!(
            o.anthropic_content(1000),
            json!([{"type": "text", "text": "mock"}])
        );
        assert_eq!(o.text(1000), "mock");
        assert!(!o.is_error());
        assert_eq!(o.invocation_error(), None);
    }

    #[test]
    fn is_error_result_is_an_invocation_error() {
        let o = outcome(CallToolResult::error(vec![ContentBlock::text("denied")]));
        assert!(o.is_error());
        assert_eq!(o.invocation_error().as_deref(), Some("denied"));
        assert_eq!(o.text(1000), "Error: denied");
        assert_eq!(
            o.anthropic_content(1000),
            json!([{"type": "text", "text": "denied"}])
        );
    }

    #[test]
    fn is_error_text_is_capped_at_1_kib() {
        let o = outcome(CallToolResult::error(vec![ContentBlock::text(
            "é".repeat(600),
        )]));
        let err = o.invocation_error().unwrap();
        assert_eq!(err.len(), 1024);
    }

    #[test]
    fn failed_call_renders_the_reason() {
        let o = ToolOutcome::failed("timed out after 60s");
        assert!(o.is_error());
        assert_eq!(o.invocation_error().as_deref(), Some("timed out after 60s"));
        assert_eq!(
            o.text(1000),
            "aibridge: tool call failed: timed out after 60s"
        );
        assert_eq!(
            o.anthropic_content(1000),
            json!([{"type": "text", "text": "aibridge: tool call failed: timed out after 60s"}])
        );
    }

    #[test]
    fn content_kinds_follow_the_table() {
        let link = Resource::new("file:///b", "b");
        let o = outcome(CallToolResult::success(vec![
            ContentBlock::image("aGVsbG8=", "image/png"),
            ContentBlock::resource(ResourceContents::TextResourceContents {
                uri: "file:///a".into(),
                mime_type: Some("text/plain".into()),
                text: "hello".into(),
                meta: None,
            }),
            ContentBlock::resource(ResourceContents::BlobResourceContents {
                uri: "file:///c".into(),
                mime_type: Some("application/pdf".into()),
                blob: "aGVsbG8=".into(),
                meta: None,
            }),
            ContentBlock::resource_link(link),
            ContentBlock::audio("AAAA", "audio/wav"),
        ]));
        assert_eq!(
            o.anthropic_content(100_000),
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGVsbG8="}},
                {"type": "text", "text": "Resource file:///a (text/plain):\nhello"},
                {"type": "text", "text": "[binary resource file:///c (application/pdf), 5 bytes not shown]"},
                {"type": "text", "text": "Resource link: file:///b"},
                {"type": "text", "text": "[unsupported audio content not shown]"},
            ])
        );
        assert_eq!(
            o.text(100_000),
            "[image image/png not shown]\nResource file:///a (text/plain):\nhello\n\
             [binary resource file:///c (application/pdf), 5 bytes not shown]\n\
             Resource link: file:///b\n[unsupported audio content not shown]"
        );
    }

    #[test]
    fn structured_content_without_content_is_rendered_as_json() {
        let o = outcome(CallToolResult::structured(json!({"b": 1, "a": [true]})));
        // rmcp's `structured` also fills `content`; clear it to test the fallback.
        let mut r = CallToolResult::structured(json!({"b": 1, "a": [true]}));
        r.content.clear();
        let o2 = outcome(r);
        assert_eq!(o2.text(1000), r#"{"a":[true],"b":1}"#);
        assert!(o.text(1000).contains("\"a\""));
    }

    #[test]
    fn empty_result_says_no_content() {
        let o = outcome(CallToolResult::success(vec![]));
        assert_eq!(o.text(1000), "(no content)");
        assert_eq!(
            o.anthropic_content(1000),
            json!([{"type": "text", "text": "(no content)"}])
        );
    }

    #[test]
    fn over_limit_drops_images_then_cuts_text_with_note() {
        let o = outcome(CallToolResult::success(vec![
            ContentBlock::text("abcdef"),
            ContentBlock::image("A".repeat(100), "image/png"),
            ContentBlock::text("ghij"),
        ]));
        // 6 + 100 + 4 = 110 bytes; limit 8: image dropped, "abcdef" + "gh".
        assert_eq!(
            o.anthropic_content(8),
            json!([
                {"type": "text", "text": "abcdef"},
                {"type": "text", "text": "gh\n[aibridge: tool result truncated from 110 to 8 bytes]"},
            ])
        );
        // Only the image is over budget: dropped, the text stays whole, the note says so.
        assert_eq!(
            o.anthropic_content(20),
            json!([
                {"type": "text", "text": "abcdef"},
                {"type": "text", "text": "ghij\n[aibridge: tool result truncated from 110 to 20 bytes]"},
            ])
        );
    }

    #[test]
    fn text_is_cut_at_a_char_boundary() {
        let o = outcome(CallToolResult::success(vec![ContentBlock::text("aé€x")]));
        // "a"(1) "é"(2) "€"(3) "x"(1) = 7 bytes; limit 5 cuts inside "€".
        assert_eq!(
            o.text(5),
            "aé\n[aibridge: tool result truncated from 7 to 5 bytes]"
        );
        assert_eq!(
            o.anthropic_content(2),
            json!([{"type": "text", "text": "a\n[aibridge: tool result truncated from 7 to 2 bytes]"}])
        );
    }

    #[test]
    fn only_images_over_limit_leave_the_note() {
        let o = outcome(CallToolResult::success(vec![ContentBlock::image(
            "A".repeat(50),
            "image/gif",
        )]));
        assert_eq!(
            o.anthropic_content(10),
            json!([{"type": "text", "text": "[aibridge: tool result truncated from 50 to 10 bytes]"}])
        );
    }
}

//! Size caps of recorded prompts and tool inputs, so one huge request cannot put its whole
//! body into memory twice and into the database (`aibridge_user_prompts`,
//! `aibridge_tool_usages`).

/// Default cap of a recorded prompt ([`PromptUsage::prompt`](super::PromptUsage::prompt)):
/// 64 KiB.
pub(crate) const DEFAULT_MAX_PROMPT: usize = 64 * 1024;

/// Default cap of a recorded tool input ([`ToolUsage::input`](super::ToolUsage::input)):
/// 64 KiB.
pub(crate) const DEFAULT_MAX_TOOL_INPUT: usize = 64 * 1024;

/// The key that marks a truncated tool input.
const TRUNCATED_KEY: &str = "aibridge_truncated";

/// The caps applied to records as they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordLimits {
    /// Most bytes of a recorded prompt, marker included.
    pub(crate) prompt: usize,
    /// Most bytes of a recorded tool input, the truncation object included.
    pub(crate) tool_input: usize,
}

// === impl RecordLimits ===

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            prompt: DEFAULT_MAX_PROMPT,
            tool_input: DEFAULT_MAX_TOOL_INPUT,
        }
    }
}

impl RecordLimits {
    /// The prompt as recorded: unchanged if it fits the cap; otherwise its longest prefix
    /// that ends on a character boundary and leaves room for the marker
    /// `…[truncated: N bytes]` (N: the original length in bytes), then the marker. The
    /// result is at most `prompt` bytes, or the marker alone if the cap is smaller than it.
    pub(crate) fn prompt(&self, prompt: String) -> String {
        truncate_text(prompt, self.prompt)
    }

    /// The tool input as recorded: unchanged if it fits the cap; otherwise the JSON object
    /// `{"aibridge_truncated":true,"original_bytes":N,"prefix":"…"}` whose `prefix` is the
    /// longest start of the input (as a JSON string, cut on a character boundary) that
    /// keeps the whole object within the cap. The column stays valid JSON either way.
    pub(crate) fn tool_input(&self, input: String) -> String {
        if input.len() <= self.tool_input {
            return input;
        }
        let head = format!(
            "{{\"{TRUNCATED_KEY}\":true,\"original_bytes\":{},\"prefix\":",
            input.len()
        );
        let budget = self.tool_input.saturating_sub(head.len() + 1);
        let mut out = head;
        out.push_str(&json_prefix(&input, budget));
        out.push('}');
        out
    }
}

/// `text` cut to at most `max` bytes with the truncation marker (see
/// [`RecordLimits::prompt`]). A cut string gives its spare capacity back.
pub(crate) fn truncate_text(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let marker = format!("…[truncated: {} bytes]", text.len());
    let cut = floor_char_boundary(&text, max.saturating_sub(marker.len()));
    text.truncate(cut);
    text.push_str(&marker);
    text.shrink_to_fit();
    text
}

/// A JSON string literal of the longest prefix of `s` (cut on a character boundary) whose
/// literal, quotes included, is at most `budget` bytes (`""` if even that does not fit).
fn json_prefix(s: &str, budget: usize) -> String {
    // The escaped width of each character as serde_json writes it: two bytes for `"`, `\`
    // and the short escapes, six for other control characters, the UTF-8 bytes otherwise.
    let room = budget.saturating_sub(2);
    let (mut width, mut cut) = (0, 0);
    for (at, c) in s.char_indices() {
        let w = match c {
            '"' | '\\' | '\u{8}' | '\t' | '\n' | '\u{c}' | '\r' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        };
        if width + w > room {
            break;
        }
        width += w;
        cut = at + c.len_utf8();
    }
    loop {
        let literal = serde_json::Value::String(s[..cut].to_owned()).to_string();
        if literal.len() <= budget || cut == 0 {
            return literal;
        }
        // Only if the widths above ever disagreed with serde_json: every byte removed from
        // the prefix removes at least one byte of the literal, so this ends.
        let excess = literal.len() - budget;
        cut = floor_char_boundary(s, cut.saturating_sub(excess));
    }
}

/// The largest character boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut cut = at;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_kept_as_they_are() {
        let limits = RecordLimits {
            prompt: 10,
            tool_input: 10,
        };
        assert_eq!(limits.prompt("0123456789".to_owned()), "0123456789");
        assert_eq!(
            limits.tool_input("{\"a\":\"b\"}".to_owned()),
            "{\"a\":\"b\"}"
        );
    }

    #[test]
    fn a_long_prompt_keeps_a_prefix_and_the_marker_within_the_cap() {
        let limits = RecordLimits {
            prompt: 64,
            tool_input: 64,
        };
        let prompt = "é".repeat(100); // 200 bytes
        let got = limits.prompt(prompt);
        assert!(got.len() <= 64, "{} bytes", got.len());
        let (prefix, marker) = got.split_once('…').unwrap();
        assert_eq!(marker, "[truncated: 200 bytes]");
        assert!(prefix.chars().all(|c| c == 'é'));
        assert_eq!(prefix.len(), 64 - "…[truncated: 200 bytes]".len() - 1);
        assert_eq!(
            got.capacity(),
            got.len(),
            "the spare capacity is given back"
        );
    }

    #[test]
    fn a_cap_smaller_than_the_marker_keeps_the_marker_alone() {
        assert_eq!(
            truncate_text("abcdef".to_owned(), 0),
            "…[truncated: 6 bytes]"
        );
    }

    #[test]
    fn a_long_tool_input_becomes_a_valid_json_object_within_the_cap() {
        for cap in [0, 10, 70, 100, 1000] {
            let limits = RecordLimits {
                prompt: cap,
                tool_input: cap,
            };
            // Quotes, control characters and multi-byte characters, which escaping widens.
            let input = format!("{{\"q\":\"{}\"}}", "\"\n\u{1}ü✓".repeat(400));
            let got = limits.tool_input(input.clone());
            let v: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert_eq!(v["aibridge_truncated"], true);
            assert_eq!(v["original_bytes"], input.len());
            let prefix = v["prefix"].as_str().unwrap();
            assert!(input.starts_with(prefix), "{cap}");
            let head = format!(
                "{{\"aibridge_truncated\":true,\"original_bytes\":{},\"prefix\":\"\"}}",
                input.len()
            );
            if cap >= head.len() {
                assert!(got.len() <= cap, "{cap}: {} bytes", got.len());
            } else {
                assert_eq!(got, head);
            }
            if cap == 1000 {
                assert!(
                    got.len() > 994,
                    "the prefix uses the room it has: {}",
                    got.len()
                );
            }
        }
    }
}

//! What the OpenAI APIs (Chat Completions and Responses) share: JSON scalars, the error
//! object's text, tool arguments as JSON, and (feature `mcp`) the tool injection edits.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::facts::{Fact, json_text};
#[cfg(feature = "mcp")]
use super::json_edit::{Edit, Obj, array_append};

/// The start of a blocking OpenAI body (Chat Completions and Responses alike): the body
/// decoded as `T` (`Err` when it is not a JSON object), and its response id, when not
/// empty, recorded as a fact.
pub(crate) fn blocking_body<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    id: impl FnOnce(&T) -> Option<&str>,
    facts: &mut Vec<Fact>,
) -> Result<(T, Option<String>), String> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err("not a JSON object".to_owned());
    }
    let parsed: T = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let rid = id(&parsed).filter(|id| !id.is_empty()).map(str::to_owned);
    if let Some(id) = &rid {
        facts.push(Fact::ResponseId(id.clone()));
    }
    Ok((parsed, rid))
}

/// A JSON string's value.
pub(crate) fn string_of(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

/// A JSON string's value, or a number's text (error codes come as either).
fn scalar_of(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if text.starts_with('"') {
        string_of(raw)
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(text.to_owned())
    } else {
        None
    }
}

/// An integer member (`None` for any other JSON value).
pub(crate) fn int_of(raw: Option<&RawValue>) -> Option<u64> {
    raw.and_then(|r| r.get().parse().ok())
}

/// The fields of an OpenAI error object (`{"code","type","message",…}`).
#[derive(Deserialize, Default)]
pub(crate) struct ErrorFields<'a> {
    #[serde(borrow)]
    pub(crate) code: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    pub(crate) kind: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) message: Option<&'a RawValue>,
}

impl ErrorFields<'_> {
    /// `{prefix}: {code|type}: {message}`, with the parts that are present.
    pub(crate) fn text(&self, prefix: &str) -> String {
        let kind = self
            .code
            .and_then(scalar_of)
            .or_else(|| self.kind.and_then(scalar_of));
        let message = self.message.and_then(scalar_of);
        let mut text = prefix.to_owned();
        for part in [kind, message].into_iter().flatten() {
            text.push_str(": ");
            text.push_str(&part);
        }
        text
    }
}

/// An error object, or an error message given as a bare string.
pub(crate) fn error_text(prefix: &str, raw: &RawValue) -> String {
    if raw.get().starts_with('"') {
        let message = string_of(raw).unwrap_or_default();
        return ErrorFields::default().text(prefix) + ": " + &message;
    }
    serde_json::from_str::<ErrorFields<'_>>(raw.get())
        .unwrap_or_default()
        .text(prefix)
}

/// Tool arguments (normally a JSON string holding JSON) as JSON text.
pub(crate) fn arguments_json(raw: &RawValue) -> String {
    match string_of(raw) {
        Some(s) => json_text(&s),
        None => json_text(raw.get()),
    }
}

/// Edits that add the injected tools `items` (appended to the client's `tools`) and
/// `parallel_tool_calls: false` (openai-chat.md, openai-responses.md "MCP injection").
#[cfg(feature = "mcp")]
pub(crate) fn inject_edits(original: &[u8], top: &Obj<'_>, items: &str) -> Option<Vec<Edit>> {
    let mut edits = Vec::new();
    match top.get("tools") {
        Some(raw) if raw.get().starts_with('[') => edits.push(array_append(original, raw, items)?),
        Some(raw) if raw.get() == "null" => edits.push(top.set("tools", &format!("[{items}]"))?),
        Some(_) => return None,
        None => edits.push(top.set("tools", &format!("[{items}]"))?),
    }
    edits.push(top.set("parallel_tool_calls", "false")?);
    Some(edits)
}

/// The members of an injected tool's function definition, with a fixed key order:
/// `"name":…,"description":…,"parameters":…,"strict":false` (no description when it is
/// empty). Chat nests them in `function`, Responses puts them at the top.
#[cfg(feature = "mcp")]
pub(crate) fn function_members(t: &crate::mcp::InjectedTool) -> String {
    let name = serde_json::to_string(&t.id).unwrap_or_default();
    let description = t
        .description
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|d| {
            format!(
                r#","description":{}"#,
                serde_json::to_string(d).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!(
        r#""name":{name}{description},"parameters":{},"strict":false"#,
        t.input_schema.get()
    )
}

/// A `{"type","text"}` part: Chat's array `content`, Responses' input content, reasoning
/// summaries and output content.
#[derive(Deserialize)]
pub(crate) struct TextPart<'a> {
    #[serde(borrow, rename = "type")]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) text: Option<&'a RawValue>,
}

/// The string texts of the parts of type `kind` in the JSON array `content`, in order
/// (parts that are not objects, or whose text is not a string, are skipped); `None` when
/// `content` is not an array.
pub(crate) fn text_parts(content: &RawValue, kind: &str) -> Option<Vec<String>> {
    let parts = serde_json::from_str::<Vec<&RawValue>>(content.get()).ok()?;
    Some(
        parts
            .iter()
            .filter_map(|p| serde_json::from_str::<TextPart<'_>>(p.get()).ok())
            .filter(|p| p.kind.as_deref() == Some(kind))
            .filter_map(|p| p.text.and_then(string_of))
            .collect(),
    )
}

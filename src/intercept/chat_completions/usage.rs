//! The Chat Completions `usage` object as token counts (openai-chat.md "Token usage").

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::intercept::facts::Usage;
use crate::intercept::openai::int_of;

/// A Chat `usage` object; counts stay raw so a non-integer value reads as absent.
#[derive(Deserialize, Default)]
struct UsageView<'a> {
    #[serde(borrow)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt_tokens_details: Option<&'a RawValue>,
    #[serde(borrow)]
    completion_tokens_details: Option<&'a RawValue>,
}

/// `usage.prompt_tokens_details`.
#[derive(Deserialize, Default)]
struct PromptDetails<'a> {
    #[serde(borrow)]
    cached_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    audio_tokens: Option<&'a RawValue>,
}

/// `usage.completion_tokens_details`.
#[derive(Deserialize, Default)]
struct CompletionDetails<'a> {
    #[serde(borrow)]
    reasoning_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    audio_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    accepted_prediction_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    rejected_prediction_tokens: Option<&'a RawValue>,
}

/// A nested object, or its defaults when absent or not an object.
fn details<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> T {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or_default()
}

/// The Chat usage object (`usage`, a JSON object) as token counts (openai-chat.md
/// "Token usage").
pub(super) fn usage_of(raw: &RawValue) -> Usage {
    let u: UsageView<'_> = details(Some(raw));
    let prompt: PromptDetails<'_> = details(u.prompt_tokens_details);
    let completion: CompletionDetails<'_> = details(u.completion_tokens_details);
    let cached = int_of(prompt.cached_tokens).unwrap_or(0);
    let mut extra = BTreeMap::new();
    for (key, value) in [
        ("prompt_audio", prompt.audio_tokens),
        ("completion_reasoning", completion.reasoning_tokens),
        ("completion_audio", completion.audio_tokens),
        (
            "completion_accepted_prediction",
            completion.accepted_prediction_tokens,
        ),
        (
            "completion_rejected_prediction",
            completion.rejected_prediction_tokens,
        ),
    ] {
        if let Some(n) = int_of(value) {
            extra.insert(key.to_owned(), n);
        }
    }
    Usage {
        input: int_of(u.prompt_tokens).unwrap_or(0).saturating_sub(cached),
        output: int_of(u.completion_tokens).unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
        extra,
    }
}

/// A JSON object (not `null`, not another type).
pub(super) fn object(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().starts_with('{'))
}

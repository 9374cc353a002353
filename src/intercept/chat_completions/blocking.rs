//! Facts of a blocking `chat.completion` body.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::usage::{object, usage_of};
use crate::error::json_string;
use crate::intercept::facts::Fact;
use crate::intercept::openai::{arguments_json, blocking_body, string_of};

/// A blocking `chat.completion` body; choices are parsed one by one, leniently.
#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

/// One entry of a blocking body's `choices`.
#[derive(Deserialize)]
struct BlockingChoice<'a> {
    #[serde(borrow)]
    message: Option<BlockingMessage<'a>>,
}

/// `choices[*].message`; tool calls are parsed one by one, leniently.
#[derive(Deserialize)]
struct BlockingMessage<'a> {
    #[serde(borrow)]
    tool_calls: Option<Vec<&'a RawValue>>,
}

/// One entry of `message.tool_calls`.
#[derive(Deserialize)]
struct BlockingToolCall<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<BlockingFunction<'a>>,
    #[serde(borrow)]
    custom: Option<BlockingFunction<'a>>,
}

/// `function` (`name`, `arguments`) or `custom` (`name`, `input`) of a tool call.
#[derive(Deserialize)]
struct BlockingFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

/// Facts of a blocking Chat Completions body. `Err` when it is not a JSON object.
pub(crate) fn blocking_facts(body: &[u8], facts: &mut Vec<Fact>) -> Result<(), String> {
    let (c, rid) = blocking_body(body, |c: &Completion<'_>| c.id.as_deref(), facts)?;
    let calls = c
        .choices
        .unwrap_or_default()
        .into_iter()
        .filter_map(|ch| serde_json::from_str::<BlockingChoice<'_>>(ch.get()).ok())
        .filter_map(|ch| ch.message.and_then(|m| m.tool_calls))
        .flatten();
    for call in calls {
        let Ok(call) = serde_json::from_str::<BlockingToolCall<'_>>(call.get()) else {
            continue;
        };
        let id = call.id.map(Cow::into_owned).unwrap_or_default();
        let (name, input) = match (call.kind.as_deref(), call.custom, call.function) {
            (Some("custom"), Some(c), _) | (_, Some(c), None) => (
                c.name,
                json_string(&c.input.and_then(string_of).unwrap_or_default()),
            ),
            (_, _, Some(f)) => (f.name, f.arguments.map_or_else(empty, arguments_json)),
            (_, None, None) => (None, empty()),
        };
        facts.push(Fact::Tool {
            response_id: rid.clone(),
            name: name.map(Cow::into_owned).unwrap_or_default(),
            call_id: id,
            input,
            provider_executed: false,
        });
    }
    if let Some(u) = object(c.usage) {
        facts.push(Fact::Usage {
            response_id: rid,
            usage: usage_of(u),
        });
    }
    Ok(())
}

/// `{}`.
fn empty() -> String {
    "{}".to_owned()
}

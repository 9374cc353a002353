//! OpenAI Chat Completions (openai-chat.md): request classification and the stream usage
//! request (S2), blocking extraction, the stream parser and the terminal error chunk.
//!
//! The helpers it shares with Responses are in [`super::openai`].

mod adapter;
mod blocking;
#[cfg(feature = "mcp")]
pub(crate) mod mcp;
mod request;
mod stream;
mod usage;

pub(crate) use self::adapter::ChatCompletions;
pub(crate) use self::blocking::blocking_facts;
pub(crate) use self::request::{parse_request, upstream_body};
pub(crate) use self::stream::ChatStream;

#[cfg(test)]
mod tests;

//! Server-sent events: an incremental zero-copy decoder and small encoders.
//!
//! The streaming interceptors read upstream `text/event-stream` bodies with [`Decoder`],
//! which yields each event as a [`Frame`]: the event's exact upstream bytes, to relay
//! unchanged, plus borrowed accessors for its `event:` type and `data:` payload. Only events
//! the bridge makes or rewrites are written anew, with the helpers re-exported from
//! `encode` ([`event`], [`json_event`], [`comment`]).

pub(crate) mod decode;
// Without MCP the bridge writes only error events: the other encoders serve the tool loop.
#[cfg_attr(
    not(any(test, feature = "mcp")),
    expect(
        dead_code,
        reason = "events and comments are written by the MCP tool loop only"
    )
)]
mod encode;
#[cfg(test)]
mod tests;

pub(crate) use self::decode::{Decoder, Frame};
pub(crate) use self::encode::json_event;
#[cfg(feature = "mcp")]
pub(crate) use self::encode::{comment, event};

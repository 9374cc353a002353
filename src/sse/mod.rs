//! Server-sent events: an incremental zero-copy decoder and small encoders.
//!
//! The streaming interceptors read upstream `text/event-stream` bodies with [`Decoder`],
//! which yields each event as a [`Frame`]: the event's exact upstream bytes, to relay
//! unchanged, plus borrowed accessors for its `event:` type and `data:` payload. Only events
//! the bridge makes or rewrites are written anew, with the helpers re-exported from
//! `encode` ([`event`], [`json_event`], [`comment`]).

pub(crate) mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub(crate) use self::{
    decode::{Decoder, Frame},
    encode::{comment, event, json_event},
};

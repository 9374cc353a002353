//! The relay path and the request editors without I/O, for the property tests and the
//! fuzz targets (through `aibridge::__bench`).

use bytes::Bytes;

use super::relay::MAX_EVENT_SIZE;
use super::{Fact, FrameAction, RequestInfo, StreamObserver, StreamStatus};
use crate::provider::Api;
use crate::sse::Decoder;

/// What the relay would have sent, recorded and concluded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) out: Vec<u8>,
    pub(crate) facts: Vec<Fact>,
    /// Why the relay stopped early (an invalid event or an oversized one).
    pub(crate) error: Option<String>,
    pub(crate) status: StreamStatus,
    /// Bytes after the last complete event (never relayed).
    pub(crate) tail: Vec<u8>,
}

/// Runs `chunks` through a decoder and `obs` the way the relay loop does: frames are
/// observed in order, the first invalid or oversized event stops the relay, and the
/// observer is flushed at the end.
pub(crate) fn drive(obs: &mut dyn StreamObserver, chunks: &[Bytes]) -> Run {
    let mut decoder = Decoder::new(MAX_EVENT_SIZE);
    let mut out = Vec::new();
    let mut facts = Vec::new();
    let mut error = None;
    let mut relay = |frame: crate::sse::Frame, facts: &mut Vec<Fact>| -> Result<(), String> {
        match obs.on_frame(&frame, facts)? {
            FrameAction::Relay => out.extend_from_slice(&frame.into_raw()),
            FrameAction::Replace(b) => out.extend_from_slice(&b),
            FrameAction::Drop => {}
        }
        Ok(())
    };
    let mut tail = Vec::new();
    'run: {
        for chunk in chunks {
            decoder.push(chunk.clone());
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if let Err(e) = relay(frame, &mut facts) {
                            error = Some(e);
                            break 'run;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e.to_string());
                        break 'run;
                    }
                }
            }
        }
        let rest = decoder.finish();
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Err(e) = relay(frame, &mut facts) {
                error = Some(e);
                break 'run;
            }
        }
        tail = rest.map(|b| b.to_vec()).unwrap_or_default();
    }
    obs.flush(&mut facts);
    Run {
        out,
        facts,
        error,
        status: obs.status(),
        tail,
    }
}

/// The observer of a request without injected tools.
pub(crate) fn plain(api: Api, info: &RequestInfo) -> Box<dyn StreamObserver> {
    super::observer(api, info)
}

/// Two injected tools of a server `coder`.
#[cfg(feature = "mcp")]
pub(crate) fn tools() -> std::sync::Arc<super::tool_loop::Tools> {
    use serde_json::value::RawValue;
    let tool = |id: &str, name: &str| crate::mcp::InjectedTool {
        id: id.into(),
        name: name.into(),
        server: "coder".into(),
        server_url: "http://127.0.0.1:1/mcp".into(),
        description: Some(format!("the {name} tool")),
        input_schema: RawValue::from_string(
            r#"{"type":"object","properties":{"owner":{"type":"string"}}}"#.into(),
        )
        .unwrap(),
    };
    std::sync::Arc::new(super::tool_loop::Tools(vec![
        tool("bmcp_coder_list_workspaces", "list_workspaces"),
        tool("bmcp_coder_read", "read"),
    ]))
}

/// The observer the tool loop uses (it hides injected calls and re-encodes events).
#[cfg(feature = "mcp")]
pub(crate) fn mcp_view(api: Api, info: &RequestInfo, original: &[u8]) -> Box<dyn StreamObserver> {
    match api {
        Api::Messages => Box::new(super::messages::mcp::McpMessages::new(tools())),
        Api::ChatCompletions => Box::new(super::chat_completions::mcp::McpChat::new(info, tools())),
        Api::Responses => Box::new(super::responses::mcp::McpResponses::new(original, tools())),
    }
}

/// An API by its `as_str()` name (`messages`, `chat_completions`, `responses`).
pub(crate) fn api_named(name: &str) -> Api {
    match name {
        "chat_completions" => Api::ChatCompletions,
        "responses" => Api::Responses,
        _ => Api::Messages,
    }
}

/// Whether every recorded tool input is valid JSON (records.md: `input` is JSON).
pub(crate) fn tool_inputs_are_json(facts: &[Fact]) -> bool {
    facts.iter().all(|f| match f {
        Fact::Tool { input, .. } | Fact::InjectedTool { input, .. } => {
            serde_json::from_str::<serde::de::IgnoredAny>(input).is_ok()
        }
        _ => true,
    })
}

/// The request checks of routing.md step 7 (and the API's own).
pub(crate) fn parse_request(api: Api, body: &[u8]) -> Option<RequestInfo> {
    super::parse_request(api, body).ok()
}

/// The facts of a blocking body (`Err`: the body is not the API's JSON).
pub(crate) fn blocking_facts(api: Api, body: &[u8]) -> (Vec<Fact>, Result<(), String>) {
    let mut facts = Vec::new();
    let r = super::blocking_facts(api, body, &mut facts);
    (facts, r)
}

/// The body sent upstream without tool injection (Chat streams: the S2 usage edit).
pub(crate) fn upstream_body(api: Api, info: &RequestInfo, body: Bytes) -> Bytes {
    super::upstream_body(api, info, body)
}

/// The MCP loop's upstream body of one iteration (`None`: the body cannot be edited).
#[cfg(feature = "mcp")]
pub(crate) fn mcp_request_body(
    api: Api,
    original: &[u8],
    tools: Option<&super::tool_loop::Tools>,
    turns: &[String],
) -> Option<Bytes> {
    match api {
        Api::Messages => super::messages::mcp::request_body(original, tools, turns),
        Api::ChatCompletions => super::chat_completions::mcp::request_body(original, tools, turns),
        Api::Responses => super::responses::mcp::request_body(original, tools, turns),
    }
}

/// The body a blocking MCP loop returns, with usage summed over `sum`.
#[cfg(feature = "mcp")]
pub(crate) fn mcp_final_blocking(
    api: Api,
    body: &Bytes,
    sum: Option<&serde_json::Map<String, serde_json::Value>>,
    tools: &super::tool_loop::Tools,
) -> Bytes {
    let sum = sum.map(|m| {
        let mut s = super::tool_loop::UsageSum::default();
        s.add(m);
        s
    });
    let _ = super::tool_loop::blocking_turn(api, body, body, tools);
    super::tool_loop::final_blocking(api, body, sum.as_ref(), tools)
}

//! The relay path and the request editors without I/O, for the property tests, the
//! benchmarks and the fuzz targets (through `aibridge::__bench`): the relay's own step
//! (`super::step`) and the API adapters, driven over in-memory chunks.

use bytes::Bytes;

#[cfg(feature = "mcp")]
use super::RequestInfo;
use super::adapter::Adapter;
use super::facts::Fact;
use super::facts::StreamStatus;
use super::relay::MAX_EVENT_SIZE;
use super::{StreamObserver, adapter_for, step};
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

/// Runs `chunks` through a decoder and `obs` the way the relay loop does (`relay_one`):
/// frames go through the relay's step in order, the first invalid or oversized event
/// stops the relay, at EOF the decoder's last frame is relayed, and the observer is
/// flushed at the end.
pub(crate) fn drive(obs: &mut dyn StreamObserver, chunks: &[Bytes]) -> Run {
    let mut decoder = Decoder::new(MAX_EVENT_SIZE);
    let mut out = Vec::new();
    let mut facts = Vec::new();
    let mut error = None;
    let mut tail = Vec::new();
    'run: {
        for chunk in chunks {
            decoder.push(chunk.clone());
            loop {
                match step::next(&mut decoder, obs, &mut facts) {
                    Ok(Some(stepped)) => {
                        out.extend_from_slice(&stepped.out.unwrap_or_default());
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break 'run;
                    }
                }
            }
        }
        let rest = decoder.finish();
        while let Ok(Some(frame)) = decoder.next_frame() {
            match step::step(obs, frame, &mut facts) {
                Ok(stepped) => out.extend_from_slice(&stepped.out.unwrap_or_default()),
                Err(e) => {
                    error = Some(e);
                    break 'run;
                }
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

/// The streaming hot path as the benchmarks measure it: `chunks` through the decoder and
/// `obs` with the relay's step, facts counted and dropped as they come. Returns (frames,
/// facts, relayed bytes).
pub(crate) fn count(obs: &mut dyn StreamObserver, chunks: &[Bytes]) -> (usize, usize, usize) {
    let mut decoder = Decoder::new(MAX_EVENT_SIZE);
    let mut facts = Vec::new();
    let (mut frames, mut nfacts, mut bytes) = (0, 0, 0);
    for chunk in chunks {
        decoder.push(chunk.clone());
        while let Ok(Some(stepped)) = step::next(&mut decoder, obs, &mut facts) {
            nfacts += facts.len();
            facts.clear();
            frames += 1;
            bytes += stepped.out.map_or(0, |b| b.len());
        }
    }
    obs.flush(&mut facts);
    (frames, nfacts + facts.len(), bytes)
}

/// The adapter of an API named by its `as_str()` (`messages`, `chat_completions`,
/// `responses`; anything else: Messages).
pub(crate) fn adapter_named(name: &str) -> &'static dyn Adapter {
    let api = [Api::Messages, Api::ChatCompletions, Api::Responses]
        .into_iter()
        .find(|api| api.as_str() == name)
        .unwrap_or(Api::Messages);
    adapter_for(api)
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
    std::sync::Arc::new(super::tool_loop::Tools::new(vec![
        tool("bmcp_coder_list_workspaces", "list_workspaces"),
        tool("bmcp_coder_read", "read"),
    ]))
}

/// The default loop bound (mcp.md D12).
#[cfg(feature = "mcp")]
const MAX_ITERATIONS: u32 = 10;

/// The observer the tool loop uses (it hides injected calls and re-encodes events), in
/// its first iteration, with [`tools`].
#[cfg(feature = "mcp")]
pub(crate) fn mcp_view(
    adapter: &dyn Adapter,
    info: &RequestInfo,
    original: &[u8],
) -> Box<dyn StreamObserver> {
    adapter.mcp_view(info, original, tools(), MAX_ITERATIONS)
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

/// The facts of a blocking body (`Err`: the body is not the API's JSON).
pub(crate) fn blocking_facts(
    adapter: &dyn Adapter,
    body: &[u8],
) -> (Vec<Fact>, Result<(), String>) {
    let mut facts = Vec::new();
    let r = adapter.blocking_facts(body, &mut facts);
    (facts, r)
}

/// The body a blocking MCP loop returns, with usage summed over `sum`; the blocking turn
/// is read first, as the loop does.
#[cfg(feature = "mcp")]
pub(crate) fn mcp_final_blocking(
    adapter: &dyn Adapter,
    body: &Bytes,
    sum: Option<&serde_json::Map<String, serde_json::Value>>,
    tools: &super::tool_loop::Tools,
) -> Bytes {
    let sum = sum.map(|m| {
        let mut s = super::tool_loop::UsageSum::default();
        s.add(m);
        s
    });
    let _ = adapter.blocking_turn(body, body, tools);
    adapter.final_blocking(body, sum.as_ref(), tools)
}

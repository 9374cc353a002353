//! Properties of the per-API parsers and request editors over generated input:
//!
//! - the relay path (SSE decoder + observer, as `relay_one` drives them) relays the input
//!   byte for byte under any chunking, and extracts the same facts however it is chunked;
//! - on arbitrary SSE-like streams (valid or corrupted JSON in events of the API's types)
//!   no observer panics, plain observers relay a prefix of the input, and every observer
//!   (the MCP views included) is chunking-invariant;
//! - the request and blocking-body extractors never panic, and tool inputs they record are
//!   always valid JSON;
//! - the request editors (the Chat usage edit, the MCP `request_body` of each API, the
//!   blocking final body) never panic and turn valid JSON into valid JSON.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::facts::Fact;
use super::harness::drive;
#[cfg(feature = "mcp")]
use super::harness::{mcp_view, tools};
use super::relay::MAX_EVENT_SIZE;
use super::{RequestInfo, StreamObserver, adapter_for};
use crate::provider::Api;
use crate::sse::Decoder;

/// The plain stream parser of `api` (no tool injection).
fn plain(api: Api, info: &RequestInfo) -> Box<dyn StreamObserver> {
    adapter_for(api).observer(info)
}

/// `input` cut at `cuts` (sorted, deduplicated, out-of-range ignored).
fn split(input: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|c| *c < input.len()).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(input.slice(at..c));
        at = c;
    }
    out.push(input.slice(at..));
    out
}

fn api_of(i: usize) -> Api {
    [Api::Messages, Api::ChatCompletions, Api::Responses][i % 3]
}

/// Every upstream stream fixture of the repository, by API.
fn fixtures() -> Vec<(Api, Bytes)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for (dir, api) in [
        ("anthropic", Api::Messages),
        ("openai", Api::ChatCompletions),
    ] {
        let mut names: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sse"))
            .collect();
        names.sort();
        for name in names {
            let api = if api == Api::Messages {
                api
            } else if name.starts_with("responses") || name.starts_with("codex") {
                Api::Responses
            } else {
                Api::ChatCompletions
            };
            out.push((
                api,
                Bytes::from(std::fs::read(root.join(dir).join(&name)).unwrap()),
            ));
        }
    }
    for (name, api) in [
        ("anthropic_messages.sse", Api::Messages),
        ("openai_chat.sse", Api::ChatCompletions),
        ("openai_responses.sse", Api::Responses),
    ] {
        out.push((
            api,
            Bytes::from(std::fs::read(root.join("sse").join(name)).unwrap()),
        ));
    }
    assert!(out.len() >= 25, "fixtures missing: {}", out.len());
    out
}

fn fixture_cases() -> &'static [(Api, Bytes)] {
    static F: std::sync::OnceLock<Vec<(Api, Bytes)>> = std::sync::OnceLock::new();
    F.get_or_init(fixtures)
}

// --- generators ---

const KEYS: &[&str] = &[
    "model",
    "type",
    "messages",
    "role",
    "content",
    "text",
    "tools",
    "tool_choice",
    "input",
    "stream",
    "stream_options",
    "include_usage",
    "usage",
    "input_tokens",
    "output_tokens",
    "id",
    "name",
    "arguments",
    "function",
    "tool_calls",
    "choices",
    "delta",
    "index",
    "output",
    "item",
    "response",
    "call_id",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "input_tokens_details",
    "output_tokens_details",
    "reasoning_tokens",
    "summary",
    "thinking",
    "partial_json",
    "metadata",
    "user_id",
    "background",
    "store",
    "status",
    "error",
    "code",
    "message",
    "content_block",
    "finish_reason",
    "output_index",
    "sequence_number",
    "item_id",
    "instructions",
    "system",
    "refusal",
    "tool_use_id",
    "is_error",
    "encrypted_content",
];

const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "function",
    "text",
    "tool_use",
    "server_tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "input_text",
    "output_text",
    "auto",
    "none",
    "any",
    "required",
    "bmcp_coder_read",
    "bmcp_coder_list_workspaces",
    "Read",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "end_turn",
    "tool_calls",
    "stop",
    "completed",
    "failed",
    "overloaded_error",
    "[DONE]",
    "{\"a\":1}",
    "{\"owner\":\"me\"}",
    "{",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..100_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,6}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A JSON object, often with a valid `model` (so the request checks pass).
fn object() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((key(), value()), 0..8),
        prop::option::weighted(0.8, "[a-z0-9.-]{1,12}"),
        any::<bool>(),
    )
        .prop_map(|(kv, model, stream)| {
            let mut m: Map<String, Value> = kv.into_iter().collect();
            if let Some(model) = model {
                m.insert("model".into(), Value::from(model));
            }
            if stream {
                m.insert("stream".into(), Value::Bool(true));
            }
            Value::Object(m)
        })
}

/// How serialized JSON is damaged (or not).
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Insert(usize, u8),
    Flip(usize, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
    ]
}

fn damaged(mut bytes: Vec<u8>, d: &Damage) -> Vec<u8> {
    let n = bytes.len().max(1);
    match *d {
        Damage::None => {}
        Damage::Truncate(i) => bytes.truncate(i % n),
        Damage::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Damage::Flip(i, b) => {
            if !bytes.is_empty() {
                bytes[i % n] ^= b | 1;
            }
        }
    }
    bytes
}

fn serialize(v: &Value, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(v).unwrap()
    } else {
        serde_json::to_vec(v).unwrap()
    }
}

/// JSON-ish bytes: a serialized object or value, maybe damaged.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![3 => object(), 1 => value()],
        any::<bool>(),
        damage(),
    )
        .prop_map(|(v, pretty, d)| damaged(serialize(&v, pretty), &d))
}

const EVENTS: [&[&str]; 3] = [
    &[
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    ],
    &[],
    &[
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.delta",
        "response.content_part.added",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.completed",
        "response.failed",
        "response.incomplete",
        "error",
    ],
];

/// One SSE event of `api`: a type from its vocabulary, JSON-ish data that often carries the
/// same `type`, and varied line ends.
fn event(api: usize) -> impl Strategy<Value = Vec<u8>> {
    let types = EVENTS[api % 3];
    (
        prop::option::of(prop::sample::select(if types.is_empty() {
            &["x"][..]
        } else {
            types
        })),
        object(),
        damage(),
        prop::sample::select(&["\n", "\r\n", "\r"][..]),
        0..8_u8,
    )
        .prop_map(move |(ty, mut data, d, eol, special)| {
            let ty = ty.filter(|_| !types.is_empty());
            if let (Some(t), Value::Object(m)) = (ty, &mut data) {
                m.insert("type".into(), Value::from(t));
            }
            let mut data = damaged(serialize(&data, false), &d);
            if special == 0 {
                data = b"[DONE]".to_vec();
            }
            let mut e = Vec::new();
            if special == 1 {
                e.extend_from_slice(b": keep-alive");
                e.extend_from_slice(eol.as_bytes());
            }
            if let Some(t) = ty {
                e.extend_from_slice(b"event: ");
                e.extend_from_slice(t.as_bytes());
                e.extend_from_slice(eol.as_bytes());
            }
            e.extend_from_slice(b"data: ");
            e.extend_from_slice(&data);
            e.extend_from_slice(eol.as_bytes());
            e.extend_from_slice(eol.as_bytes());
            e
        })
}

fn stream(api: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(event(api), 0..12).prop_map(|events| events.concat())
}

/// A fixture's events as (event type, JSON data or the raw frame).
fn fixture_events(input: &Bytes) -> Vec<(Option<String>, Result<Value, Bytes>)> {
    let mut d = Decoder::new(MAX_EVENT_SIZE);
    d.push(input.clone());
    let mut out = Vec::new();
    while let Ok(Some(f)) = d.next_frame() {
        let json = f
            .data()
            .and_then(|d| serde_json::from_slice::<Value>(&d).ok());
        let ty = f.event_type().map(str::to_owned);
        out.push((ty, json.ok_or_else(|| f.raw().clone())));
    }
    out
}

/// One change to a fixture stream.
#[derive(Debug, Clone)]
enum Op {
    /// Replace the n-th JSON node (depth first) of an event's data.
    Replace(usize, usize, Value),
    /// Remove the n-th member (depth first) of an event's data.
    Remove(usize, usize),
    Drop(usize),
    Duplicate(usize),
    SwapWithNext(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), 0..64_usize, value()).prop_map(|(e, n, v)| Op::Replace(e, n, v)),
        2 => (any::<usize>(), 0..64_usize).prop_map(|(e, n)| Op::Remove(e, n)),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Duplicate),
        1 => any::<usize>().prop_map(Op::SwapWithNext),
    ]
}

/// Visits nodes depth first; `f` is called on the n-th one.
fn nth_node(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *n == 0 {
        f(v);
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| nth_node(c, n, f)),
        Value::Object(m) => m.values_mut().any(|c| nth_node(c, n, f)),
        _ => false,
    }
}

/// Removes the n-th object member (depth first).
fn remove_nth_member(v: &mut Value, n: &mut usize) -> bool {
    match v {
        Value::Array(a) => a.iter_mut().any(|c| remove_nth_member(c, n)),
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if *n == 0 {
                    m.remove(&k);
                    return true;
                }
                *n -= 1;
                if m.get_mut(&k).is_some_and(|c| remove_nth_member(c, n)) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

/// A fixture stream with its events' JSON changed, dropped, duplicated or reordered: real
/// shapes, unexpected values.
fn mutated_fixture() -> impl Strategy<Value = (Api, Bytes)> {
    (0..64_usize, prop::collection::vec(op(), 1..5)).prop_map(|(which, ops)| {
        let cases = fixture_cases();
        let (api, input) = &cases[which % cases.len()];
        let mut events = fixture_events(input);
        for op in ops {
            let len = events.len();
            if len == 0 {
                break;
            }
            match op {
                Op::Replace(e, n, new) => {
                    if let Ok(v) = &mut events[e % len].1 {
                        let mut n = n;
                        nth_node(v, &mut n, &mut |node| *node = new.clone());
                    }
                }
                Op::Remove(e, n) => {
                    if let Ok(v) = &mut events[e % len].1 {
                        let _ = remove_nth_member(v, &mut { n });
                    }
                }
                Op::Drop(e) => drop(events.remove(e % len)),
                Op::Duplicate(e) => {
                    let ev = events[e % len].clone();
                    events.insert(e % len, ev);
                }
                Op::SwapWithNext(e) => {
                    if len > 1 {
                        events.swap(e % (len - 1), e % (len - 1) + 1);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (ty, data) in events {
            match data {
                Ok(v) => {
                    if let Some(t) = ty {
                        out.extend_from_slice(format!("event: {t}\n").as_bytes());
                    }
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&serde_json::to_vec(&v).unwrap());
                    out.extend_from_slice(b"\n\n");
                }
                Err(raw) => out.extend_from_slice(&raw),
            }
        }
        (*api, Bytes::from(out))
    })
}

fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..len.max(1), 0..16)
}

#[cfg(feature = "mcp")]
fn turns_values(turns: &[String]) -> Vec<Value> {
    turns
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect()
}

/// Every recorded tool input is valid JSON (records.md: `input` is JSON).
fn tool_inputs_are_json(facts: &[Fact]) -> Result<(), TestCaseError> {
    prop_assert!(
        super::harness::tool_inputs_are_json(facts),
        "a tool input is not JSON: {:?}",
        facts
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// The fixtures are relayed byte for byte, with the same facts, under any chunking.
    #[test]
    fn fixtures_relay_byte_for_byte_with_the_same_facts_under_any_chunking(
        which in 0..64_usize,
        sizes in prop::collection::vec(1..700_usize, 1..30),
    ) {
        let cases = fixture_cases();
        let (api, input) = &cases[which % cases.len()];
        let cuts: Vec<usize> = sizes
            .iter()
            .cycle()
            .scan(0, |at, size| { *at += size; Some(*at) })
            .take_while(|&at| at < input.len())
            .collect();
        let info = RequestInfo::default();
        let whole = drive(plain(*api, &info).as_mut(), std::slice::from_ref(input));
        let chunked = drive(plain(*api, &info).as_mut(), &split(input, &cuts));
        prop_assert_eq!(whole.error.as_deref(), None);
        prop_assert!(whole.out == input[..], "relayed bytes differ from the input");
        prop_assert!(chunked == whole, "chunking changed the run");
        tool_inputs_are_json(&whole.facts)?;
    }

    /// Generated streams: no panic; plain observers relay a prefix of the input (up to the
    /// first invalid event); every observer gives the same run under any chunking.
    #[test]
    fn generated_streams_never_panic_and_are_chunking_invariant(
        api in 0..3_usize,
        input in (0..3_usize).prop_flat_map(stream),
        cuts in cuts(2000),
        streaming in any::<bool>(),
        client_usage in any::<bool>(),
    ) {
        let api = api_of(api);
        let input = Bytes::from(input);
        let info = RequestInfo { streaming, client_include_usage: client_usage, ..RequestInfo::default() };
        let whole = drive(plain(api, &info).as_mut(), std::slice::from_ref(&input));
        let chunked = drive(plain(api, &info).as_mut(), &split(&input, &cuts));
        prop_assert!(chunked == whole, "chunking changed the run:\n{:?}\n{:?}", chunked, whole);
        tool_inputs_are_json(&whole.facts)?;
        let withholds = api == Api::ChatCompletions && streaming && !client_usage;
        if !withholds {
            prop_assert!(input.starts_with(&whole.out), "relayed bytes are not a prefix of the input");
            if whole.error.is_none() {
                prop_assert_eq!(whole.out.len() + whole.tail.len(), input.len());
            }
        }
        #[cfg(feature = "mcp")]
        {
            let original = br#"{"model":"m","stream":true,"input":"hi"}"#;
            let whole = drive(mcp_view(adapter_for(api), &info, original).as_mut(), std::slice::from_ref(&input));
            let chunked = drive(mcp_view(adapter_for(api), &info, original).as_mut(), &split(&input, &cuts));
            prop_assert!(chunked == whole, "MCP view: chunking changed the run");
            tool_inputs_are_json(&whole.facts)?;
        }
    }

    /// Fixtures with one byte damaged, inserted or cut: no panic, chunking-invariant.
    #[test]
    fn damaged_fixtures_never_panic_and_are_chunking_invariant(
        which in 0..64_usize,
        d in damage(),
        cuts in cuts(6000),
    ) {
        let cases = fixture_cases();
        let (api, input) = &cases[which % cases.len()];
        let input = Bytes::from(damaged(input.to_vec(), &d));
        let info = RequestInfo::default();
        let whole = drive(plain(*api, &info).as_mut(), std::slice::from_ref(&input));
        let chunked = drive(plain(*api, &info).as_mut(), &split(&input, &cuts));
        prop_assert!(chunked == whole);
        prop_assert!(input.starts_with(&whole.out));
        tool_inputs_are_json(&whole.facts)?;
        #[cfg(feature = "mcp")]
        {
            let whole = drive(mcp_view(adapter_for(*api), &info, b"{}").as_mut(), std::slice::from_ref(&input));
            let chunked = drive(mcp_view(adapter_for(*api), &info, b"{}").as_mut(), &split(&input, &cuts));
            prop_assert!(chunked == whole);
        }
    }

    /// Fixtures with changed values, missing members, dropped, repeated or swapped events:
    /// no panic, chunking-invariant, a prefix relayed, tool inputs JSON.
    #[test]
    fn mutated_fixtures_never_panic_and_are_chunking_invariant(
        (api, input) in mutated_fixture(),
        cuts in cuts(6000),
        streaming in any::<bool>(),
    ) {
        let info = RequestInfo { streaming, ..RequestInfo::default() };
        let whole = drive(plain(api, &info).as_mut(), std::slice::from_ref(&input));
        let chunked = drive(plain(api, &info).as_mut(), &split(&input, &cuts));
        prop_assert!(chunked == whole);
        tool_inputs_are_json(&whole.facts)?;
        if !(api == Api::ChatCompletions && streaming) {
            prop_assert!(input.starts_with(&whole.out));
        }
        #[cfg(feature = "mcp")]
        {
            let original = br#"{"model":"m","stream":true,"store":false,"input":[]}"#;
            let whole = drive(mcp_view(adapter_for(api), &info, original).as_mut(), std::slice::from_ref(&input));
            let chunked = drive(mcp_view(adapter_for(api), &info, original).as_mut(), &split(&input, &cuts));
            prop_assert!(chunked == whole);
            tool_inputs_are_json(&whole.facts)?;
            // What the MCP view relays is still an event stream: whole events only.
            let mut d = Decoder::new(MAX_EVENT_SIZE);
            d.push(Bytes::from(whole.out));
            while let Ok(Some(_)) = d.next_frame() {}
            prop_assert_eq!(d.finish(), None, "the MCP view relayed half an event");
        }
    }

    /// Request and blocking-body extractors: no panic on JSON-ish input; what they accept
    /// is a JSON object with a non-empty string model; tool inputs are JSON.
    #[test]
    fn extractors_never_panic_and_record_json_tool_inputs(
        api in 0..3_usize,
        body in json_ish(),
    ) {
        let api = api_of(api);
        if let Ok(info) = super::parse_request(api, &body) {
            prop_assert!(!info.model.is_empty());
            // A number beyond f64 (e.g. 1e400) is valid JSON that `Value` cannot hold; the
            // bridge forwards it untouched, so only the oracle has to skip it.
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) if e.to_string().contains("number out of range") => return Ok(()),
                Err(e) => panic!("accepted bodies are JSON: {e}"),
            };
            prop_assert!(v.is_object());
            prop_assert_eq!(v["model"].as_str(), Some(info.model.as_str()));
            prop_assert_eq!(info.streaming, v["stream"] == Value::Bool(true));
        }
        let mut facts = Vec::new();
        let _ = adapter_for(api).blocking_facts(&body, &mut facts);
        tool_inputs_are_json(&facts)?;
    }

    /// Request editors: valid JSON in, valid JSON out; never a panic.
    #[test]
    fn request_editors_keep_json_valid(
        api in 0..3_usize,
        body in json_ish(),
        turns in prop::collection::vec(value(), 0..3),
        with_tools in any::<bool>(),
        client_usage in any::<bool>(),
    ) {
        let api = api_of(api);
        let valid = serde_json::from_slice::<Value>(&body).is_ok();
        let info = RequestInfo { streaming: true, client_include_usage: client_usage, ..RequestInfo::default() };
        let edited = adapter_for(api).upstream_body(&info, Bytes::copy_from_slice(&body));
        if valid {
            prop_assert!(serde_json::from_slice::<Value>(&edited).is_ok(), "usage edit broke the JSON");
        }
        #[cfg(feature = "mcp")]
        {
            let tools = tools();
            let turns: Vec<String> = turns.iter().map(Value::to_string).collect();
            let tools_arg = with_tools.then_some(&*tools);
            let out = adapter_for(api).request_body(&body, tools_arg, &turns);
            if let (true, Some(out)) = (valid, out) {
                let v: Value = serde_json::from_slice(&out).map_err(|e| {
                    TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out)))
                })?;
                let original: Value = serde_json::from_slice(&body).unwrap();
                // Only tools, tool_choice, the conversation and stream_options may change.
                if let (Value::Object(o), Value::Object(n)) = (&original, &v) {
                    for (k, old) in o {
                        if !["tools", "tool_choice", "messages", "input", "parallel_tool_calls"].contains(&k.as_str()) {
                            prop_assert_eq!(n.get(k), Some(old), "key {} changed", k);
                        }
                    }
                }
            }
            let b = Bytes::from(body);
            let mut sum = super::tool_loop::UsageSum::default();
            for t in &turns_values(&turns) {
                if let Value::Object(m) = t {
                    sum.add(m);
                }
            }
            for sum in [None, Some(&sum)] {
                let finals = adapter_for(api).final_blocking(&b, sum, &tools);
                if valid {
                    prop_assert!(
                        serde_json::from_slice::<Value>(&finals).is_ok(),
                        "final body broke the JSON: {}",
                        String::from_utf8_lossy(&finals)
                    );
                }
            }
            let _ = adapter_for(api).blocking_turn(&b, &b, &tools);
        }
        let _ = (turns, with_tools);
    }
}

// --- regressions these properties found ---

#[test]
fn the_chat_usage_edit_leaves_a_non_object_alone() {
    let info = RequestInfo {
        streaming: true,
        ..RequestInfo::default()
    };
    for body in ["[]", " [1]", "\"x\""] {
        let out = adapter_for(Api::ChatCompletions).upstream_body(&info, Bytes::from(body));
        assert_eq!(&out[..], body.as_bytes());
    }
}

#[cfg(feature = "mcp")]
#[test]
fn injection_into_an_empty_object_and_usage_sums_into_an_empty_usage_stay_json() {
    let tools = tools();
    for api in [Api::Messages, Api::ChatCompletions, Api::Responses] {
        let body: &[u8] = if api == Api::ChatCompletions {
            b"{ }"
        } else {
            b"{}"
        };
        let out = adapter_for(api)
            .request_body(body, Some(&tools), &[])
            .unwrap();
        let v: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{api:?}: {e}: {}", String::from_utf8_lossy(&out)));
        assert_eq!(v["tools"].as_array().map(Vec::len), Some(2), "{api:?}");
    }
    let mut sum = super::tool_loop::UsageSum::default();
    sum.add(
        serde_json::json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
            .as_object()
            .unwrap(),
    );
    let body = Bytes::from_static(br#"{"id":"c","choices":[],"usage":{}}"#);
    let out = adapter_for(Api::ChatCompletions).final_blocking(&body, Some(&sum), &tools);
    let v: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
    assert_eq!(v["usage"]["total_tokens"], 7);
}

/// 100,000 levels of nesting wherever a parser or editor looks: no stack overflow (the test
/// thread has the default 2 MiB stack), no panic, JSON stays JSON.
#[test]
fn deep_nesting_never_overflows_the_stack() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let info = RequestInfo {
        streaming: true,
        ..RequestInfo::default()
    };
    for api in [Api::Messages, Api::ChatCompletions, Api::Responses] {
        for d in [&deep, &deep_obj] {
            // Request side: checks, the usage edit, the MCP editors.
            let bodies = [
                format!(r#"{{"model":"m","stream":true,"messages":{d},"input":{d},"tools":{d}}}"#),
                format!(
                    r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":{d}}}],"input":[{{"role":"user","content":{d}}}],"tools":[{{"name":"t","input_schema":{d}}}],"tool_choice":{d},"stream_options":{d},"metadata":{d}}}"#
                ),
            ];
            for body in &bodies {
                let parsed = super::parse_request(api, body.as_bytes());
                assert!(
                    parsed.is_ok(),
                    "{api:?}: a JSON object with a model is accepted"
                );
                let out = adapter_for(api).upstream_body(&info, Bytes::from(body.clone()));
                let raw = serde_json::from_slice::<Box<serde_json::value::RawValue>>(&out);
                assert!(raw.is_ok(), "{api:?}: the usage edit keeps it JSON");
                #[cfg(feature = "mcp")]
                {
                    let tools = tools();
                    let turns = [r#"{"role":"user","content":"x"}"#.to_owned()];
                    let _ = adapter_for(api).request_body(body.as_bytes(), Some(&tools), &turns);
                    let _ = super::request::client_tool_names(body.as_bytes());
                }
                // Response side: blocking bodies and stream events.
                let (facts, _) = super::harness::blocking_facts(adapter_for(api), body.as_bytes());
                assert!(super::harness::tool_inputs_are_json(&facts));
                #[cfg(feature = "mcp")]
                {
                    let b = Bytes::from(body.clone());
                    let _ =
                        super::harness::mcp_final_blocking(adapter_for(api), &b, None, &tools());
                }
                let events: Vec<String> = fixture_events(&Bytes::from_static(match api {
                    Api::Messages => {
                        include_bytes!("../../tests/fixtures/sse/anthropic_messages.sse")
                    }
                    Api::ChatCompletions => {
                        include_bytes!("../../tests/fixtures/sse/openai_chat.sse")
                    }
                    Api::Responses | Api::Mcp => {
                        include_bytes!("../../tests/fixtures/sse/openai_responses.sse")
                    }
                }))
                .into_iter()
                .map(|(ty, data)| {
                    let mut data = match data {
                        Ok(v) => v.to_string(),
                        Err(raw) => String::from_utf8_lossy(&raw).into_owned(),
                    };
                    // Every object gets a deep member.
                    data = data.replacen('{', &format!("{{\"deep\":{d},"), 1);
                    match ty {
                        Some(t) => format!("event: {t}\ndata: {data}\n\n"),
                        None => format!("data: {data}\n\n"),
                    }
                })
                .collect();
                let stream = Bytes::from(events.concat());
                let run = drive(plain(api, &info).as_mut(), std::slice::from_ref(&stream));
                assert!(stream.starts_with(&run.out));
                #[cfg(feature = "mcp")]
                {
                    let _ = drive(
                        mcp_view(adapter_for(api), &info, body.as_bytes()).as_mut(),
                        &[stream],
                    );
                }
            }
        }
    }
}

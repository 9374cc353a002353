use std::collections::BTreeMap;

use super::blocking::*;
use super::request::*;
use super::stream::*;
use super::usage::*;
use crate::intercept::facts::{Fact, FrameAction, StreamStatus, Usage};
use crate::intercept::observer::StreamObserver;
use crate::intercept::openai::*;
use crate::intercept::request::RequestInfo;
use crate::provider::Api;
use crate::sse::Decoder;
use bytes::Bytes;
use serde_json::value::RawValue;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/openai/", $name))
    };
}

macro_rules! client_body {
    ($name:literal) => {
        include_bytes!(concat!(
            "../../../tests/fixtures/clients/",
            $name,
            ".body.json"
        ))
    };
}

/// What the relay would do with a stream.
#[derive(Debug, Default)]
struct Run {
    facts: Vec<Fact>,
    status: Option<StreamStatus>,
    /// Bytes sent to the client.
    relayed: Vec<u8>,
    /// Frames withheld from the client.
    withheld: Vec<String>,
    /// Every frame, relayed or not, then what the relay never read.
    seen: Vec<u8>,
}

/// Feeds `input` through the real decoder in 7-byte pieces and the observer, like the
/// relay: withheld frames are not sent, an upstream error stops the relay after its frame,
/// and the observer is flushed at the end.
fn run(obs: &mut ChatStream, input: &str) -> Run {
    let mut dec = Decoder::new(1 << 20);
    let mut r = Run::default();
    let bytes = input.as_bytes();
    let mut read = 0;
    'feed: for piece in bytes.chunks(7) {
        dec.push(Bytes::copy_from_slice(piece));
        read += piece.len();
        while let Some(frame) = dec.next_frame().unwrap() {
            let action = obs.on_frame(&frame, &mut r.facts).unwrap();
            let raw = frame.into_raw();
            r.seen.extend_from_slice(&raw);
            match action {
                FrameAction::Relay => r.relayed.extend_from_slice(&raw),
                FrameAction::Drop => r.withheld.push(String::from_utf8(raw.to_vec()).unwrap()),
                FrameAction::Replace(b) => panic!("chat never rewrites without MCP: {b:?}"),
            }
            if matches!(obs.status(), StreamStatus::UpstreamError(_)) {
                break 'feed;
            }
        }
    }
    r.seen.extend_from_slice(&dec.finish().unwrap_or_default());
    r.seen.extend_from_slice(&bytes[read..]);
    obs.flush(&mut r.facts);
    r.status = Some(obs.status());
    r
}

fn info(streaming: bool, client_include_usage: bool) -> RequestInfo {
    RequestInfo {
        model: "m".into(),
        streaming,
        client_include_usage,
        ..RequestInfo::default()
    }
}

/// Runs a stream whose request the bridge edited (the client did not ask for usage).
fn run_edited(input: &str) -> Run {
    let r = run(&mut ChatStream::new(&info(true, false)), input);
    assert_eq!(
        r.seen,
        input.as_bytes(),
        "every byte passes through a frame"
    );
    r
}

fn usages(facts: &[Fact]) -> Vec<(Option<String>, Usage)> {
    facts
        .iter()
        .filter_map(|f| match f {
            Fact::Usage { response_id, usage } => Some((response_id.clone(), usage.clone())),
            _ => None,
        })
        .collect()
}

fn counts(u: &Usage) -> (u64, u64, u64, u64) {
    (u.input, u.output, u.cache_read, u.cache_write)
}

/// (name, call id, input) of every tool fact.
fn tools(facts: &[Fact]) -> Vec<(String, String, String)> {
    facts
        .iter()
        .filter_map(|f| match f {
            Fact::Tool {
                name,
                call_id,
                input,
                provider_executed,
                ..
            } => {
                assert!(!provider_executed);
                Some((name.clone(), call_id.clone(), input.clone()))
            }
            _ => None,
        })
        .collect()
}

fn tool(name: &str, id: &str, input: &str) -> (String, String, String) {
    (name.into(), id.into(), input.into())
}

fn extras(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

const ZERO_EXTRAS: [(&str, u64); 5] = [
    ("completion_accepted_prediction", 0),
    ("completion_audio", 0),
    ("completion_reasoning", 0),
    ("completion_rejected_prediction", 0),
    ("prompt_audio", 0),
];

// === blocking ===

#[test]
fn simple_blocking_body_records_19_200_with_five_zero_extras() {
    let mut facts = Vec::new();
    blocking_facts(fixture!("chat-simple.response.json").as_bytes(), &mut facts).unwrap();
    assert_eq!(
        facts[0],
        Fact::ResponseId("chatcmpl-CgSimpleBlock01".into())
    );
    let u = usages(&facts);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0.as_deref(), Some("chatcmpl-CgSimpleBlock01"));
    assert_eq!(counts(&u[0].1), (19, 200, 0, 0));
    assert_eq!(u[0].1.extra, extras(&ZERO_EXTRAS));
    assert!(tools(&facts).is_empty());
}

#[test]
fn read_file_blocking_body_records_60_15_and_the_tool() {
    let mut facts = Vec::new();
    blocking_facts(
        fixture!("chat-tool-read_file.response.json").as_bytes(),
        &mut facts,
    )
    .unwrap();
    assert_eq!(counts(&usages(&facts)[0].1), (60, 15, 0, 0));
    assert_eq!(
        tools(&facts),
        vec![tool("read_file", "call_Rf7aQ2", r#"{"path":"README.md"}"#)]
    );
}

#[test]
fn blocking_records_every_tool_call_of_every_choice() {
    let body = br#"{"id":"c","choices":[
        {"index":0,"message":{"role":"assistant","tool_calls":[
            {"id":"call_a","type":"function","function":{"name":"a","arguments":"{\"x\":1}"}},
            {"id":"call_b","type":"function","function":{"name":"b","arguments":""}}]}},
        {"index":1,"message":{"role":"assistant","tool_calls":[
            {"id":"call_c","type":"custom","custom":{"name":"patch","input":"*** Begin Patch"}},
            {"id":"call_d","type":"function","function":{"name":"d","arguments":"not json"}}]}},
        {"index":2,"message":{"role":"assistant","content":"hi","tool_calls":null}}]}"#;
    let mut facts = Vec::new();
    blocking_facts(body, &mut facts).unwrap();
    assert_eq!(
        tools(&facts),
        vec![
            tool("a", "call_a", r#"{"x":1}"#),
            tool("b", "call_b", "{}"),
            tool("patch", "call_c", r#""*** Begin Patch""#),
            tool("d", "call_d", r#""not json""#),
        ]
    );
    assert!(usages(&facts).is_empty(), "no usage object, no usage fact");
}

#[test]
fn blocking_body_that_is_not_an_object_is_an_error() {
    for body in [&b"[]"[..], b"[\"a\",null,null]", b"\"x\"", b"{\"id\":", b""] {
        let mut facts = Vec::new();
        assert!(blocking_facts(body, &mut facts).is_err(), "{body:?}");
        assert!(facts.is_empty());
    }
    let mut facts = Vec::new();
    blocking_facts(b"{\"usage\":null}", &mut facts).unwrap();
    assert!(facts.is_empty());
}

// === usage ===

#[test]
fn usage_subtracts_cached_tokens_and_keeps_only_integer_extras() {
    let raw = |s: &str| usage_of(&RawValue::from_string(s.to_owned()).unwrap());
    let u = raw(
        r#"{"prompt_tokens":5049,"completion_tokens":60,"total_tokens":5109,
        "prompt_tokens_details":{"cached_tokens":4864,"audio_tokens":"n/a"},
        "completion_tokens_details":{"reasoning_tokens":12,"audio_tokens":null,"accepted_prediction_tokens":1.5}}"#,
    );
    assert_eq!(counts(&u), (185, 60, 4864, 0));
    assert_eq!(u.extra, extras(&[("completion_reasoning", 12)]));
    let u = raw(r#"{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":9}}"#);
    assert_eq!(counts(&u), (0, 0, 9, 0), "input saturates at 0");
    assert!(u.extra.is_empty(), "S7: total and cached are not extras");
    let u = raw(r#"{"prompt_tokens":7,"completion_tokens":2,"prompt_tokens_details":[]}"#);
    assert_eq!(counts(&u), (7, 2, 0, 0));
}

// === streaming ===

#[test]
fn simple_stream_records_19_238_once_and_withholds_the_added_usage_chunk() {
    let input = fixture!("chat-simple.sse");
    let r = run_edited(input);
    assert_eq!(r.status, Some(StreamStatus::Completed));
    assert_eq!(
        r.facts[0],
        Fact::ResponseId("chatcmpl-CgSimpleStream01".into())
    );
    let u = usages(&r.facts);
    assert_eq!(u.len(), 1, "D9: one usage per completion");
    assert_eq!(u[0].0.as_deref(), Some("chatcmpl-CgSimpleStream01"));
    assert_eq!(counts(&u[0].1), (19, 238, 0, 0));
    assert_eq!(u[0].1.extra, extras(&ZERO_EXTRAS));
    // The client did not ask for usage: exactly the usage-only chunk is withheld.
    assert_eq!(r.withheld.len(), 1);
    assert!(r.withheld[0].contains("\"choices\":[]"));
    assert!(r.withheld[0].contains("\"completion_tokens\":238"));
    assert_eq!(r.relayed, input.replace(&r.withheld[0], "").as_bytes());
    assert!(r.relayed.ends_with(b"data: [DONE]\n\n"));
}

#[test]
fn a_client_that_asked_for_usage_gets_every_chunk() {
    let input = fixture!("chat-simple.sse");
    for streaming_info in [info(true, true), info(false, false)] {
        let r = run(&mut ChatStream::new(&streaming_info), input);
        assert!(r.withheld.is_empty());
        assert_eq!(r.relayed, input.as_bytes());
        assert_eq!(counts(&usages(&r.facts)[0].1), (19, 238, 0, 0));
    }
}

#[test]
fn read_file_stream_records_60_15_and_the_accumulated_arguments() {
    let r = run_edited(fixture!("chat-tool-read_file.sse"));
    assert_eq!(r.status, Some(StreamStatus::Completed));
    assert_eq!(counts(&usages(&r.facts)[0].1), (60, 15, 0, 0));
    assert_eq!(
        tools(&r.facts),
        vec![tool("read_file", "call_Rf7aQ1", r#"{"path":"README.md"}"#)]
    );
    // The tool is recorded when its finish_reason arrives, before the usage.
    let tool_at = r.facts.iter().position(|f| matches!(f, Fact::Tool { .. }));
    let usage_at = r.facts.iter().position(|f| matches!(f, Fact::Usage { .. }));
    assert!(tool_at < usage_at);
}

#[test]
fn in_band_error_chunk_stops_the_stream_without_usage() {
    let input = fixture!("chat-error.sse");
    let r = run_edited(input);
    assert_eq!(
        r.status,
        Some(StreamStatus::UpstreamError(
            "upstream stream error: server_error: The server had an error while processing your request. Sorry about that!".into()
        ))
    );
    assert!(usages(&r.facts).is_empty());
    assert_eq!(r.facts[0], Fact::ResponseId("chatcmpl-CgErr01".into()));
    // Relayed up to and including the upstream's error chunk.
    let end = input.find("data: [DONE]").unwrap();
    assert_eq!(r.relayed, &input.as_bytes()[..end]);
}

#[test]
fn error_text_prefers_code_then_type() {
    let text = |s: &str| error_text("p", &RawValue::from_string(s.to_owned()).unwrap());
    assert_eq!(text(r#"{"message":"m","type":"t","code":"c"}"#), "p: c: m");
    assert_eq!(text(r#"{"message":"m","type":"t","code":null}"#), "p: t: m");
    assert_eq!(text(r#"{"message":"m","code":429}"#), "p: 429: m");
    assert_eq!(text(r#"{}"#), "p");
    assert_eq!(text(r#""boom""#), "p: boom");
}

#[test]
fn copilot_tool_call_as_first_chunk_with_usage_in_the_finish_chunk() {
    let input = fixture!("copilot-chat-tool-first.sse");
    let mut obs = ChatStream::new(&info(true, false));
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::copy_from_slice(input.as_bytes()));
    let first = dec.next_frame().unwrap().unwrap();
    let mut facts = Vec::new();
    obs.on_frame(&first, &mut facts).unwrap();
    assert!(obs.content_started(), "a tool-call delta is content");
    assert_eq!(
        facts,
        vec![Fact::ResponseId("msg_vrtx_01JqFirstChunkTool".into())]
    );

    let r = run_edited(input);
    assert_eq!(r.status, Some(StreamStatus::Completed));
    assert!(r.withheld.is_empty(), "usage rides in a chunk with choices");
    assert_eq!(r.relayed, input.as_bytes());
    let u = usages(&r.facts);
    assert_eq!(u.len(), 1);
    assert_eq!(counts(&u[0].1), (5246, 65, 20470, 0));
    assert!(u[0].1.extra.is_empty());
    assert_eq!(
        tools(&r.facts),
        vec![tool("get_me", "toolu_vrtx_01GetMe", r#"{"owner": "me"}"#)]
    );
}

#[test]
fn copilot_tool_indices_starting_at_1_record_one_call_with_empty_arguments() {
    let r = run_edited(fixture!("copilot-chat-tool-index1.sse"));
    assert_eq!(r.status, Some(StreamStatus::Completed));
    assert_eq!(counts(&usages(&r.facts)[0].1), (510, 58, 25429, 0));
    assert_eq!(
        tools(&r.facts),
        vec![tool("list_repos", "toolu_vrtx_01ListRepos", "{}")]
    );
}

#[test]
fn parallel_and_custom_tool_calls_are_all_recorded_at_their_choice_finish() {
    let s = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[",
        "{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}},",
        "{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{\\\"tz\\\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"get_time\",\"arguments\":\":\\\"UTC\\\"}\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_c\",\"type\":\"custom\",\"custom\":{\"name\":\"apply_patch\",\"input\":\"*** Begin\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,\"custom\":{\"input\":\" Patch\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let r = run_edited(s);
    assert_eq!(
        tools(&r.facts),
        vec![
            tool("apply_patch", "call_c", r#""*** Begin Patch""#),
            tool("get_weather", "call_a", r#"{"city":"Paris"}"#),
            tool("get_time", "call_b", r#"{"tz":"UTC"}"#),
        ]
    );
    assert!(usages(&r.facts).is_empty(), "no usage seen, none recorded");
    assert_eq!(r.status, Some(StreamStatus::Completed));
}

#[test]
fn clean_eof_after_the_finish_reason_is_completed_and_flushes_the_usage() {
    let input = fixture!("copilot-chat-tool-first.sse");
    let cut = input.find("data: [DONE]").unwrap();
    let r = run_edited(&input[..cut]);
    assert_eq!(r.status, Some(StreamStatus::Completed));
    assert_eq!(usages(&r.facts).len(), 1);
}

#[test]
fn eof_before_any_finish_reason_is_open_and_records_the_open_call_with_empty_input() {
    let input = fixture!("chat-tool-read_file.sse");
    let cut = input.find("README").unwrap();
    let cut = input[cut..].find("\n\n").unwrap() + cut + 2;
    let r = run_edited(&input[..cut]);
    assert_eq!(r.status, Some(StreamStatus::Open));
    assert_eq!(
        tools(&r.facts),
        vec![tool("read_file", "call_Rf7aQ1", "{}")],
        "a partial argument string is not valid JSON"
    );
    assert!(usages(&r.facts).is_empty());
}

#[test]
fn content_starts_with_text_or_tool_calls_only() {
    let input = fixture!("chat-simple.sse");
    let mut obs = ChatStream::new(&info(true, false));
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::copy_from_slice(input.as_bytes()));
    let mut facts = Vec::new();
    obs.on_frame(&dec.next_frame().unwrap().unwrap(), &mut facts)
        .unwrap();
    assert!(!obs.content_started(), "the role chunk has empty content");
    obs.on_frame(&dec.next_frame().unwrap().unwrap(), &mut facts)
        .unwrap();
    assert!(obs.content_started());
}

#[test]
fn unparsable_chunks_are_errors_and_comments_are_relayed() {
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::from_static(
        b": keep-alive\n\ndata: {\"id\":\n\ndata: [DONE]\n\n",
    ));
    let mut obs = ChatStream::new(&info(true, false));
    let mut facts = Vec::new();
    let comment = dec.next_frame().unwrap().unwrap();
    assert_eq!(obs.on_frame(&comment, &mut facts), Ok(FrameAction::Relay));
    let broken = dec.next_frame().unwrap().unwrap();
    assert!(
        obs.on_frame(&broken, &mut facts)
            .unwrap_err()
            .starts_with("chunk: ")
    );
    assert_eq!(obs.status(), StreamStatus::Open);
}

#[test]
fn terminal_event_is_an_openai_error_chunk_without_done() {
    let obs = ChatStream::new(&info(true, false));
    assert_eq!(
        obs.terminal_event("aibridge: upstream stream failed: idle for more than 1s \"x\""),
        "data: {\"error\":{\"message\":\"aibridge: upstream stream failed: idle for more than 1s \\\"x\\\"\",\"type\":\"server_error\",\"param\":null,\"code\":\"upstream_stream_error\"}}\n\n"
    );
}

// === request ===

fn edit(body: &str) -> String {
    let info = parse_request(body.as_bytes()).unwrap();
    let out = upstream_body(&info, Bytes::copy_from_slice(body.as_bytes()));
    let out = String::from_utf8(out.to_vec()).unwrap();
    serde_json::from_str::<serde::de::IgnoredAny>(&out).expect("the edited body is JSON");
    out
}

#[test]
fn s2_appends_stream_options_when_absent() {
    assert_eq!(
        edit(r#"{"model":"m","stream":true,"messages":[]}"#),
        r#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
    );
    assert_eq!(
        edit("{\n  \"stream\": true,\n  \"model\": \"m\"\n}\n"),
        "{\n  \"stream\": true,\n  \"model\": \"m\",\"stream_options\":{\"include_usage\":true}\n}\n"
    );
    // A nested member of the same name is not the top-level one.
    assert_eq!(
        edit(
            r#"{"model":"m","messages":[{"role":"user","content":"x","stream_options":1}],"stream":true}"#
        ),
        r#"{"model":"m","messages":[{"role":"user","content":"x","stream_options":1}],"stream":true,"stream_options":{"include_usage":true}}"#
    );
}

#[test]
fn s2_sets_the_member_inside_an_object() {
    assert_eq!(
        edit(r#"{"model":"m","stream_options":{"x":1},"stream":true}"#),
        r#"{"model":"m","stream_options":{"x":1,"include_usage":true},"stream":true}"#
    );
    assert_eq!(
        edit(r#"{"model":"m","stream_options":{ },"stream":true}"#),
        r#"{"model":"m","stream_options":{"include_usage":true },"stream":true}"#
    );
    assert_eq!(
        edit(
            r#"{"stream_options": {"include_usage": false, "y": 2}, "stream": true, "model":"m"}"#
        ),
        r#"{"stream_options": {"include_usage": true, "y": 2}, "stream": true, "model":"m"}"#
    );
    assert_eq!(
        edit(
            r#"{"model":"m","stream":true,"stream_options":{"y":[1,{"include_usage":true}],"include_usage":null}}"#
        ),
        r#"{"model":"m","stream":true,"stream_options":{"y":[1,{"include_usage":true}],"include_usage":true}}"#
    );
}

#[test]
fn s2_replaces_a_non_object_stream_options() {
    for value in ["null", "\"yes\"", "[1, 2]", "true", "0"] {
        let body = format!(r#"{{"model":"m","stream_options": {value} ,"stream":true}}"#);
        assert_eq!(
            edit(&body),
            r#"{"model":"m","stream_options": {"include_usage":true} ,"stream":true}"#,
            "{value}"
        );
    }
}

#[test]
fn s2_leaves_other_bodies_unchanged() {
    for body in [
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        r#"{"model":"m","stream":true,"stream_options":{ "include_usage" : true , "z":0}}"#,
        r#"{"model":"m","stream":false,"stream_options":{"include_usage":false}}"#,
        r#"{"model":"m","stream":"true"}"#,
        r#"{"model":"m"}"#,
    ] {
        assert_eq!(edit(body), body);
    }
}

#[test]
fn s2_keeps_every_other_byte() {
    let body = "{\"z\":\"\\u00e9\\n\u{1F600}\",  \"model\":\"m\",\"stream\":true,\"a\":[1, 2 ,3],\"n\":1.50e3}";
    let out = edit(body);
    assert_eq!(
        out,
        "{\"z\":\"\\u00e9\\n\u{1F600}\",  \"model\":\"m\",\"stream\":true,\"a\":[1, 2 ,3],\"n\":1.50e3,\"stream_options\":{\"include_usage\":true}}"
    );
}

#[test]
fn s2_python_sdk_stream_helper_request_gets_usage_upstream() {
    let body = client_body!("python-sdk-8");
    let info = parse_request(body).unwrap();
    assert!(info.streaming);
    assert!(!info.client_include_usage);
    let out = crate::intercept::adapter_for(Api::ChatCompletions)
        .upstream_body(&info, Bytes::from_static(body));
    assert_eq!(out, fixture!("python-sdk-8.upstream.json").as_bytes());
    assert!(parse_request(&out).unwrap().client_include_usage);
}

#[test]
fn prompt_is_the_last_user_message_text() {
    let p = |body: &str| parse_request(body.as_bytes()).unwrap().prompt;
    assert_eq!(
        p(r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}"#)
            .as_deref(),
        Some("hi")
    );
    assert_eq!(
        p(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"first"},{"type":"text","text":"last"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#)
            .as_deref(),
        Some("last")
    );
    assert_eq!(
        p(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":""}]}]}"#
        ),
        None,
        "the last text part is empty"
    );
    assert_eq!(
        p(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}]}"#
        ),
        None
    );
    assert_eq!(
        p(r#"{"model":"m","messages":[{"role":"user","content":""}]}"#),
        None
    );
    assert_eq!(p(r#"{"model":"m","messages":[]}"#), None);
    assert_eq!(p(r#"{"model":"m","messages":{"role":"user"}}"#), None);
    assert_eq!(p(r#"{"model":"m"}"#), None);
}

#[test]
fn a_tool_result_message_correlates_its_call() {
    let info = parse_request(
        br#"{"model":"m","messages":[{"role":"user","content":"weather?"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"w","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"}]}"#,
    )
    .unwrap();
    assert_eq!(info.prompt, None);
    assert_eq!(info.correlating_tool_call_id.as_deref(), Some("call_1"));
    let info =
        parse_request(br#"{"model":"m","messages":[{"role":"tool","tool_call_id":""}]}"#).unwrap();
    assert_eq!(info.correlating_tool_call_id, None);
}

#[test]
fn request_checks_come_from_the_shared_intake() {
    let err = parse_request(br#"{"messages":[]}"#).unwrap_err();
    assert_eq!(
        err.message,
        "aibridge: \"model\" must be a non-empty string"
    );
    assert!(parse_request(b"[]").is_err());
}

#[test]
fn sdk_requests_are_classified_per_the_client_logs() {
    let cases: [(&[u8], bool, bool, &str); 5] = [
        (client_body!("python-sdk-6"), false, false, "say hello"),
        (client_body!("python-sdk-7"), true, true, "say hello"),
        (client_body!("python-sdk-8"), true, false, "weather?"),
        (client_body!("ts-sdk-6"), false, false, "say hello"),
        (client_body!("ts-sdk-7"), true, true, "say hello"),
    ];
    for (body, streaming, include_usage, prompt) in cases {
        let info = parse_request(body).unwrap();
        assert_eq!(info.model, "gpt-4o-mini");
        assert_eq!(info.streaming, streaming);
        assert_eq!(info.client_include_usage, include_usage);
        assert_eq!(info.prompt.as_deref(), Some(prompt));
        assert_eq!(info.correlating_tool_call_id, None);
        if !streaming || include_usage {
            let out = upstream_body(&info, Bytes::copy_from_slice(body));
            assert_eq!(out, body, "D1: forwarded unchanged");
        }
    }
}

use super::*;
use crate::provider::Api;
use crate::sse::Decoder;

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
#[derive(Debug)]
struct Run {
    facts: Vec<Fact>,
    status: StreamStatus,
    /// Bytes sent to the client.
    relayed: Vec<u8>,
    obs: ResponsesStream,
}

/// Feeds `input` through the real decoder in 11-byte pieces and the observer, like the
/// relay: an upstream error stops the relay after its frame; the observer is flushed at the
/// end. Asserts that every byte read passes through a frame, unchanged.
fn run(input: &str) -> Run {
    let mut obs = ResponsesStream::new();
    let mut dec = Decoder::new(1 << 20);
    let mut facts = Vec::new();
    let mut relayed = Vec::new();
    let bytes = input.as_bytes();
    let mut read = 0;
    'feed: for piece in bytes.chunks(11) {
        dec.push(Bytes::copy_from_slice(piece));
        read += piece.len();
        while let Some(frame) = dec.next_frame().unwrap() {
            assert_eq!(
                obs.on_frame(&frame, &mut facts).unwrap(),
                FrameAction::Relay
            );
            relayed.extend_from_slice(frame.raw());
            if matches!(obs.status(), StreamStatus::UpstreamError(_)) {
                break 'feed;
            }
        }
    }
    let mut seen = relayed.clone();
    seen.extend_from_slice(&dec.finish().unwrap_or_default());
    seen.extend_from_slice(&bytes[read..]);
    assert_eq!(seen, bytes, "byte-faithful relay");
    obs.flush(&mut facts);
    Run {
        facts,
        status: obs.status(),
        relayed,
        obs,
    }
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

fn reasoning(n: u64) -> BTreeMap<String, u64> {
    [("output_reasoning".to_owned(), n)].into_iter().collect()
}

/// (name, call id, input, provider-executed) of every tool fact.
fn tools(facts: &[Fact]) -> Vec<(String, String, String, bool)> {
    facts
        .iter()
        .filter_map(|f| match f {
            Fact::Tool {
                name,
                call_id,
                input,
                provider_executed,
                ..
            } => Some((
                name.clone(),
                call_id.clone(),
                input.clone(),
                *provider_executed,
            )),
            _ => None,
        })
        .collect()
}

fn tool(name: &str, id: &str, input: &str, executed: bool) -> (String, String, String, bool) {
    (name.into(), id.into(), input.into(), executed)
}

fn thoughts(facts: &[Fact]) -> Vec<(String, ThoughtSource)> {
    facts
        .iter()
        .filter_map(|f| match f {
            Fact::Thought {
                content, source, ..
            } => Some((content.clone(), *source)),
            _ => None,
        })
        .collect()
}

fn blocking(body: &str) -> Vec<Fact> {
    let mut facts = Vec::new();
    blocking_facts(body.as_bytes(), &mut facts).unwrap();
    facts
}

// === blocking ===

#[test]
fn simple_blocking_body_records_11_18_with_reasoning_0() {
    let facts = blocking(fixture!("responses-simple.response.json"));
    assert_eq!(facts[0], Fact::ResponseId("resp_0simpleblock".into()));
    let u = usages(&facts);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0.as_deref(), Some("resp_0simpleblock"));
    assert_eq!(counts(&u[0].1), (11, 18, 0, 0));
    assert_eq!(u[0].1.extra, reasoning(0));
    assert!(
        thoughts(&facts).is_empty(),
        "an empty summary is no thought"
    );
    assert!(tools(&facts).is_empty());
}

#[test]
fn cached_blocking_body_records_129_44_cache_11904() {
    let facts = blocking(fixture!("responses-cached.response.json"));
    let u = usages(&facts);
    assert_eq!(counts(&u[0].1), (129, 44, 11904, 0));
}

#[test]
fn blocking_records_every_kind_of_output_item() {
    let facts = blocking(
        r#"{"id":"resp_k","output":[
        {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"First."},{"type":"summary_text","text":""},{"type":"summary_text","text":"Second."}],"encrypted_content":"secret"},
        {"type":"message","role":"assistant","phase":"commentary","content":[{"type":"output_text","text":"Let me look."},{"type":"refusal","refusal":"no"}]},
        {"type":"message","role":"assistant","phase":"final_answer","content":[{"type":"output_text","text":"Done."}]},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Plain."}]},
        {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
        {"type":"function_call","id":"fc_2","call_id":"call_2","name":"get_time","arguments":""},
        {"type":"custom_tool_call","id":"ctc_1","call_id":"call_3","name":"apply_patch","input":"*** Begin Patch"},
        {"type":"local_shell_call","id":"lsh_1","call_id":"call_4","action":{"type":"exec","command":["ls"]}},
        {"type":"shell_call","id":"sh_1","call_id":"call_5","action":{"commands":["pwd"]}},
        {"type":"apply_patch_call","id":"ap_1","call_id":"call_6","operation":{"type":"create_file"}},
        {"type":"computer_call","id":"cu_1","call_id":"call_7","action":{"type":"click","x":1,"y":2}},
        {"type":"web_search_call","id":"ws_1","status":"completed","action":{"type":"search","query":"rust"}},
        {"type":"file_search_call","id":"fs_1","queries":["q"]},
        {"type":"code_interpreter_call","id":"ci_1","code":"print(1)","action":null},
        {"type":"image_generation_call","id":"ig_1","result":"base64"},
        {"type":"mcp_call","id":"mcp_1","name":"list_repos","server_label":"gh","arguments":"{\"owner\":\"me\"}"},
        {"type":"mcp_list_tools","id":"mcpl_1","tools":[]},
        {"type":"function_call","name":5}
        ],"usage":null}"#,
    );
    assert_eq!(
        thoughts(&facts),
        vec![
            ("First.".into(), ThoughtSource::ReasoningSummary),
            ("Second.".into(), ThoughtSource::ReasoningSummary),
            ("Let me look.".into(), ThoughtSource::Commentary),
        ]
    );
    assert_eq!(
        tools(&facts),
        vec![
            tool("get_weather", "call_1", r#"{"city":"Paris"}"#, false),
            tool("get_time", "call_2", "{}", false),
            tool("apply_patch", "call_3", r#""*** Begin Patch""#, false),
            tool(
                "local_shell",
                "call_4",
                r#"{"type":"exec","command":["ls"]}"#,
                false
            ),
            tool("shell", "call_5", r#"{"commands":["pwd"]}"#, false),
            tool("apply_patch", "call_6", "{}", false),
            tool(
                "computer",
                "call_7",
                r#"{"type":"click","x":1,"y":2}"#,
                false
            ),
            tool(
                "web_search",
                "ws_1",
                r#"{"type":"search","query":"rust"}"#,
                true
            ),
            tool("file_search", "fs_1", "{}", true),
            tool("code_interpreter", "ci_1", "{}", true),
            tool("image_generation", "ig_1", "{}", true),
            tool("list_repos", "mcp_1", r#"{"owner":"me"}"#, true),
        ]
    );
    assert!(usages(&facts).is_empty(), "usage null: no usage fact");
    assert!(facts.iter().all(|f| match f {
        Fact::Tool { response_id, .. } | Fact::Thought { response_id, .. } =>
            response_id.as_deref() == Some("resp_k"),
        _ => true,
    }));
}

#[test]
fn blocking_body_that_is_not_an_object_is_an_error() {
    for body in [&b"[]"[..], b"[null,null,null,null]", b"{\"id\":\"r\"", b"7"] {
        assert!(blocking_facts(body, &mut Vec::new()).is_err(), "{body:?}");
    }
}

#[test]
fn usage_saturates_and_records_reasoning_only_when_present() {
    let u = |s: &str| usage_of(Some(&RawValue::from_string(s.to_owned()).unwrap()));
    let got = u(r#"{"input_tokens":5,"input_tokens_details":{"cached_tokens":9},"output_tokens":2,"total_tokens":7}"#)
        .unwrap();
    assert_eq!(counts(&got), (0, 2, 9, 0));
    assert!(got.extra.is_empty());
    let got = u(r#"{"input_tokens":6371,"input_tokens_details":{"cached_tokens":6144},"output_tokens":75,"output_tokens_details":{"reasoning_tokens":25}}"#)
        .unwrap();
    assert_eq!(
        (counts(&got), got.extra),
        ((227, 75, 6144, 0), reasoning(25))
    );
    assert_eq!(u("null"), None);
    assert_eq!(u("[]"), None);
}

// === streaming ===

#[test]
fn simple_stream_records_11_18_once_and_completes() {
    let input = fixture!("responses-simple.sse");
    let r = run(input);
    assert_eq!(r.status, StreamStatus::Completed);
    assert_eq!(r.relayed, input.as_bytes());
    assert_eq!(r.facts[0], Fact::ResponseId("resp_0simplestream".into()));
    assert_eq!(
        r.facts
            .iter()
            .filter(|f| matches!(f, Fact::ResponseId(_)))
            .count(),
        1
    );
    let u = usages(&r.facts);
    assert_eq!(u.len(), 1, "D9: one usage per response");
    assert_eq!(u[0].0.as_deref(), Some("resp_0simplestream"));
    assert_eq!(counts(&u[0].1), (11, 18, 0, 0));
    assert_eq!(u[0].1.extra, reasoning(0));
    assert!(r.obs.content_started());
}

#[test]
fn cached_stream_records_1165_54_cache_15744() {
    let r = run(fixture!("responses-cached.sse"));
    assert_eq!(r.status, StreamStatus::Completed);
    assert_eq!(counts(&usages(&r.facts)[0].1), (1165, 54, 15744, 0));
}

#[test]
fn codex_stream_records_4006_13_and_one_reasoning_summary() {
    let r = run(fixture!("codex.sse"));
    assert_eq!(r.status, StreamStatus::Completed);
    let u = usages(&r.facts);
    assert_eq!(u.len(), 1);
    assert_eq!(counts(&u[0].1), (4006, 13, 0, 0));
    assert_eq!(
        thoughts(&r.facts),
        vec![(
            "Preparing simple response".into(),
            ThoughtSource::ReasoningSummary
        )]
    );
    assert!(
        r.facts.iter().all(|f| !format!("{f:?}").contains("gAAAA")),
        "encrypted reasoning is never recorded"
    );
}

#[test]
fn codex_tool_stream_records_the_function_call() {
    let r = run(fixture!("codex-tool.sse"));
    assert_eq!(r.status, StreamStatus::Completed);
    assert_eq!(
        tools(&r.facts),
        vec![tool(
            "exec_command",
            "call_d5ba573900f74e1da395cbc4",
            r#"{"cmd": "echo hi"}"#,
            false
        )]
    );
    assert_eq!(counts(&usages(&r.facts)[0].1), (153, 25, 3968, 0));
}

#[test]
fn error_event_stops_the_stream_without_usage() {
    let input = fixture!("responses-error.sse");
    let r = run(input);
    assert_eq!(
        r.status,
        StreamStatus::UpstreamError(
            "upstream stream error: server_error: The server had an error while processing your request. Sorry about that!".into()
        )
    );
    assert_eq!(r.relayed, input.as_bytes(), "the error event is relayed");
    assert!(usages(&r.facts).is_empty());
    assert_eq!(r.facts, vec![Fact::ResponseId("resp_0err".into())]);
}

#[test]
fn nested_error_event_names_its_code_or_type() {
    let r = run(concat!(
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\",\"message\":\"Too long.\",\"param\":\"input\"},\"sequence_number\":0}\n\n",
    ));
    assert_eq!(
        r.status,
        StreamStatus::UpstreamError(
            "upstream stream error: context_length_exceeded: Too long.".into()
        )
    );
    let r = run(concat!(
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"server_error\",\"code\":null,\"message\":\"Oops.\"},\"sequence_number\":0}\n\n",
    ));
    assert_eq!(
        r.status,
        StreamStatus::UpstreamError("upstream stream error: server_error: Oops.".into())
    );
    let r = run(
        "event: error\ndata: {\"type\":\"error\",\"code\":null,\"message\":\"Bare.\",\"param\":null,\"sequence_number\":4}\n\n",
    );
    assert_eq!(
        r.status,
        StreamStatus::UpstreamError("upstream stream error: Bare.".into())
    );
}

#[test]
fn response_failed_is_an_upstream_error_without_usage() {
    let r = run(fixture!("responses-failed.sse"));
    assert_eq!(
        r.status,
        StreamStatus::UpstreamError(
            "upstream response failed: server_error: The model failed to generate a response."
                .into()
        )
    );
    assert!(usages(&r.facts).is_empty());
}

#[test]
fn response_failed_with_usage_records_it_and_incomplete_completes() {
    let usage = r#"{"input_tokens":40,"input_tokens_details":{"cached_tokens":8},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1}}"#;
    let r = run(&format!(
        "event: response.failed\ndata: {{\"type\":\"response.failed\",\"response\":{{\"id\":\"resp_f\",\"status\":\"failed\",\"error\":null,\"usage\":{usage}}},\"sequence_number\":0}}\n\n"
    ));
    assert_eq!(
        r.status,
        StreamStatus::UpstreamError("upstream response failed".into())
    );
    let u = usages(&r.facts);
    assert_eq!(
        (u[0].0.as_deref(), counts(&u[0].1)),
        (Some("resp_f"), (32, 3, 8, 0))
    );

    let r = run(&format!(
        "event: response.incomplete\ndata: {{\"type\":\"response.incomplete\",\"response\":{{\"id\":\"resp_i\",\"status\":\"incomplete\",\"incomplete_details\":{{\"reason\":\"max_output_tokens\"}},\"usage\":{usage}}},\"sequence_number\":0}}\n\n"
    ));
    assert_eq!(r.status, StreamStatus::Completed);
    assert_eq!(usages(&r.facts).len(), 1);
}

#[test]
fn an_event_without_a_data_line_dispatches_nothing() {
    let input = fixture!("responses-wrong-format.sse");
    let r = run(input);
    assert_eq!(r.status, StreamStatus::Completed);
    assert_eq!(r.relayed, input.as_bytes());
    assert_eq!(counts(&usages(&r.facts)[0].1), (11, 18, 0, 0));
}

#[test]
fn events_without_an_event_line_are_named_by_their_type() {
    let input: String = fixture!("codex.sse")
        .split_inclusive('\n')
        .filter(|line| !line.starts_with("event:"))
        .collect();
    let r = run(&input);
    assert_eq!(r.status, StreamStatus::Completed);
    assert_eq!(counts(&usages(&r.facts)[0].1), (4006, 13, 0, 0));
    assert_eq!(thoughts(&r.facts).len(), 1);
    assert!(r.obs.content_started());
    assert_eq!(r.facts[0], Fact::ResponseId("resp_0codexhello".into()));
}

#[test]
fn a_stream_cut_before_its_terminal_event_stays_open_without_usage() {
    let input = fixture!("codex.sse");
    let cut = input.find("event: response.completed").unwrap();
    let r = run(&input[..cut]);
    assert_eq!(r.status, StreamStatus::Open);
    assert!(usages(&r.facts).is_empty());
    assert_eq!(
        thoughts(&r.facts).len(),
        1,
        "items done so far are recorded"
    );
    let last = input[..cut].rfind("\"sequence_number\":").unwrap();
    let n: u64 = input[last + 18..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        r.obs.terminal_event(
            "aibridge: upstream stream failed: connection closed before the message ended"
        ),
        format!(
            "event: error\ndata: {{\"type\":\"error\",\"code\":\"upstream_stream_error\",\"message\":\"aibridge: upstream stream failed: connection closed before the message ended\",\"param\":null,\"sequence_number\":{}}}\n\n",
            n + 1
        )
    );
}

#[test]
fn terminal_event_numbers_from_zero_without_events() {
    assert_eq!(
        ResponsesStream::new().terminal_event("aibridge: gateway is shutting down"),
        "event: error\ndata: {\"type\":\"error\",\"code\":\"upstream_stream_error\",\"message\":\"aibridge: gateway is shutting down\",\"param\":null,\"sequence_number\":0}\n\n"
    );
}

#[test]
fn sequence_numbers_are_read_from_unparsed_events_too() {
    assert_eq!(
        quick_sequence(b"{\"type\":\"x\",\"sequence_number\":12}"),
        Some(12)
    );
    assert_eq!(
        quick_sequence(b"{\"sequence_number\": 7, \"delta\":\"a\"}"),
        Some(7)
    );
    assert_eq!(
        quick_sequence(b"{\"delta\":\"\\\"sequence_number\\\":99\",\"sequence_number\":3}"),
        Some(3)
    );
    assert_eq!(quick_sequence(b"{\"delta\":\"x\"}"), None);
    let r = run(
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\",\"sequence_number\":41}\n\n",
    );
    assert!(
        r.obs
            .terminal_event("m")
            .ends_with(b"\"sequence_number\":42}\n\n")
    );
}

#[test]
fn unparsable_needed_events_are_errors_and_others_are_not_parsed() {
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::from_static(
        b"event: response.output_text.delta\ndata: {not json\n\nevent: response.completed\ndata: {\"type\":\n\n",
    ));
    let mut obs = ResponsesStream::new();
    let mut facts = Vec::new();
    let delta = dec.next_frame().unwrap().unwrap();
    assert_eq!(obs.on_frame(&delta, &mut facts), Ok(FrameAction::Relay));
    let completed = dec.next_frame().unwrap().unwrap();
    assert!(
        obs.on_frame(&completed, &mut facts)
            .unwrap_err()
            .starts_with("response.completed: ")
    );
    assert_eq!(obs.status(), StreamStatus::Open);
    assert!(!obs.content_started());
}

// === request ===

#[test]
fn background_true_is_refused() {
    let err = parse_request(br#"{"model":"gpt-5","input":"hi","background":true}"#).unwrap_err();
    assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
    assert_eq!(
        err.message,
        "aibridge: background responses are not supported"
    );
    for body in [
        r#"{"model":"gpt-5","background":false}"#,
        r#"{"model":"gpt-5","background":"true"}"#,
        r#"{"model":"gpt-5","background":null}"#,
    ] {
        assert!(parse_request(body.as_bytes()).is_ok(), "{body}");
    }
    let err = parse_request(br#"{"background":true}"#).unwrap_err();
    assert_eq!(
        err.message, "aibridge: \"model\" must be a non-empty string",
        "the model check comes first"
    );
}

#[test]
fn prompt_follows_the_input_rules() {
    let p = |body: &str| parse_request(body.as_bytes()).unwrap().prompt;
    assert_eq!(p(r#"{"model":"m","input":"hi"}"#).as_deref(), Some("hi"));
    assert_eq!(p(r#"{"model":"m","input":""}"#), None);
    assert_eq!(p(r#"{"model":"m","input":null}"#), None);
    assert_eq!(p(r#"{"model":"m","input":5}"#), None);
    assert_eq!(p(r#"{"model":"m"}"#), None);
    assert_eq!(
        p(r#"{"model":"m","input":[{"role":"user","content":"plain"}]}"#).as_deref(),
        Some("plain")
    );
    assert_eq!(
        p(r#"{"model":"m","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"one"},{"type":"input_image","image_url":"x"},{"type":"input_text","text":"two"}]}]}"#)
            .as_deref(),
        Some("one\ntwo")
    );
    assert_eq!(
        p(
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}"#
        ),
        None
    );
    assert_eq!(
        p(
            r#"{"model":"m","input":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#
        ),
        None,
        "only the last item counts"
    );
    assert_eq!(p(r#"{"model":"m","input":[]}"#), None);
}

#[test]
fn tool_outputs_correlate_their_call() {
    let c = |body: &str| {
        let info = parse_request(body.as_bytes()).unwrap();
        assert_eq!(info.prompt, None);
        info.correlating_tool_call_id
    };
    assert_eq!(
        c(r#"{"model":"m","input":[{"type":"function_call_output","call_id":"call_1","output":"x"}]}"#)
            .as_deref(),
        Some("call_1")
    );
    assert_eq!(
        c(r#"{"model":"m","input":[{"type":"custom_tool_call_output","call_id":"call_2","output":"x"}]}"#)
            .as_deref(),
        Some("call_2")
    );
    assert_eq!(
        c(r#"{"model":"m","input":[{"type":"function_call_output","call_id":"","output":"x"}]}"#),
        None
    );
    assert_eq!(
        c(
            r#"{"model":"m","input":[{"type":"function_call","call_id":"call_3","name":"f","arguments":"{}"}]}"#
        ),
        None
    );
}

#[test]
fn codex_and_sdk_requests_are_classified_per_the_client_logs() {
    let cases: [(&[u8], &str, bool, Option<&str>, Option<&str>); 8] = [
        (
            client_body!("codex-1"),
            "gpt-5-codex",
            true,
            Some("say hello"),
            None,
        ),
        (
            client_body!("codex-tool-1"),
            "gpt-5-codex",
            true,
            Some("say hello"),
            None,
        ),
        (
            client_body!("codex-tool-2"),
            "gpt-5-codex",
            true,
            None,
            Some("call_d5ba573900f74e1da395cbc4"),
        ),
        (
            client_body!("python-sdk-9"),
            "gpt-5",
            false,
            Some("say hello"),
            None,
        ),
        (
            client_body!("python-sdk-10"),
            "gpt-5",
            true,
            Some("say hello"),
            None,
        ),
        (
            client_body!("python-sdk-11"),
            "gpt-5",
            false,
            Some("weather?"),
            None,
        ),
        (
            client_body!("ts-sdk-8"),
            "gpt-5",
            false,
            Some("say hello"),
            None,
        ),
        (
            client_body!("ts-sdk-9"),
            "gpt-5",
            true,
            Some("say hello"),
            None,
        ),
    ];
    for (body, model, streaming, prompt, correlating) in cases {
        let adapter = crate::intercept::adapter_for(Api::Responses);
        let info = adapter.parse_request(body).unwrap();
        assert_eq!(info.model, model);
        assert_eq!(info.streaming, streaming);
        assert_eq!(info.prompt.as_deref(), prompt);
        assert_eq!(info.correlating_tool_call_id.as_deref(), correlating);
        let out = adapter.upstream_body(&info, Bytes::from_static(body));
        assert_eq!(out, body, "D1: Responses bodies pass untouched");
    }
}

#[test]
fn terminal_event_after_the_largest_sequence_number_does_not_overflow() {
    let r = run(
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\",\"sequence_number\":18446744073709551615}\n\n",
    );
    assert!(
        r.obs
            .terminal_event("m")
            .ends_with(b"\"sequence_number\":18446744073709551615}\n\n")
    );
}

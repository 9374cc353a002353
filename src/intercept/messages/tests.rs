use super::*;
use crate::sse::Decoder;

fn facts_of_stream(stream: &str) -> (Vec<Fact>, StreamStatus) {
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::copy_from_slice(stream.as_bytes()));
    let mut obs = MessagesStream::new();
    let mut facts = Vec::new();
    while let Some(frame) = dec.next_frame().unwrap() {
        obs.on_frame(&frame, &mut facts).unwrap();
    }
    obs.flush(&mut facts);
    (facts, obs.status())
}

fn usages(facts: &[Fact]) -> Vec<Usage> {
    facts
        .iter()
        .filter_map(|f| {
            if let Fact::Usage { usage, .. } = f {
                Some(usage.clone())
            } else {
                None
            }
        })
        .collect()
}

const TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"usage\":{\"input_tokens\":2,\"cache_creation_input_tokens\":22,\"cache_read_input_tokens\":13993,\"output_tokens\":5}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Reading\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"Read\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"file_path\\\": \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"/tmp/a\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":61}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn tool_stream_yields_one_usage_with_final_counts_and_the_tool_input() {
    let (facts, status) = facts_of_stream(TOOL_STREAM);
    assert_eq!(status, StreamStatus::Completed);
    assert_eq!(facts.first(), Some(&Fact::ResponseId("msg_1".into())));
    let u = usages(&facts);
    assert_eq!(u.len(), 1, "D9: exactly one usage per message");
    assert_eq!(
        (u[0].input, u[0].output, u[0].cache_read, u[0].cache_write),
        (2, 61, 13993, 22)
    );
    let tools: Vec<_> = facts
        .iter()
        .filter(|f| matches!(f, Fact::Tool { .. }))
        .collect();
    assert_eq!(
        tools,
        vec![&Fact::Tool {
            response_id: Some("msg_1".into()),
            name: "Read".into(),
            call_id: "toolu_1".into(),
            input: "{\"file_path\": \"/tmp/a\"}".into(),
            provider_executed: false,
        }]
    );
}

#[test]
fn broken_stream_records_usage_so_far_and_open_tool_with_empty_input() {
    let cut = TOOL_STREAM
        .find("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1")
        .unwrap();
    let after_first_delta = TOOL_STREAM[cut..].find("\n\n").unwrap() + cut + 2;
    let (facts, status) = facts_of_stream(&TOOL_STREAM[..after_first_delta]);
    assert_eq!(status, StreamStatus::Open);
    let u = usages(&facts);
    assert_eq!((u[0].input, u[0].output), (2, 5));
    assert!(
        facts
            .iter()
            .any(|f| matches!(f, Fact::Tool { input, .. } if input == "{}")),
        "{facts:?}"
    );
}

#[test]
fn error_event_sets_the_status_and_keeps_usage() {
    let s = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_e\",\"usage\":{\"input_tokens\":18,\"output_tokens\":1}}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let (facts, status) = facts_of_stream(s);
    assert_eq!(
        status,
        StreamStatus::UpstreamError("upstream stream error: api_error: Overloaded".into())
    );
    let u = usages(&facts);
    assert_eq!((u.len(), u[0].input, u[0].output), (1, 18, 1));
}

#[test]
fn message_delta_overrides_start_values_and_collects_extras() {
    let s = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1,\"cache_creation\":{\"ephemeral_5m_input_tokens\":3,\"ephemeral_1h_input_tokens\":0}}}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":9,\"output_tokens\":40,\"server_tool_use\":{\"web_search_requests\":2,\"note\":\"x\"}}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (facts, _) = facts_of_stream(s);
    let u = &usages(&facts)[0];
    assert_eq!(
        (u.input, u.output, u.cache_read, u.cache_write),
        (7, 40, 9, 0)
    );
    assert_eq!(u.extra.get("cache_ephemeral_5m_input"), Some(&3));
    assert_eq!(u.extra.get("cache_ephemeral_1h_input"), Some(&0));
    assert_eq!(u.extra.get("web_search_requests"), Some(&2));
    assert_eq!(u.extra.len(), 3, "non-integer fields are ignored");
}

#[test]
fn thinking_blocks_become_thoughts_unless_empty() {
    let s = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"think.\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (facts, _) = facts_of_stream(s);
    let thoughts: Vec<_> = facts
        .iter()
        .filter_map(|f| {
            if let Fact::Thought { content, .. } = f {
                Some(content.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(thoughts, vec!["Let me think."]);
}

#[test]
fn invalid_json_in_a_needed_event_is_an_error() {
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::from_static(
        b"event: message_start\ndata: {\"type\":\n\n",
    ));
    let frame = dec.next_frame().unwrap().unwrap();
    let mut obs = MessagesStream::new();
    assert!(
        obs.on_frame(&frame, &mut Vec::new())
            .unwrap_err()
            .starts_with("message_start: ")
    );
    // Unknown events are never parsed.
    dec.push(Bytes::from_static(
        b"event: future_thing\ndata: {not json\n\n",
    ));
    let frame = dec.next_frame().unwrap().unwrap();
    assert_eq!(
        obs.on_frame(&frame, &mut Vec::new()).unwrap(),
        FrameAction::Relay
    );
}

#[test]
fn blocking_body_yields_usage_tools_and_thoughts() {
    let body = br#"{"id":"msg_b","type":"message","content":[
        {"type":"thinking","thinking":"hmm","signature":"s"},
        {"type":"text","text":"hi"},
        {"type":"tool_use","id":"toolu_a","name":"Read","input":{"file_path":"/x"}},
        {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"rust"}}],
        "usage":{"input_tokens":5,"output_tokens":84,"cache_read_input_tokens":23490,"cache_creation_input_tokens":0,
        "cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},
        "server_tool_use":{"web_search_requests":0},"service_tier":"standard"}}"#;
    let mut facts = Vec::new();
    blocking_facts(body, &mut facts).unwrap();
    let u = usages(&facts);
    assert_eq!(
        (u[0].input, u[0].output, u[0].cache_read, u[0].cache_write),
        (5, 84, 23490, 0)
    );
    assert_eq!(
        u[0].extra,
        [
            ("cache_ephemeral_1h_input", 0),
            ("cache_ephemeral_5m_input", 0),
            ("web_search_requests", 0)
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    );
    let tools: Vec<(String, String, bool)> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::Tool {
                name,
                input,
                provider_executed,
                ..
            } => Some((name.clone(), input.clone(), *provider_executed)),
            _ => None,
        })
        .collect();
    assert_eq!(
        tools,
        vec![
            ("Read".into(), "{\"file_path\":\"/x\"}".into(), false),
            ("web_search".into(), "{\"query\":\"rust\"}".into(), true)
        ]
    );
    assert!(
        facts
            .iter()
            .any(|f| matches!(f, Fact::Thought { content, .. } if content == "hmm"))
    );
    assert!(blocking_facts(b"[]", &mut Vec::new()).is_err());
}

#[test]
fn prompt_extraction_follows_s1() {
    let p = |body: &str| parse_request(body.as_bytes()).unwrap().prompt;
    assert_eq!(
        p(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).as_deref(),
        Some("hi")
    );
    assert_eq!(
        p(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"<system-reminder>x"},{"type":"text","text":"say hello"},{"type":"text","text":"<system-reminder>y"}]},{"role":"system","content":"s"}]}"#).as_deref(),
        Some("say hello")
    );
    assert_eq!(
        p(r#"{"model":"m","messages":[{"role":"assistant","content":"x"}]}"#),
        None
    );
    assert_eq!(
        p(r#"{"model":"m","messages":[{"role":"user","content":""}]}"#),
        None
    );
    assert_eq!(p(r#"{"model":"m","messages":[]}"#), None);
    assert_eq!(p(r#"{"model":"m","messages":{}}"#), None);
    assert_eq!(p(r#"{"model":"m"}"#), None);
}

#[test]
fn tool_continuations_have_no_prompt_but_a_correlating_id() {
    let info = parse_request(
        br#"{"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_9","content":"x"}]},{"role":"system","content":"s"}],"metadata":{"user_id":"{\"session_id\":\"abc\"}"}}"#,
    )
    .unwrap();
    assert_eq!(info.prompt, None);
    assert_eq!(info.correlating_tool_call_id.as_deref(), Some("toolu_9"));
    assert_eq!(
        info.metadata_user_id.as_deref(),
        Some("{\"session_id\":\"abc\"}")
    );
}

#[test]
fn terminal_event_is_anthropic_shaped() {
    let ev = terminal_event("aibridge: upstream stream failed: idle for more than 1s");
    assert_eq!(
        ev,
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"aibridge: upstream stream failed: idle for more than 1s\"}}\n\n"
    );
}

#[test]
fn quick_index_reads_the_first_index() {
    assert_eq!(
        quick_index(b"{\"type\":\"content_block_delta\",\"index\":12,\"delta\":{}}"),
        Some(12)
    );
    assert_eq!(quick_index(b"{\"index\": 3}"), Some(3));
    assert_eq!(quick_index(b"{\"type\":\"x\"}"), None);
}

#[test]
fn relaying_text_deltas_allocates_nothing_per_event() {
    use crate::bench_support::{chunks, claude_code_stream, split_and_extract};
    let measure = |deltas: usize| {
        let stream = claude_code_stream(deltas);
        let parts = chunks(&stream, 4096);
        let info = allocation_counter::measure(|| {
            let (frames, _, bytes) = split_and_extract("messages", &parts);
            assert_eq!(bytes, stream.len());
            assert!(frames > deltas);
        });
        (info.count_total, parts.len())
    };
    let (small, small_chunks) = measure(1_000);
    let (large, large_chunks) = measure(5_000);
    let extra_events = 4_000.0;
    let extra_chunks = (large_chunks - small_chunks) as f64;
    let extra_allocs = large.saturating_sub(small) as f64;
    // Only events that straddle a chunk boundary are copied (at most one allocation per
    // chunk); an event wholly inside a chunk costs no allocation at all.
    assert!(
        extra_allocs <= extra_chunks,
        "{extra_allocs} allocations for {extra_chunks} extra chunks"
    );
    assert!(
        extra_allocs / extra_events < 0.05,
        "{} allocations per event",
        extra_allocs / extra_events
    );
}

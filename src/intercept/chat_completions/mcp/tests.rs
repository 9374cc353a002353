use super::*;
use crate::intercept::facts::StreamStatus;
use crate::intercept::observer::StreamObserver;
use crate::sse::Decoder;
use serde_json::value::RawValue;

fn tools() -> Tools {
    Tools::new(vec![InjectedTool {
        id: "bmcp_coder_list_workspaces".into(),
        name: "list_workspaces".into(),
        server: "coder".into(),
        server_url: "http://127.0.0.1:1/mcp".into(),
        description: Some("List workspaces".into()),
        input_schema: RawValue::from_string(r#"{"type":"object"}"#.into()).unwrap(),
    }])
}

fn info(include_usage: bool) -> RequestInfo {
    RequestInfo {
        model: "gpt-4.1".into(),
        streaming: true,
        client_include_usage: include_usage,
        ..RequestInfo::default()
    }
}

#[test]
fn injection_appends_tools_and_disables_parallel_calls() {
    let body = br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"read_file","parameters":{"type":"object"}}}]}"#;
    let out = request_body(body, Some(&tools()), &[]).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"read_file","parameters":{"type":"object"}}},{"type":"function","function":{"name":"bmcp_coder_list_workspaces","description":"List workspaces","parameters":{"type":"object"},"strict":false}}],"parallel_tool_calls":false}"#
    );
    let plain = br#"{"model":"m","parallel_tool_calls":true,"messages":[]}"#;
    let out = request_body(plain, Some(&tools()), &["{\"role\":\"tool\"}".into()]).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(
        v["tools"][0]["function"]["name"],
        "bmcp_coder_list_workspaces"
    );
    assert_eq!(v["messages"][0]["role"], "tool");
    assert_eq!(
        request_body(plain, None, &[]).unwrap(),
        &plain[..],
        "no tools: no edit"
    );
}

fn chunk(json: &str) -> String {
    format!("data: {json}\n\n")
}

fn run(view: &mut McpChat, stream: &str, facts: &mut Vec<Fact>) -> String {
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::copy_from_slice(stream.as_bytes()));
    let mut out = String::new();
    while let Some(frame) = dec.next_frame().unwrap() {
        match view.on_frame(&frame, facts).unwrap() {
            FrameAction::Relay => out.push_str(std::str::from_utf8(frame.raw()).unwrap()),
            FrameAction::Replace(b) => out.push_str(std::str::from_utf8(&b).unwrap()),
            FrameAction::Drop => {}
        }
    }
    out
}

#[test]
fn streaming_loop_hides_the_injected_call_and_sums_usage() {
    let it1 = [
        chunk(r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
        chunk(r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Let me check."}}]}"#),
        chunk(r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"bmcp_coder_list_workspaces","arguments":""}}]}}]}"#),
        chunk(r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"owner\":\"me\"}"}}]}}]}"#),
        chunk(r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#),
        chunk(r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":4862,"completion_tokens":45,"total_tokens":4907,"prompt_tokens_details":{"cached_tokens":0}}}"#),
        chunk("[DONE]"),
    ]
    .concat();
    let it2 = [
        chunk(r#"{"id":"c2","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
        chunk(r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"You have two."}}]}"#),
        chunk(r#"{"id":"c2","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
        chunk(r#"{"id":"c2","choices":[],"usage":{"prompt_tokens":5049,"completion_tokens":60,"total_tokens":5109,"prompt_tokens_details":{"cached_tokens":4864}}}"#),
        chunk("[DONE]"),
    ]
    .concat();
    let mut view = view(&info(true), Arc::new(tools()), 10);
    let mut facts = Vec::new();
    let first = run(&mut view, &it1, &mut facts);
    assert_eq!(view.status(), StreamStatus::ToolCalls);
    assert!(first.contains("Let me check."));
    assert!(
        !first.contains("bmcp_")
            && !first.contains("tool_calls")
            && !first.contains("[DONE]")
            && !first.contains("usage"),
        "{first}"
    );
    view.flush(&mut facts);
    let (turn, _) = view.take_turn().unwrap();
    assert_eq!(turn.calls[0].call_id, "call_1");
    assert_eq!(turn.calls[0].raw_input, r#"{"owner":"me"}"#);
    let assistant: Value = serde_json::from_str(&turn.assistant[0]).unwrap();
    assert_eq!(assistant["content"], "Let me check.");
    assert_eq!(
        assistant["tool_calls"][0]["function"]["name"],
        "bmcp_coder_list_workspaces"
    );
    view.next_iteration(2);
    let second = run(&mut view, &it2, &mut facts);
    assert_eq!(view.status(), StreamStatus::Completed);
    assert!(
        !second.contains(r#""role":"assistant""#),
        "the opening role chunk of iteration 2 is dropped"
    );
    assert!(second.contains("You have two.") && second.ends_with("data: [DONE]\n\n"));
    let usage_line = second.lines().find(|l| l.contains("\"usage\"")).unwrap();
    let v: Value = serde_json::from_str(usage_line.trim_start_matches("data: ")).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 9911);
    assert_eq!(v["usage"]["completion_tokens"], 105);
    assert_eq!(v["usage"]["total_tokens"], 10016);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 4864);
    view.flush(&mut facts);
    let usages: Vec<(u64, u64, u64)> = facts
        .iter()
        .filter_map(|f| {
            if let Fact::Usage { usage, .. } = f {
                Some((usage.input, usage.output, usage.cache_read))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        usages,
        vec![(4862, 45, 0), (185, 60, 4864)],
        "one record per completion, spec numbers"
    );
    assert!(
        !facts.iter().any(|f| matches!(f, Fact::Tool { .. })),
        "the injected call is not a client tool"
    );
}

#[test]
fn visible_client_calls_are_renumbered_around_hidden_ones() {
    let s = [
        chunk(r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_i","type":"function","function":{"name":"bmcp_coder_list_workspaces","arguments":"{}"}}]}}]}"#),
        chunk(r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":2,"id":"call_c","type":"function","function":{"name":"read_file","arguments":"{}"}}]}}]}"#),
        chunk(r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#),
        chunk("[DONE]"),
    ]
    .concat();
    let mut view = view(&info(true), Arc::new(tools()), 10);
    let mut facts = Vec::new();
    let out = run(&mut view, &s, &mut facts);
    assert_eq!(
        view.status(),
        StreamStatus::Completed,
        "mixed calls end the loop"
    );
    assert!(!out.contains("bmcp_"));
    assert!(
        out.contains(r#""index":0"#) && out.contains("call_c"),
        "{out}"
    );
    assert!(
        out.contains(r#""finish_reason":"tool_calls""#),
        "the client's call keeps tool_calls"
    );
    view.flush(&mut facts);
    assert!(facts.iter().any(|f| matches!(
        f,
        Fact::InjectedTool {
            executed: false,
            ..
        }
    )));
    assert!(
        facts
            .iter()
            .any(|f| matches!(f, Fact::Tool { name, .. } if name == "read_file"))
    );
}

#[test]
fn blocking_loop_pieces() {
    let body = br#"{"id":"c1","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"bmcp_coder_list_workspaces","arguments":"{\"owner\":\"me\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":4862,"completion_tokens":52,"total_tokens":4914}}"#;
    let t = blocking_turn(body, &tools()).unwrap();
    assert!(!t.client_tool);
    assert_eq!(t.turn.calls[0].raw_input, r#"{"owner":"me"}"#);
    let mut sum = UsageSum::default();
    sum.add(&t.usage);
    let last = Bytes::from_static(br#"{"id":"c2","choices":[{"index":0,"message":{"role":"assistant","content":"Two."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5049,"completion_tokens":70,"total_tokens":5119}}"#);
    sum.add(&blocking_turn(&last, &tools()).unwrap().usage);
    let out = final_blocking(&last, Some(&sum), &tools());
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"id":"c2","choices":[{"index":0,"message":{"role":"assistant","content":"Two."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9911,"completion_tokens":122,"total_tokens":10033}}"#
    );
    let hidden = final_blocking(&Bytes::from_static(body), None, &tools());
    let v: Value = serde_json::from_slice(&hidden).unwrap();
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let results = vec![Executed {
        call: t.turn.calls[0].clone(),
        outcome: crate::mcp::ToolOutcome::failed("boom"),
    }];
    let turns = tool_results_turns(&results, 1024, None);
    let m: Value = serde_json::from_str(&turns[0]).unwrap();
    assert_eq!(m["role"], "tool");
    assert_eq!(m["tool_call_id"], "call_1");
    assert_eq!(m["content"], "aibridge: tool call failed: boom");
}

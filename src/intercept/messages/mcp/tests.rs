use super::*;
use crate::intercept::facts::StreamStatus;
use crate::intercept::observer::StreamObserver;
use crate::intercept::tool_loop::tools_for_request;
use crate::sse::Decoder;

fn tool(id: &str, name: &str, description: Option<&str>) -> InjectedTool {
    InjectedTool {
        id: id.into(),
        name: name.into(),
        server: "coder".into(),
        server_url: "http://127.0.0.1:1/mcp".into(),
        description: description.map(str::to_owned),
        input_schema: RawValue::from_string(
            r#"{"type":"object","properties":{"owner":{"type":"string"}}}"#.into(),
        )
        .unwrap(),
    }
}

fn tools() -> Tools {
    Tools::new(vec![tool(
        "bmcp_coder_list_workspaces",
        "list_workspaces",
        Some("List workspaces"),
    )])
}

#[test]
fn injection_prepends_tools_and_disables_parallel_use_deterministically() {
    let body = br#"{"model":"claude","max_tokens":5,"tools":[{"name":"Read","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}]}"#;
    let out = request_body(body, Some(&tools()), &[]).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"model":"claude","max_tokens":5,"tools":[{"name":"bmcp_coder_list_workspaces","description":"List workspaces","input_schema":{"type":"object","properties":{"owner":{"type":"string"}}}},{"name":"Read","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}],"tool_choice":{"type":"auto","disable_parallel_tool_use":true}}"#
    );
    for _ in 0..10 {
        assert_eq!(
            request_body(body, Some(&tools()), &[]).unwrap(),
            out,
            "same bytes every time"
        );
    }
}

#[test]
fn tool_choice_follows_the_table() {
    let edit = |tc: &str| {
        let body = format!(r#"{{"model":"m","messages":[],"tool_choice":{tc}}}"#);
        let out = request_body(body.as_bytes(), Some(&tools()), &[]).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        v["tool_choice"].clone()
    };
    assert_eq!(
        edit("null"),
        serde_json::json!({"type":"auto","disable_parallel_tool_use":true})
    );
    assert_eq!(
        edit(r#"{"type":"any","disable_parallel_tool_use":false}"#),
        serde_json::json!({"type":"any","disable_parallel_tool_use":true})
    );
    assert_eq!(
        edit(r#"{"type":"tool","name":"Read"}"#),
        serde_json::json!({"type":"tool","name":"Read","disable_parallel_tool_use":true})
    );
    assert_eq!(
        edit(r#"{"type":"none"}"#),
        serde_json::json!({"type":"none"})
    );
    assert_eq!(
        edit(r#"{}"#),
        serde_json::json!({"type":"auto","disable_parallel_tool_use":true})
    );
    assert_eq!(
        edit(r#""auto""#),
        serde_json::json!("auto"),
        "not an object: unchanged"
    );
    assert_eq!(
        edit(r#"{"type":"weird"}"#),
        serde_json::json!({"type":"weird"})
    );
}

#[test]
fn no_tools_means_no_edit_and_turns_are_appended() {
    let body = br#"{"model":"m","tool_choice":{"type":"auto","disable_parallel_tool_use":false},"messages":[{"role":"user","content":"hi"}]}"#;
    let out = request_body(body, None, &[r#"{"role":"assistant","content":[]}"#.into()]).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"model":"m","tool_choice":{"type":"auto","disable_parallel_tool_use":false},"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[]}]}"#
    );
}

#[test]
fn client_tools_with_an_injected_id_keep_that_tool_out() {
    let snapshot = vec![tool("bmcp_a_x", "x", None), tool("bmcp_a_y", "y", None)];
    let t = tools_for_request(br#"{"tools":[{"name":"bmcp_a_x"}]}"#, &snapshot, None);
    assert_eq!(
        t.0.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["bmcp_a_y"]
    );
}

#[test]
fn blocking_turn_and_final_body() {
    let body = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"toolu_1","name":"bmcp_coder_list_workspaces","input":{"owner":"admin"}}],"stop_reason":"tool_use","usage":{"input_tokens":7545,"output_tokens":75}}"#;
    let t = blocking_turn(body, &tools()).unwrap();
    assert!(!t.client_tool);
    assert_eq!(t.turn.calls.len(), 1);
    assert_eq!(t.turn.calls[0].raw_input, r#"{"owner":"admin"}"#);
    assert!(t.turn.assistant[0].starts_with(r#"{"role":"assistant","content":[{"type":"text""#));
    let mut sum = UsageSum::default();
    sum.add(&t.usage);
    let last = Bytes::from_static(br#"{"id":"msg_2","content":[{"type":"text","text":"Two."}],"stop_reason":"end_turn","usage":{"input_tokens":7763,"output_tokens":129}}"#);
    let t2 = blocking_turn(&last, &tools()).unwrap();
    sum.add(&t2.usage);
    let out = final_blocking(&last, Some(&sum), &tools());
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"id":"msg_2","content":[{"type":"text","text":"Two."}],"stop_reason":"end_turn","usage":{"input_tokens":15308,"output_tokens":204}}"#
    );
    // After the bound, a leftover injected call is hidden and tool_use becomes end_turn.
    let hidden = final_blocking(&Bytes::from_static(body), None, &tools());
    assert_eq!(
        std::str::from_utf8(&hidden).unwrap(),
        r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"Let me look."}],"stop_reason":"end_turn","usage":{"input_tokens":7545,"output_tokens":75}}"#
    );
}

fn ev(kind: &str, data: &str) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

/// Feeds a stream through the view, returning what the client would receive.
fn run(view: &mut McpMessages, stream: &str, facts: &mut Vec<Fact>) -> String {
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
fn streaming_view_hides_injected_calls_renumbers_and_sums_usage() {
    let it1 = [
        ev("message_start", r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":7545,"output_tokens":1}}}"#),
        ev("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I'll list the workspaces."}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ev("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"bmcp_coder_list_workspaces","input":{}}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"owner\":"}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"admin\"}"}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
        ev("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":74}}"#),
        ev("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .concat();
    let it2 = [
        ev("message_start", r#"{"type":"message_start","message":{"id":"msg_2","usage":{"input_tokens":7763,"output_tokens":1}}}"#),
        ev("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"You have two."}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ev("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":128}}"#),
        ev("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .concat();
    let mut view = view(Arc::new(tools()), 10);
    let mut facts = Vec::new();
    let first = run(&mut view, &it1, &mut facts);
    assert_eq!(view.status(), StreamStatus::ToolCalls);
    assert!(!first.contains("bmcp_"), "{first}");
    assert!(!first.contains("message_delta") && !first.contains("message_stop"));
    let (turn, _) = view.take_turn().unwrap();
    assert_eq!(turn.calls.len(), 1);
    assert_eq!(turn.calls[0].call_id, "toolu_1");
    assert_eq!(turn.calls[0].raw_input, r#"{"owner":"admin"}"#);
    let assistant: Value = serde_json::from_str(&turn.assistant[0]).unwrap();
    assert_eq!(assistant["content"][0]["text"], "I'll list the workspaces.");
    assert_eq!(
        assistant["content"][1]["input"],
        serde_json::json!({"owner":"admin"})
    );
    view.next_iteration(2);
    let second = run(&mut view, &it2, &mut facts);
    assert_eq!(view.status(), StreamStatus::Completed);
    assert!(
        !second.contains("message_start"),
        "one message_start for the client"
    );
    assert!(
        second.contains(r#""index":1"#),
        "msg 2's block 0 is the client's block 1: {second}"
    );
    assert!(!second.contains(r#""index":0"#));
    let delta = second
        .lines()
        .find(|l| l.contains("message_delta") && l.starts_with("data:"))
        .unwrap();
    let v: Value = serde_json::from_str(delta.trim_start_matches("data: ")).unwrap();
    assert_eq!(v["usage"]["output_tokens"], 202);
    assert_eq!(v["usage"]["input_tokens"], 15308);
    // Records: two usages with the per-message numbers, no client ToolUsage for the injected call.
    let usages: Vec<(u64, u64)> = facts
        .iter()
        .filter_map(|f| {
            if let Fact::Usage { usage, .. } = f {
                Some((usage.input, usage.output))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(usages, vec![(7545, 74), (7763, 128)]);
    assert!(!facts.iter().any(|f| matches!(f, Fact::Tool { .. })));
}

#[test]
fn mixed_client_and_injected_calls_end_the_loop_with_the_injected_ones_hidden() {
    let s = [
        ev("message_start", r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":5,"output_tokens":1}}}"#),
        ev("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_i","name":"bmcp_coder_list_workspaces","input":{}}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ev("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_c","name":"Read","input":{}}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
        ev("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#),
        ev("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .concat();
    let mut view = view(Arc::new(tools()), 10);
    let mut facts = Vec::new();
    let out = run(&mut view, &s, &mut facts);
    assert_eq!(view.status(), StreamStatus::Completed);
    assert!(!out.contains("bmcp_"));
    assert!(
        out.contains(r#""index":0,"content_block":{"type":"tool_use","id":"toolu_c""#),
        "client call renumbered to 0: {out}"
    );
    assert!(
        out.contains(r#""stop_reason":"tool_use""#),
        "the client's tool_use stays"
    );
    let injected: Vec<_> = facts
        .iter()
        .filter(|f| matches!(f, Fact::InjectedTool { .. }))
        .collect();
    assert_eq!(injected.len(), 1);
    assert!(
        matches!(injected[0], Fact::InjectedTool { error: Some(e), executed: false, .. } if e.starts_with("not executed"))
    );
}

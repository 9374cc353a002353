use super::*;
use crate::intercept::facts::StreamStatus;
use crate::intercept::observer::StreamObserver;
use crate::sse::Decoder;

fn tools() -> Tools {
    Tools::new(vec![InjectedTool {
        id: "bmcp_coder_list_workspaces".into(),
        name: "list_workspaces".into(),
        server: "coder".into(),
        server_url: "http://127.0.0.1:1/mcp".into(),
        description: None,
        input_schema: RawValue::from_string(r#"{"type":"object"}"#.into()).unwrap(),
    }])
}

#[test]
fn injection_and_input_rewrites() {
    let body = br#"{"model":"gpt-5","input":"say hi","tools":[{"type":"web_search"}],"parallel_tool_calls":true,"store":false}"#;
    assert!(injectable(body));
    let out = request_body(body, Some(&tools()), &[]).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"model":"gpt-5","input":"say hi","tools":[{"type":"web_search"},{"type":"function","name":"bmcp_coder_list_workspaces","parameters":{"type":"object"},"strict":false}],"parallel_tool_calls":false,"store":false}"#
    );
    let next = request_body(
        body,
        None,
        &[r#"{"type":"function_call_output","call_id":"c","output":"x"}"#.into()],
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&next).unwrap();
    assert_eq!(
        v["input"][0],
        serde_json::json!({"role":"user","content":"say hi"})
    );
    assert_eq!(v["input"][1]["type"], "function_call_output");
    assert_eq!(
        v["parallel_tool_calls"], true,
        "the final call restores the client's bytes"
    );
    assert!(!injectable(br#"{"model":"m","tools":{}}"#));
    assert!(!injectable(br#"{"model":"m","input":5}"#));
}

fn ev(kind: &str, data: &str) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn run(view: &mut McpResponses, stream: &str, facts: &mut Vec<Fact>) -> Vec<Value> {
    let mut dec = Decoder::new(1 << 20);
    dec.push(Bytes::copy_from_slice(stream.as_bytes()));
    let mut out = Vec::new();
    while let Some(frame) = dec.next_frame().unwrap() {
        let bytes = match view.on_frame(&frame, facts).unwrap() {
            FrameAction::Relay => frame.raw().clone(),
            FrameAction::Replace(b) => b,
            FrameAction::Drop => continue,
        };
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        out.push(serde_json::from_str(data).unwrap());
    }
    out
}

const TOOLS_ECHO: &str = r#"[{"type":"function","name":"read_file","parameters":{},"strict":false},{"type":"function","name":"bmcp_coder_list_workspaces","parameters":{"type":"object"},"strict":false}]"#;

#[test]
fn streaming_loop_is_one_coherent_response() {
    let it1 = [
        ev("response.created", &format!(r#"{{"type":"response.created","sequence_number":0,"response":{{"id":"resp_1","output":[],"tools":{TOOLS_ECHO}}}}}"#)),
        ev("response.output_item.added", r#"{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"fc_1","type":"function_call","call_id":"call_1","name":"bmcp_coder_list_workspaces","arguments":""}}"#),
        ev("response.function_call_arguments.delta", r#"{"type":"response.function_call_arguments.delta","sequence_number":2,"item_id":"fc_1","output_index":0,"delta":"{}"}"#),
        ev("response.output_item.done", r#"{"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"fc_1","type":"function_call","call_id":"call_1","name":"bmcp_coder_list_workspaces","arguments":"{\"owner\":\"me\"}"}}"#),
        ev("response.completed", &format!(r#"{{"type":"response.completed","sequence_number":4,"response":{{"id":"resp_1","output":[],"tools":{TOOLS_ECHO},"usage":{{"input_tokens":6269,"input_tokens_details":{{"cached_tokens":0}},"output_tokens":18,"total_tokens":6287}}}}}}"#)),
    ]
    .concat();
    let it2 = [
        ev("response.created", r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_2","output":[]}}"#),
        ev("response.output_item.added", r#"{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_2","type":"message","role":"assistant","content":[]}}"#),
        ev("response.output_text.delta", r#"{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_2","output_index":0,"content_index":0,"delta":"Two."}"#),
        ev("response.output_item.done", r#"{"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"msg_2","type":"message","role":"assistant","content":[{"type":"output_text","text":"Two."}]}}"#),
        ev("response.completed", &format!(r#"{{"type":"response.completed","sequence_number":4,"response":{{"id":"resp_2","output":[{{"id":"msg_2"}}],"tools":{TOOLS_ECHO},"usage":{{"input_tokens":6463,"input_tokens_details":{{"cached_tokens":6144}},"output_tokens":182,"total_tokens":6645}}}}}}"#)),
    ]
    .concat();
    let body = br#"{"model":"gpt-5","input":"hi","store":false}"#;
    let mut view = view(body, Arc::new(tools()), 10);
    let mut facts = Vec::new();
    let first = run(&mut view, &it1, &mut facts);
    assert_eq!(view.status(), StreamStatus::ToolCalls);
    assert_eq!(first.len(), 1, "only response.created: {first:?}");
    assert!(
        !first[0].to_string().contains("bmcp_"),
        "S26: echoed tools stripped"
    );
    let (turn, _) = view.take_turn().unwrap();
    assert_eq!(turn.calls[0].raw_input, r#"{"owner":"me"}"#);
    assert_eq!(
        turn.assistant.len(),
        1,
        "the function_call item is appended to input"
    );
    view.next_iteration(2);
    let second = run(&mut view, &it2, &mut facts);
    let types: Vec<&str> = second.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        vec![
            "response.output_item.added",
            "response.output_text.delta",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let seqs: Vec<u64> = second
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4],
        "continues after the relayed created (0)"
    );
    assert!(
        second
            .iter()
            .all(|e| e.get("output_index").is_none_or(|i| i == 0))
    );
    let done = second.last().unwrap();
    assert_eq!(
        done["response"]["id"], "resp_1",
        "S20 (revised): one lifecycle, the first upstream id"
    );
    assert_eq!(done["response"]["usage"]["input_tokens"], 12732);
    assert_eq!(done["response"]["usage"]["output_tokens"], 200);
    assert_eq!(
        done["response"]["usage"]["input_tokens_details"]["cached_tokens"],
        6144
    );
    assert_eq!(done["response"]["output"].as_array().unwrap().len(), 1);
    assert!(!done.to_string().contains("bmcp_"));
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
    assert_eq!(usages, vec![(6269, 18, 0), (319, 182, 6144)]);
    assert!(!facts.iter().any(|f| matches!(f, Fact::Tool { .. })));
}

#[test]
fn blocking_final_body_strips_injected_tools_and_sums_usage() {
    let last = Bytes::from(format!(
        r#"{{"id":"resp_2","output":[{{"type":"message","id":"m"}}],"tools":{TOOLS_ECHO},"usage":{{"input_tokens":6756,"output_tokens":231}}}}"#
    ));
    let mut sum = UsageSum::default();
    sum.add(
        serde_json::json!({"input_tokens": 6371, "output_tokens": 75})
            .as_object()
            .unwrap(),
    );
    sum.add(
        serde_json::json!({"input_tokens": 6756, "output_tokens": 231})
            .as_object()
            .unwrap(),
    );
    let out = final_blocking(&last, Some(&sum), &tools());
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], "resp_2", "final_blocking keeps the id");
    let shown: Value = serde_json::from_slice(&present_id(&out, "resp_1").unwrap()).unwrap();
    assert_eq!(shown["id"], "resp_1", "S20: the first upstream id is shown");
    assert_eq!(shown["usage"], v["usage"]);
    assert!(present_id(&out, "resp_2").is_none(), "same id: no edit");
    assert_eq!(v["usage"]["input_tokens"], 13127);
    assert_eq!(v["usage"]["output_tokens"], 306);
    assert_eq!(v["tools"].as_array().unwrap().len(), 1);
    assert!(!String::from_utf8_lossy(&out).contains("bmcp_"));
    let t = blocking_turn(
        br#"{"id":"r","output":[{"type":"reasoning","id":"rs","summary":[]},{"type":"function_call","call_id":"c1","name":"bmcp_coder_list_workspaces","arguments":""}],"usage":{}}"#,
        &tools(),
        true,
    )
    .unwrap();
    assert_eq!(t.turn.calls.len(), 1);
    assert_eq!(
        t.turn.assistant.len(),
        1,
        "store:false drops reasoning without encrypted content"
    );
}

#[test]
fn renumbering_after_the_largest_sequence_number_does_not_overflow() {
    let max = u64::MAX;
    let stream = [
        // Hidden (an injected call): renumbering starts from its number.
        ev("response.output_item.added", &format!(r#"{{"type":"response.output_item.added","sequence_number":{max},"output_index":0,"item":{{"id":"fc_1","type":"function_call","call_id":"call_1","name":"bmcp_coder_list_workspaces","arguments":""}}}}"#)),
        ev("response.output_text.delta", r#"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"a"}"#),
        ev("response.output_text.delta", r#"{"type":"response.output_text.delta","sequence_number":6,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"b"}"#),
    ]
    .concat();
    let body = br#"{"model":"gpt-5","input":"hi"}"#;
    let mut view = view(body, Arc::new(tools()), 10);
    let relayed = run(&mut view, &stream, &mut Vec::new());
    let seqs: Vec<u64> = relayed
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [max, max]);
}

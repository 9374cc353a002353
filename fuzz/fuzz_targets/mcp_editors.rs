//! The request editors (the Chat usage edit, each API's MCP `request_body`) and the MCP
//! blocking final body on arbitrary bytes: no panic, and valid JSON stays valid JSON.
#![no_main]

use aibridge::__bench::{is_json, mcp_final_blocking, mcp_request_body, upstream_body};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let api = ["messages", "chat_completions", "responses"][usize::from(k % 3)];
    let with_tools = k & 4 != 0;
    let turns: Vec<String> = match (k >> 3) & 3 {
        0 => vec![],
        1 => vec![r#"{"role":"user","content":"x"}"#.to_owned()],
        2 => vec![r#"{"type":"function_call_output","call_id":"c","output":"ok"}"#.to_owned()],
        _ => vec!["1".to_owned(), r#""s""#.to_owned()],
    };
    let valid = is_json(body);
    let bytes = Bytes::copy_from_slice(body);
    let edited = upstream_body(api, true, k & 32 != 0, bytes.clone());
    if valid {
        assert!(is_json(&edited), "the usage edit broke the JSON");
    }
    if let Some(out) = mcp_request_body(api, body, with_tools, &turns) {
        if valid {
            assert!(is_json(&out), "request_body broke the JSON");
        }
    }
    let sum = serde_json::json!({"input_tokens": 3, "output_tokens": 5, "prompt_tokens": 7,
        "completion_tokens": 1, "total_tokens": 8, "cache_read_input_tokens": 2});
    let sum = (k & 64 != 0).then(|| sum.as_object().cloned()).flatten();
    let out = mcp_final_blocking(api, &bytes, sum.as_ref());
    if valid {
        assert!(is_json(&out), "the final blocking body broke the JSON");
    }
});

//! The request checks and the blocking-body extractors of each API on arbitrary bytes: no
//! panic; an accepted body is a UTF-8 JSON object whose `model` is the accepted model;
//! recorded tool inputs are valid JSON.
#![no_main]

use aibridge::__bench::{blocking_facts, check_request, is_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let api = ["messages", "chat_completions", "responses"][usize::from(k % 3)];
    if let Some((model, _streaming)) = check_request(api, body) {
        assert!(!model.is_empty());
        assert!(is_json(body), "an accepted body is not JSON");
        assert_eq!(body.trim_ascii_start().first(), Some(&b'{'));
    }
    let (facts, inputs_json) = blocking_facts(api, body);
    assert!(inputs_json, "a tool input is not JSON: {facts:?}");
});

//! The relay path (SSE decoder + each API's stream parser, plain or the MCP tool loop's
//! view) on arbitrary streams: no panic, the same run however the input is chunked, a
//! prefix of the input relayed (plain parsers), whole events relayed (MCP views), and
//! recorded tool inputs that are valid JSON.
#![no_main]

use aibridge::__bench::{chunks, decode, relay_run};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, size, input @ ..] = data else {
        return;
    };
    let api = ["messages", "chat_completions", "responses"][usize::from(flags % 3)];
    let mcp = flags & 4 != 0;
    let streaming = flags & 8 != 0;
    let client_usage = flags & 16 != 0;
    let input = Bytes::copy_from_slice(input);
    let whole = relay_run(
        api,
        mcp,
        streaming,
        client_usage,
        std::slice::from_ref(&input),
    );
    let split = chunks(&input, usize::from(*size) + 1);
    let chunked = relay_run(api, mcp, streaming, client_usage, &split);
    assert_eq!(whole, chunked, "chunking changed the run");
    assert!(
        whole.tool_inputs_are_json,
        "a tool input is not JSON: {:?}",
        whole.facts
    );
    let withholds = api == "chat_completions" && streaming && !client_usage;
    if !mcp && !withholds {
        assert!(
            input.starts_with(&whole.out),
            "relayed bytes are not a prefix of the input"
        );
        if whole.error.is_none() {
            assert_eq!(whole.out.len() + whole.tail.len(), input.len());
        }
    }
    if mcp {
        let (_, tail, error) = decode(&[Bytes::from(whole.out)], usize::MAX);
        assert_eq!(
            (tail, error),
            (None, None),
            "the MCP view relayed half an event"
        );
    }
});

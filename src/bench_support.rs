//! Entry points for the criterion benchmarks and allocation tests (feature
//! `bench-internals`; not a public API).

use bytes::Bytes;

use crate::intercept::bench_observer;
use crate::sse::Decoder;

/// A long Claude Code-style Messages stream with about `deltas` text deltas: an (empty,
/// display-omitted) thinking block, a text block, a `Read` tool call with its input split
/// over several deltas, pings, the usage `message_delta` and `message_stop`.
pub fn claude_code_stream(deltas: usize) -> Bytes {
    let mut s = String::with_capacity(deltas * 160 + 2048);
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01BenchStream\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":2,\"cache_creation_input_tokens\":22,\"cache_read_input_tokens\":13993,\"cache_creation\":{\"ephemeral_5m_input_tokens\":22,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":5,\"service_tier\":\"standard\"}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n");
    s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCkYIBxgCKkBbench\"}}\n\n");
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..deltas {
        if i % 50 == 0 {
            s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
        }
        s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"I'll read the file to understand the structure \"}}\n\n");
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    );
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01Bench\",\"name\":\"Read\",\"input\":{}}}\n\n");
    for part in [
        "{\\\"file_path\\\": ",
        "\\\"/home/dev/project/",
        "src/main.rs\\\"}",
    ] {
        s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"");
        s.push_str(part);
        s.push_str("\"}}\n\n");
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    );
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":61}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    Bytes::from(s)
}

/// Splits a stream into chunks of `size` bytes (zero-copy slices), as a network read would.
pub fn chunks(stream: &Bytes, size: usize) -> Vec<Bytes> {
    (0..stream.len())
        .step_by(size.max(1))
        .map(|i| stream.slice(i..(i + size).min(stream.len())))
        .collect()
}

/// The streaming hot path without I/O: SSE framing plus record extraction for `api`
/// (`"messages"`, `"chat_completions"` or `"responses"`). Returns (frames relayed,
/// facts extracted, relayed bytes).
pub fn split_and_extract(api: &str, chunks: &[Bytes]) -> (usize, usize, usize) {
    let mut decoder = Decoder::new(16 * 1024 * 1024);
    let mut obs = bench_observer(api);
    let mut facts = Vec::new();
    let (mut frames, mut nfacts, mut bytes) = (0, 0, 0);
    for chunk in chunks {
        decoder.push(chunk.clone());
        while let Ok(Some(frame)) = decoder.next_frame() {
            let _ = obs.on_frame(&frame, &mut facts);
            nfacts += facts.len();
            facts.clear();
            frames += 1;
            bytes += frame.into_raw().len();
        }
    }
    obs.flush(&mut facts);
    (frames, nfacts + facts.len(), bytes)
}

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

/// A long Chat Completions stream: `deltas` content chunks, a tool call, the finish chunk,
/// the usage-only chunk and `[DONE]`.
pub fn chat_stream(deltas: usize) -> Bytes {
    let mut s = String::with_capacity(deltas * 200 + 1024);
    s.push_str("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    for _ in 0..deltas {
        s.push_str("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"I'll read the file to understand \"},\"finish_reason\":null}]}\n\n");
    }
    s.push_str("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\"}}]},\"finish_reason\":null}]}\n\n");
    s.push_str("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n");
    s.push_str("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":60,\"completion_tokens\":15,\"total_tokens\":75}}\n\n");
    s.push_str("data: [DONE]\n\n");
    Bytes::from(s)
}

/// A long Responses stream: created, one message item with `deltas` text deltas, a
/// function call item, `response.completed` with usage.
pub fn responses_stream(deltas: usize) -> Bytes {
    let mut s = String::with_capacity(deltas * 200 + 2048);
    let mut seq = 0u64;
    let mut ev = |s: &mut String, kind: &str, body: &str| {
        s.push_str(&format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",{body},\"sequence_number\":{seq}}}\n\n"
        ));
        seq += 1;
    };
    ev(
        &mut s,
        "response.created",
        "\"response\":{\"id\":\"resp_bench\",\"status\":\"in_progress\",\"output\":[]}",
    );
    ev(
        &mut s,
        "response.output_item.added",
        "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}",
    );
    for _ in 0..deltas {
        ev(
            &mut s,
            "response.output_text.delta",
            "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"I'll read the file to understand \"",
        );
    }
    ev(
        &mut s,
        "response.output_item.done",
        "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"…\"}]}",
    );
    ev(
        &mut s,
        "response.output_item.done",
        "\"output_index\":1,\"item\":{\"id\":\"fc_1\",\"type\":\"function_call\",\"call_id\":\"call_1\",\"name\":\"exec_command\",\"arguments\":\"{\\\"cmd\\\":\\\"echo hi\\\"}\"}",
    );
    ev(
        &mut s,
        "response.completed",
        "\"response\":{\"id\":\"resp_bench\",\"status\":\"completed\",\"usage\":{\"input_tokens\":4006,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":13,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":4019}}",
    );
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

/// Writes `n` interceptions through `recorder` as the gateway's record traffic does: for
/// each, the interception (awaited first), then its token usage, prompt and end, with up to
/// `concurrency` interceptions in flight. Returns the number of records that failed.
pub async fn record_interceptions(
    recorder: &dyn crate::recorder::Recorder,
    n: usize,
    concurrency: usize,
) -> usize {
    use futures::StreamExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use crate::provider::{Api, CredentialKind, ProviderKind};
    use crate::recorder::{
        Interception, InterceptionEnded, Outcome, PromptUsage, RecordId, TokenUsage,
    };

    let failed = AtomicUsize::new(0);
    let count = |r: Result<(), crate::BoxError>| {
        if r.is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    };
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency.max(1), |_| async {
            let id = RecordId::new();
            let now = SystemTime::now();
            count(
                recorder
                    .record_interception(&Interception {
                        id,
                        initiator_id: "bench".to_owned(),
                        metadata: Default::default(),
                        provider: ProviderKind::Anthropic,
                        provider_name: "anthropic".to_owned(),
                        api: Api::Messages,
                        model: "claude-sonnet-4-5".to_owned(),
                        streaming: true,
                        client: "Claude Code".to_owned(),
                        client_session_id: Some("session-1".to_owned()),
                        user_agent: Some("claude-cli/2.0 (external, cli)".to_owned()),
                        credential_kind: CredentialKind::Centralized,
                        credential_hint: Some("sk-ant-…abcd".to_owned()),
                        correlating_tool_call_id: None,
                        started_at: now,
                    })
                    .await,
            );
            let usage = TokenUsage {
                id: RecordId::new(),
                interception_id: id,
                provider_response_id: Some("msg_01".to_owned()),
                input_tokens: 12,
                output_tokens: 200,
                cache_read_input_tokens: 0,
                cache_write_input_tokens: 0,
                extra: Default::default(),
                created_at: now,
            };
            let prompt = PromptUsage {
                id: RecordId::new(),
                interception_id: id,
                provider_response_id: Some("msg_01".to_owned()),
                prompt: "Say hello in one short sentence, please.".to_owned(),
                created_at: now,
            };
            let (a, b) = futures::join!(
                recorder.record_token_usage(&usage),
                recorder.record_prompt_usage(&prompt)
            );
            count(a);
            count(b);
            count(
                recorder
                    .record_interception_ended(&InterceptionEnded {
                        id,
                        ended_at: SystemTime::now(),
                        outcome: Outcome::Completed,
                        error: None,
                    })
                    .await,
            );
        })
        .await;
    failed.into_inner()
}

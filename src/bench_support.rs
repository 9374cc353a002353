//! Entry points for the criterion benchmarks and allocation tests (feature
//! `bench-internals`; not a public API).

use bytes::Bytes;

use crate::intercept::RequestInfo;
use crate::intercept::harness;
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
    let mut obs = harness::adapter_named(api).observer(&RequestInfo::default());
    harness::count(obs.as_mut(), chunks)
}

// --- entry points for the fuzz targets (`fuzz/`) ---

/// What the relay path did with a stream: see [`relay_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRun {
    /// The bytes the client would have received (before any terminal error event).
    pub out: Vec<u8>,
    /// The extracted facts, as `Debug` text.
    pub facts: Vec<String>,
    /// Why the relay stopped early, if it did.
    pub error: Option<String>,
    /// How the stream stood at the end, as `Debug` text.
    pub status: String,
    /// The incomplete last event (never relayed).
    pub tail: Vec<u8>,
    /// Every recorded tool input was valid JSON.
    pub tool_inputs_are_json: bool,
}

/// Runs `chunks` through the SSE decoder and the stream parser of `api` (`messages`,
/// `chat_completions`, `responses`) as the relay loop does. `mcp` selects the tool loop's
/// view (two injected tools; needs the `mcp` feature, else ignored); `streaming` and
/// `client_usage` describe the request (Chat withholds the usage chunk it asked for).
pub fn relay_run(
    api: &str,
    mcp: bool,
    streaming: bool,
    client_usage: bool,
    chunks: &[Bytes],
) -> RelayRun {
    let adapter = harness::adapter_named(api);
    let info = RequestInfo {
        streaming,
        client_include_usage: client_usage,
        ..RequestInfo::default()
    };
    let _ = mcp;
    #[cfg(feature = "mcp")]
    let mut obs = if mcp {
        harness::mcp_view(adapter, &info, br#"{"model":"m","stream":true,"input":[]}"#)
    } else {
        adapter.observer(&info)
    };
    #[cfg(not(feature = "mcp"))]
    let mut obs = adapter.observer(&info);
    let run = harness::drive(obs.as_mut(), chunks);
    RelayRun {
        tool_inputs_are_json: harness::tool_inputs_are_json(&run.facts),
        facts: run.facts.iter().map(|f| format!("{f:?}")).collect(),
        out: run.out,
        error: run.error,
        status: format!("{:?}", run.status),
        tail: run.tail,
    }
}

/// The SSE decoder alone: the frames' raw bytes, the remainder at EOF and the error that
/// stopped decoding, for events of at most `max_event_size` bytes.
pub fn decode(
    chunks: &[Bytes],
    max_event_size: usize,
) -> (Vec<Bytes>, Option<Bytes>, Option<String>) {
    let mut decoder = Decoder::new(max_event_size);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk.clone());
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => frames.push(f.into_raw()),
                Ok(None) => break,
                Err(e) => return (frames, None, Some(e.to_string())),
            }
        }
    }
    let tail = decoder.finish();
    loop {
        match decoder.next_frame() {
            Ok(Some(f)) => frames.push(f.into_raw()),
            Ok(None) => break,
            Err(e) => return (frames, tail, Some(e.to_string())),
        }
    }
    (frames, tail, None)
}

/// Whether `b` is UTF-8 and one JSON value, without a depth limit (what the bridge forwards
/// may be nested deeply): the check the fuzz targets make of edited and accepted bodies.
pub fn is_json(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok()
        && serde_json::from_slice::<Box<serde_json::value::RawValue>>(b).is_ok()
}

/// The request checks of an API: `Some((model, streaming))` if the body is accepted.
pub fn check_request(api: &str, body: &[u8]) -> Option<(String, bool)> {
    harness::adapter_named(api)
        .parse_request(body)
        .ok()
        .map(|i| (i.model, i.streaming))
}

/// The facts of a blocking response body (as `Debug` text) and whether every recorded tool
/// input is valid JSON.
pub fn blocking_facts(api: &str, body: &[u8]) -> (Vec<String>, bool) {
    let (facts, _) = harness::blocking_facts(harness::adapter_named(api), body);
    let json = harness::tool_inputs_are_json(&facts);
    (facts.iter().map(|f| format!("{f:?}")).collect(), json)
}

/// The body sent upstream without tool injection (Chat streams get the usage request).
pub fn upstream_body(api: &str, streaming: bool, client_usage: bool, body: Bytes) -> Bytes {
    let info = RequestInfo {
        streaming,
        client_include_usage: client_usage,
        ..RequestInfo::default()
    };
    harness::adapter_named(api).upstream_body(&info, body)
}

/// The MCP loop's upstream body of one iteration, with two injected tools (or none, as in
/// the last call after the loop bound) and the given turns (JSON texts) appended.
#[cfg(feature = "mcp")]
pub fn mcp_request_body(
    api: &str,
    body: &[u8],
    with_tools: bool,
    turns: &[String],
) -> Option<Bytes> {
    let tools = harness::tools();
    harness::adapter_named(api).request_body(body, with_tools.then_some(&*tools), turns)
}

/// The body a blocking MCP loop hands the client, usage summed with `sum` (a JSON object
/// of counters) if given.
#[cfg(feature = "mcp")]
pub fn mcp_final_blocking(
    api: &str,
    body: &Bytes,
    sum: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Bytes {
    harness::mcp_final_blocking(harness::adapter_named(api), body, sum, &harness::tools())
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

    use crate::recorder::{InterceptionEnded, Outcome, PromptUsage, RecordId, TokenUsage};

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
                    .record_interception(&bench_interception(id, now))
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
                cost_usd: None,
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

/// What [`record_through_queue`] measured.
#[derive(Debug, Clone)]
pub struct QueueRun {
    /// Records the queue wrote (interceptions, children and ends).
    pub written: u64,
    /// Records that failed or were dropped.
    pub lost: u64,
    /// From the first record to the queue drained.
    pub elapsed: std::time::Duration,
    /// The latency of each awaited `record_interception` (empty with `queued`).
    pub awaited: Vec<std::time::Duration>,
}

/// Drives `n` interceptions through the bridge's record queue into `recorder`, at most
/// `concurrency` starting at once, as the gateway does: the interception record (awaited
/// before the upstream call, or with `queued` queued ahead of its children), then its token
/// usage, prompt and tool usage, then its end (5 records each). Waits until the queue has
/// drained.
pub async fn record_through_queue(
    recorder: std::sync::Arc<dyn crate::recorder::Recorder>,
    n: usize,
    concurrency: usize,
    queued: bool,
) -> QueueRun {
    use futures::StreamExt as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Instant, SystemTime};

    use crate::recorder::queue::RecordQueue;
    use crate::recorder::{
        Delivery, InterceptionEnded, InterceptionRecord, Outcome, PromptUsage, Record, RecordId,
        RecordQueueConfig, TokenUsage, ToolUsage,
    };

    let how = if queued {
        InterceptionRecord::Queued
    } else {
        InterceptionRecord::Awaited
    };
    let config = RecordQueueConfig::default()
        .with_capacity(n * 5 + 16)
        .with_interception(how);
    let queue = RecordQueue::start_with(recorder, config, Default::default());
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let c = counts.clone();
    queue.set_hook(Arc::new(move |_, outcome| {
        let i = usize::from(outcome != Delivery::Written);
        c[i].fetch_add(1, Ordering::Relaxed);
    }));
    let started = Instant::now();
    let awaited = std::sync::Mutex::new(Vec::with_capacity(if queued { 0 } else { n }));
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency.max(1), |_| async {
            let id = RecordId::new();
            let now = SystemTime::now();
            let rec = bench_interception(id, now);
            let sink = if queued {
                match queue.record_interception_ahead(rec) {
                    Ok(sink) => sink,
                    Err(_) => return,
                }
            } else {
                let t = Instant::now();
                let r = queue.record_interception(rec).await;
                awaited
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t.elapsed());
                if r.is_err() {
                    return;
                }
                queue.sink(id)
            };
            let response = Some("msg_01".to_owned());
            sink.push(Record::TokenUsage(TokenUsage {
                id: RecordId::new(),
                interception_id: id,
                provider_response_id: response.clone(),
                input_tokens: 12,
                output_tokens: 200,
                cache_read_input_tokens: 0,
                cache_write_input_tokens: 0,
                extra: Default::default(),
                cost_usd: Some(0.0031),
                created_at: now,
            }))
            .await;
            sink.push(Record::PromptUsage(PromptUsage {
                id: RecordId::new(),
                interception_id: id,
                provider_response_id: response.clone(),
                prompt: "Say hello in one short sentence, please.".to_owned(),
                created_at: now,
            }))
            .await;
            sink.push(Record::ToolUsage(ToolUsage {
                id: RecordId::new(),
                interception_id: id,
                provider_response_id: response,
                tool: "Read".to_owned(),
                tool_call_id: "toolu_01".to_owned(),
                server_url: None,
                input: r#"{"file_path":"/src/main.rs"}"#.to_owned(),
                injected: false,
                provider_executed: false,
                invocation_error: None,
                created_at: now,
            }))
            .await;
            sink.end(InterceptionEnded {
                id,
                ended_at: SystemTime::now(),
                outcome: Outcome::Completed,
                error: None,
            })
            .await;
        })
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    queue.drain(deadline).await;
    let elapsed = started.elapsed();
    QueueRun {
        written: counts[0].load(Ordering::Relaxed),
        lost: counts[1].load(Ordering::Relaxed),
        elapsed,
        awaited: awaited.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

/// The interception the recorder benchmarks write: a Claude Code Messages stream.
fn bench_interception(
    id: crate::recorder::RecordId,
    now: std::time::SystemTime,
) -> crate::recorder::Interception {
    use crate::provider::{Api, CredentialKind, ProviderKind};
    crate::recorder::Interception {
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
    }
}

//! The interception task: upstream calls with retries and the circuit breaker, relayed as
//! a blocking body or as a stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tokio::sync::{mpsc, oneshot, watch};

use super::emit::Emitter;
use super::facts::{FrameAction, StreamStatus};
use super::{StreamObserver, blocking_facts};
use crate::BoxError;
use crate::body::Body;
use crate::breaker::{Admitted, Key, Report};
use crate::error::{BridgeError, Flavor, set_interception_header};
use crate::pipeline::Shared;
use crate::provider::{Api, CredentialKind, Provider};
use crate::recorder::{Outcome, RecordId};
use crate::sse::{Decoder, Frame};
use crate::upstream::{connect_error_kind, relayed_response_headers};

/// Largest SSE event the bridge accepts (resilience.md "Limits").
pub(crate) const MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;
/// Largest blocking upstream body.
pub(crate) const MAX_BLOCKING_BODY: usize = 64 * 1024 * 1024;
/// Frames buffered between the interception task and the client body.
const CHANNEL_CAPACITY: usize = 16;

/// Everything the interception task needs.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) api: Api,
    pub(crate) flavor: Flavor,
    pub(crate) id: RecordId,
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The stream parser (used when the upstream answers with an event stream).
    pub(crate) observer: Box<dyn StreamObserver>,
    pub(crate) sink: Emitter,
    pub(crate) start: Instant,
    /// The breaker key (provider, endpoint, model).
    pub(crate) breaker_key: Key,
    pub(crate) credential_kind: CredentialKind,
    /// Time spent waiting on anything external (upstream, client, back-off).
    pub(crate) waited: Duration,
    /// The final call counted as a breaker failure.
    breaker_failure: bool,
    /// The MCP tool loop, when tools were injected.
    #[cfg(feature = "mcp")]
    pub(crate) tool_loop: Option<super::tool_loop::LoopState>,
    /// Keep-alives to the streaming client while a tool loop runs tools and waits for the
    /// next iteration's first relayed bytes.
    #[cfg(feature = "mcp")]
    keep_alive: Option<KeepAlive>,
}

impl Ctx {
    #[expect(
        clippy::too_many_arguments,
        reason = "plain constructor of the task's state"
    )]
    pub(crate) fn new(
        shared: Arc<Shared>,
        provider: Arc<dyn Provider>,
        api: Api,
        id: RecordId,
        url: String,
        headers: HeaderMap,
        body: Bytes,
        observer: Box<dyn StreamObserver>,
        sink: Emitter,
        start: Instant,
        breaker_key: Key,
        credential_kind: CredentialKind,
    ) -> Self {
        let flavor = Flavor::from(provider.kind());
        Self {
            shared,
            provider,
            api,
            flavor,
            id,
            url,
            headers,
            body,
            observer,
            sink,
            start,
            breaker_key,
            credential_kind,
            waited: Duration::ZERO,
            breaker_failure: false,
            #[cfg(feature = "mcp")]
            tool_loop: None,
            #[cfg(feature = "mcp")]
            keep_alive: None,
        }
    }
}

#[cfg(feature = "mcp")]
impl Ctx {
    /// Runs the interception as a tool loop.
    pub(crate) fn with_tool_loop(mut self, lp: Option<super::tool_loop::LoopState>) -> Self {
        self.tool_loop = lp;
        self
    }
}

/// Sends a keep-alive to the streaming client every `every` until dropped (D11: while
/// tools run and until the next iteration relays something).
#[cfg(feature = "mcp")]
struct KeepAlive(tokio::task::JoinHandle<()>);

#[cfg(feature = "mcp")]
impl KeepAlive {
    fn start(tx: mpsc::Sender<Bytes>, bytes: Bytes, every: Duration) -> Self {
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if tx.send(bytes.clone()).await.is_err() {
                    return;
                }
            }
        }))
    }
}

#[cfg(feature = "mcp")]
impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The response head, until it is sent to the service future.
struct Head {
    tx: Option<oneshot::Sender<Response<Body>>>,
    /// The streamed body's channel, once there is one (weak: it must not keep the body
    /// open).
    body: Option<mpsc::WeakSender<Bytes>>,
}

impl Head {
    fn new(tx: oneshot::Sender<Response<Body>>) -> Self {
        Self {
            tx: Some(tx),
            body: None,
        }
    }

    /// Resolves when the client is gone: the service future was dropped before the head
    /// was sent, or afterwards the streamed body (never for a sent blocking head).
    async fn closed(&mut self) {
        match self.tx.as_mut() {
            Some(tx) => tx.closed().await,
            None => match self.body.as_ref().and_then(mpsc::WeakSender::upgrade) {
                Some(body) => body.closed().await,
                None => std::future::pending().await,
            },
        }
    }

    /// From now on the client's body is fed through `body`.
    fn streams_to(&mut self, body: &mpsc::Sender<Bytes>) {
        self.body = Some(body.downgrade());
    }

    /// Sends the head; false if the client is gone.
    fn send(&mut self, resp: Response<Body>) -> bool {
        self.tx.take().is_some_and(|tx| tx.send(resp).is_ok())
    }

    fn is_sent(&self) -> bool {
        self.tx.is_none()
    }
}

/// Resolves when the bridge cancels in-flight work (shutdown deadline).
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How an exchange ended.
type End = (Outcome, Option<String>);

fn failed(msg: impl Into<String>) -> End {
    (Outcome::Failed, Some(msg.into()))
}

fn client_gone() -> End {
    (Outcome::Cancelled, Some("client disconnected".to_owned()))
}

fn shutting_down() -> End {
    (Outcome::Cancelled, Some("bridge shutting down".to_owned()))
}

/// Runs one interception to its end and records the end. Returns the outcome and the time
/// spent waiting on external parties.
pub(crate) async fn drive(
    mut ctx: Ctx,
    head_tx: oneshot::Sender<Response<Body>>,
) -> (Outcome, Duration) {
    let mut head = Head::new(head_tx);
    let mut cancel = ctx.shared.cancel.subscribe();
    let (outcome, error) = match admit(&mut ctx, &mut head) {
        Err(end) => end,
        Ok(admitted) => {
            let end = exchange(&mut ctx, &mut head, &mut cancel).await;
            if let Some(admitted) = admitted
                && end.0 != Outcome::Cancelled
            {
                let report = if ctx.breaker_failure {
                    Report::Failure
                } else {
                    Report::Success
                };
                admitted.report(report, ctx.shared.metrics.as_ref());
            }
            end
        }
    };
    match outcome {
        Outcome::Completed => {
            tracing::debug!(elapsed = ?ctx.start.elapsed(), "interception completed");
        }
        Outcome::Failed => tracing::warn!(
            error = error.as_deref().unwrap_or(""),
            "interception failed"
        ),
        Outcome::Cancelled => tracing::info!(
            error = error.as_deref().unwrap_or(""),
            "interception cancelled"
        ),
    }
    ctx.sink.end(outcome, error).await;
    (outcome, ctx.waited)
}

/// Circuit breaker admission (lifecycle step 12).
fn admit(ctx: &mut Ctx, head: &mut Head) -> Result<Option<Admitted>, End> {
    let Some(config) = ctx.provider.circuit_breaker() else {
        return Ok(None);
    };
    match ctx
        .shared
        .breakers
        .admit(ctx.breaker_key.clone(), config, ctx.shared.metrics.as_ref())
    {
        Ok(a) => Ok(Some(a)),
        Err(secs) => {
            head.send(BridgeError::circuit_open(secs).into_response(ctx.flavor, Some(ctx.id)));
            Err(failed("circuit breaker is open"))
        }
    }
}

/// The first complete frame of a stream, read before the head is sent (so an overload
/// error arriving first can still be retried), or why there is none.
struct Primed {
    decoder: Decoder,
    first: Option<Frame>,
    stop: Option<Stop>,
}

/// What an upstream call (after its retries) produced.
enum Call {
    /// An answer to relay.
    Answer(reqwest::Response, Option<Box<Primed>>),
    /// The client has been answered or is gone.
    Done(End),
}

/// Error kinds an upstream uses for overload and rate limits (D14, D15).
const OVERLOAD_KINDS: [&str; 3] = [
    "overloaded_error",
    "rate_limit_error",
    "rate_limit_exceeded",
];
const RATE_LIMIT_KINDS: [&str; 2] = ["rate_limit_error", "rate_limit_exceeded"];

/// The in-band error kind of a frame (`error.type`, `error.code`, `code` or `type`), if it
/// is an overload or rate-limit error.
fn overload_kind(frame: &Frame) -> Option<&'static str> {
    let data = frame.data()?;
    #[derive(serde::Deserialize)]
    struct Ev {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
        error: Option<Inner2>,
    }
    #[derive(serde::Deserialize)]
    struct Inner2 {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
    }
    memchr::memmem::find(&data, b"error")?;
    let ev: Ev = serde_json::from_slice(&data).ok()?;
    let mut candidates = vec![ev.kind];
    candidates.push(ev.code.and_then(|c| c.as_str().map(str::to_owned)));
    if let Some(e) = ev.error {
        candidates.push(e.kind);
        candidates.push(e.code.and_then(|c| c.as_str().map(str::to_owned)));
    }
    candidates
        .into_iter()
        .flatten()
        .find_map(|k| OVERLOAD_KINDS.iter().copied().find(|o| *o == k))
}

/// Whether a status counts against the breaker for this request.
fn breaker_counts_status(ctx: &Ctx, status: StatusCode) -> bool {
    let Some(cfg) = ctx.provider.circuit_breaker() else {
        return false;
    };
    if status == StatusCode::TOO_MANY_REQUESTS
        && cfg.ignore_byok_rate_limits
        && ctx.credential_kind == CredentialKind::Byok
    {
        return false;
    }
    cfg.failure_statuses.contains(&status)
}

fn breaker_counts_kind(ctx: &Ctx, kind: &str) -> bool {
    let Some(cfg) = ctx.provider.circuit_breaker() else {
        return false;
    };
    !(RATE_LIMIT_KINDS.contains(&kind)
        && cfg.ignore_byok_rate_limits
        && ctx.credential_kind == CredentialKind::Byok)
}

/// The server's retry hint (`retry-after-ms` wins over `retry-after`), if under the cap.
fn retry_hint(headers: &HeaderMap, cap: Duration) -> Option<Duration> {
    let ms = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v / 1000.0));
    let secs = || {
        let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
        if let Ok(n) = v.parse::<u64>() {
            return Some(Duration::from_secs(n));
        }
        let date = httpdate::parse_http_date(v).ok()?;
        Some(
            date.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    };
    ms.or_else(secs).filter(|d| *d < cap)
}

/// `min(initial · 2^n, max) · (1 − j)`, j uniform in [0, 0.25).
fn backoff(initial: Duration, max: Duration, n: u32) -> Duration {
    let base = initial.saturating_mul(2u32.saturating_pow(n)).min(max);
    base.mul_f64(1.0 - rand::random_range(0.0..0.25))
}

/// Whether a failed status should be retried (`x-should-retry` overrides).
fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
    match headers
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some("true") => true,
        Some("false") => false,
        _ => matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error(),
    }
}

/// One upstream call with its retries (resilience.md "Retries"). Retries happen only
/// before any byte of the call reached the client.
async fn call(ctx: &mut Ctx, head: &mut Head, cancel: &mut watch::Receiver<bool>) -> Call {
    let retry = ctx.provider.retry().clone();
    let timeouts = ctx.shared.timeouts;
    let mut attempt: u32 = 0;
    loop {
        let waiting = Instant::now();
        let send = ctx
            .shared
            .client
            .post(&ctx.url)
            .headers(ctx.headers.clone())
            .body(ctx.body.clone())
            .send();
        let sent = tokio::select! {
            () = head.closed() => return Call::Done(client_gone()),
            () = cancelled(cancel) => {
                head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                return Call::Done(shutting_down());
            }
            r = tokio::time::timeout(timeouts.response, send) => r,
        };
        ctx.waited += waiting.elapsed();
        let can_retry = attempt < retry.max_retries;
        let delay = match sent {
            Err(_) => {
                ctx.breaker_failure = true;
                let e = BridgeError::upstream_timeout(secs_ceil(timeouts.response));
                let msg = e.message.clone();
                head.send(e.into_response(ctx.flavor, Some(ctx.id)));
                return Call::Done(failed(msg));
            }
            Ok(Err(err)) => {
                let kind = connect_error_kind(&err);
                if !can_retry {
                    tracing::warn!(error = %err, kind, attempt, "upstream unreachable");
                    ctx.breaker_failure = true;
                    let e = BridgeError::upstream_unreachable(kind);
                    let msg = e.message.clone();
                    head.send(e.into_response(ctx.flavor, Some(ctx.id)));
                    return Call::Done(failed(msg));
                }
                let d = backoff(retry.initial_backoff, retry.max_backoff, attempt);
                tracing::info!(
                    attempt,
                    error_kind = kind,
                    retry_delay_ms = d.as_millis() as u64,
                    "upstream call failed; retrying"
                );
                d
            }
            Ok(Ok(mut resp)) => {
                let status = resp.status();
                if !status.is_success() {
                    if can_retry && should_retry(status, resp.headers()) {
                        let d = retry_hint(resp.headers(), retry.max_retry_after).unwrap_or_else(
                            || backoff(retry.initial_backoff, retry.max_backoff, attempt),
                        );
                        tracing::info!(
                            attempt,
                            status = status.as_u16(),
                            retry_delay_ms = d.as_millis() as u64,
                            "upstream answered an error; retrying"
                        );
                        d
                    } else {
                        ctx.breaker_failure = breaker_counts_status(ctx, status);
                        return Call::Answer(resp, None);
                    }
                } else if !is_event_stream(resp.headers()) {
                    return Call::Answer(resp, None);
                } else {
                    let primed = prime(ctx, &mut resp, head, cancel).await;
                    let overload = primed.first.as_ref().and_then(overload_kind);
                    match overload {
                        Some(kind)
                            if can_retry
                                && !matches!(
                                    primed.stop,
                                    Some(Stop::ClientGone | Stop::Shutdown)
                                ) =>
                        {
                            let d = retry_hint(resp.headers(), retry.max_retry_after)
                                .unwrap_or_else(|| {
                                    backoff(retry.initial_backoff, retry.max_backoff, attempt)
                                });
                            tracing::info!(
                                attempt,
                                error_kind = kind,
                                retry_delay_ms = d.as_millis() as u64,
                                "upstream stream began with an overload error; retrying"
                            );
                            d
                        }
                        _ => return Call::Answer(resp, Some(Box::new(primed))),
                    }
                }
            }
        };
        let waiting = Instant::now();
        tokio::select! {
            () = head.closed() => return Call::Done(client_gone()),
            () = cancelled(cancel) => {
                head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                return Call::Done(shutting_down());
            }
            () = tokio::time::sleep(delay) => {}
        }
        ctx.waited += waiting.elapsed();
        attempt += 1;
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Reads up to the end of the first complete frame.
async fn prime(
    ctx: &mut Ctx,
    resp: &mut reqwest::Response,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
) -> Primed {
    let mut decoder = Decoder::new(MAX_EVENT_SIZE);
    let idle = ctx.shared.timeouts.stream_idle;
    loop {
        match decoder.next_frame() {
            Err(e) => {
                return Primed {
                    decoder,
                    first: None,
                    stop: Some(Stop::Fail(format!("invalid event: {e}"))),
                };
            }
            Ok(Some(frame)) => {
                return Primed {
                    decoder,
                    first: Some(frame),
                    stop: None,
                };
            }
            Ok(None) => {}
        }
        let waiting = Instant::now();
        let next = tokio::select! {
            biased;
            () = head.closed() => Err(Stop::ClientGone),
            () = cancelled(cancel) => Err(Stop::Shutdown),
            r = tokio::time::timeout(idle, resp.chunk()) => Ok(r),
        };
        ctx.waited += waiting.elapsed();
        let stop = match next {
            Err(stop) => stop,
            Ok(Err(_)) => Stop::Fail(format!("idle for more than {}s", secs_ceil(idle))),
            Ok(Ok(Err(_))) => Stop::Fail("connection closed before the message ended".to_owned()),
            Ok(Ok(Ok(None))) => Stop::Eof,
            Ok(Ok(Ok(Some(chunk)))) => {
                decoder.push(chunk);
                continue;
            }
        };
        return Primed {
            decoder,
            first: None,
            stop: Some(stop),
        };
    }
}

async fn exchange(ctx: &mut Ctx, head: &mut Head, cancel: &mut watch::Receiver<bool>) -> End {
    ctx.sink.attempted = true;
    let (mut resp, primed) = match call(ctx, head, cancel).await {
        Call::Done(end) => return end,
        Call::Answer(resp, primed) => (resp, primed),
    };
    let status = resp.status();
    let headers = relayed_response_headers(resp.headers());
    if let Some(primed) = primed {
        return stream(ctx, resp, status, headers, head, cancel, *primed).await;
    }
    let body = match read_answer(ctx, &mut resp, head, cancel).await {
        Ok(b) => b,
        Err(end) => return end,
    };
    if !status.is_success() {
        return relay_error(ctx, status, headers, body, head);
    }
    #[cfg(feature = "mcp")]
    if ctx.tool_loop.is_some() {
        return blocking_loop(ctx, head, cancel, status, headers, body).await;
    }
    let mut facts = Vec::new();
    let parsed = blocking_facts(ctx.api, &body, &mut facts);
    ctx.sink.facts(&mut facts).await;
    if !head.send(response(status, headers, Body::from(body), ctx.id)) {
        return client_gone();
    }
    match parsed {
        Ok(()) => (Outcome::Completed, None),
        Err(reason) => failed(format!("invalid upstream response: {reason}")),
    }
}

/// A blocking tool loop (S19): run injected calls until the model answers without them,
/// then return the last response with usage summed over the iterations.
#[cfg(feature = "mcp")]
async fn blocking_loop(
    ctx: &mut Ctx,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
    mut status: StatusCode,
    mut headers: HeaderMap,
    mut body: Bytes,
) -> End {
    use super::tool_loop::{blocking_turn, execute, final_blocking, not_executed};
    loop {
        let Some(mut lp) = ctx.tool_loop.take() else {
            return failed("aibridge: internal error");
        };
        let mut facts = Vec::new();
        let parsed = blocking_facts(ctx.api, &body, &mut facts);
        facts.retain(|f| !matches!(f, super::Fact::Tool { name, .. } if lp.tools.contains(name)));
        let turn = blocking_turn(ctx.api, lp.original(), &body, &lp.tools);
        let after_limit = lp.iteration() > lp.config.max_iterations;
        let finish = match &turn {
            None => true,
            Some((t, client_tool, _)) => t.calls.is_empty() || *client_tool || after_limit,
        };
        if finish {
            if let Some((t, _, _)) = &turn
                && !t.calls.is_empty()
            {
                let reason = if after_limit {
                    "tool loop limit reached"
                } else {
                    "not executed: the response also called client tools"
                };
                not_executed(&lp.tools, t, reason, &mut facts);
            }
            ctx.sink.facts(&mut facts).await;
            let sum = turn.filter(|_| lp.iteration() > 1).map(|(_, _, usage)| {
                let mut sum = lp.sum.clone();
                sum.add(&usage);
                sum
            });
            let out = final_blocking(ctx.api, &body, sum.as_ref(), &lp.tools);
            if !head.send(response(status, headers, Body::from(out), ctx.id)) {
                return client_gone();
            }
            return match parsed {
                Ok(()) => (Outcome::Completed, None),
                Err(reason) => failed(format!("invalid upstream response: {reason}")),
            };
        }
        let Some((bt_turn, _, bt_usage)) = turn else {
            return failed("aibridge: internal error");
        };
        // This response's records (prompt, token usage, thoughts) are final now: queue them
        // before the tools run, so a client that leaves meanwhile does not lose them.
        ctx.sink.facts(&mut facts).await;
        let limit = lp.iteration() >= lp.config.max_iterations;
        let results = if limit {
            not_executed(&lp.tools, &bt_turn, "tool loop limit reached", &mut facts)
        } else {
            let waiting = Instant::now();
            let abort = async {
                tokio::select! {
                    () = head.closed() => Stop::ClientGone,
                    () = cancelled(cancel) => Stop::Shutdown,
                }
            };
            let r = execute(&lp.tools, lp.executor.as_ref(), &bt_turn, &mut facts, abort).await;
            ctx.waited += waiting.elapsed();
            match r {
                Ok(r) => r,
                Err(stop) => {
                    // The interrupted call's record.
                    ctx.sink.facts(&mut facts).await;
                    if matches!(stop, Stop::ClientGone) {
                        return client_gone();
                    }
                    head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                    return shutting_down();
                }
            }
        };
        ctx.sink.facts(&mut facts).await;
        lp.sum.add(&bt_usage);
        let next = lp.advance(ctx.api, bt_turn, &results, limit);
        ctx.tool_loop = Some(lp);
        let Some(next) = next else {
            return failed("aibridge: internal error");
        };
        ctx.body = next;
        let mut resp = match call(ctx, head, cancel).await {
            Call::Done(end) => return end,
            Call::Answer(resp, _) => resp,
        };
        status = resp.status();
        headers = relayed_response_headers(resp.headers());
        body = match read_answer(ctx, &mut resp, head, cancel).await {
            Ok(b) => b,
            Err(end) => return end,
        };
        if !status.is_success() {
            return relay_error(ctx, status, headers, body, head);
        }
    }
}

/// Reads a whole (blocking) upstream body; client disconnect, shutdown, an oversized or
/// broken body end the exchange (the client gets the provider-shaped error).
async fn read_answer(
    ctx: &mut Ctx,
    resp: &mut reqwest::Response,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Bytes, End> {
    let waiting = Instant::now();
    let read = tokio::select! {
        () = head.closed() => return Err(client_gone()),
        () = cancelled(cancel) => {
            head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
            return Err(shutting_down());
        }
        r = read_all(resp, MAX_BLOCKING_BODY) => r,
    };
    ctx.waited += waiting.elapsed();
    let e = match read {
        Ok(b) => return Ok(b),
        Err(ReadError::TooLarge) => BridgeError::upstream_too_large(MAX_BLOCKING_BODY),
        Err(ReadError::Io(err)) => {
            tracing::warn!(error = %err, "upstream body failed");
            BridgeError::upstream_unreachable("connection reset")
        }
    };
    let msg = e.message.clone();
    head.send(e.into_response(ctx.flavor, Some(ctx.id)));
    Err(failed(msg))
}

/// Relays an upstream HTTP error verbatim (D6); the interception fails with its text.
fn relay_error(
    ctx: &Ctx,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    head: &mut Head,
) -> End {
    let text = upstream_error_text(ctx.flavor, status, &body);
    if !head.send(response(status, headers, Body::from(body), ctx.id)) {
        return client_gone();
    }
    failed(text)
}

/// How the relay loop stopped.
enum Stop {
    ClientGone,
    Shutdown,
    Eof,
    Fail(String),
}

/// Relays one frame: observe, record, send. `Err` stops the stream.
async fn relay_frame(
    ctx: &mut Ctx,
    frame: Frame,
    pending: &mut Option<Response<Body>>,
    head: &mut Head,
    tx: &mpsc::Sender<Bytes>,
    cancel: &mut watch::Receiver<bool>,
    facts: &mut Vec<super::Fact>,
) -> Result<(), Stop> {
    match observe_frame(ctx, frame, facts).await? {
        Some(out) => send_out(ctx, out, pending, head, tx, cancel).await,
        None => Ok(()),
    }
}

/// The frames of one upstream read, sent to the client together: one channel send and one
/// body chunk per read instead of one per event (the events of a read arrived together, so
/// nothing is held back). A single frame is passed on as it is; several are copied into
/// one buffer.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    more: Option<BytesMut>,
}

impl Batch {
    fn push(&mut self, out: Bytes) {
        match (&mut self.first, &mut self.more) {
            (None, _) => self.first = Some(out),
            (Some(_), Some(more)) => more.extend_from_slice(&out),
            (Some(first), more @ None) => {
                let mut buf = BytesMut::with_capacity((first.len() + out.len()) * 4);
                buf.extend_from_slice(first);
                buf.extend_from_slice(&out);
                *more = Some(buf);
            }
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        let first = self.first.take();
        match self.more.take() {
            Some(more) => Some(more.freeze()),
            None => first,
        }
    }

    /// Sends what was gathered, if anything.
    async fn flush(
        &mut self,
        ctx: &mut Ctx,
        pending: &mut Option<Response<Body>>,
        head: &mut Head,
        tx: &mpsc::Sender<Bytes>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        match self.take() {
            Some(out) => send_out(ctx, out, pending, head, tx, cancel).await,
            None => Ok(()),
        }
    }
}

/// Observes and records one frame; returns the bytes to relay, if any. `Err` stops the
/// stream.
async fn observe_frame(
    ctx: &mut Ctx,
    frame: Frame,
    facts: &mut Vec<super::Fact>,
) -> Result<Option<Bytes>, Stop> {
    let was_open = ctx.observer.status() == StreamStatus::Open;
    let action = ctx
        .observer
        .on_frame(&frame, facts)
        .map_err(|d| Stop::Fail(format!("invalid event: {d}")))?;
    if !facts.is_empty() {
        ctx.sink.facts(facts).await;
    }
    if was_open
        && let StreamStatus::UpstreamError(_) = ctx.observer.status()
        && !ctx.observer.content_started()
        && let Some(kind) = overload_kind(&frame)
    {
        // An overload or rate-limit error before any content counts against the breaker.
        ctx.breaker_failure = breaker_counts_kind(ctx, kind);
    }
    Ok(match action {
        FrameAction::Relay => Some(frame.into_raw()),
        FrameAction::Replace(bytes) => Some(bytes),
        FrameAction::Drop => None,
    })
}

/// Sends bytes to the client (the head first, if it is still pending).
async fn send_out(
    ctx: &mut Ctx,
    out: Bytes,
    pending: &mut Option<Response<Body>>,
    head: &mut Head,
    tx: &mpsc::Sender<Bytes>,
    cancel: &mut watch::Receiver<bool>,
) -> Result<(), Stop> {
    if let Some(r) = pending.take()
        && !head.send(r)
    {
        return Err(Stop::ClientGone);
    }
    // Relayed bytes end the silence the keep-alives filled.
    #[cfg(feature = "mcp")]
    {
        ctx.keep_alive = None;
    }
    let waiting = Instant::now();
    tokio::select! {
        r = tx.send(out) => if r.is_err() { return Err(Stop::ClientGone) },
        () = cancelled(cancel) => return Err(Stop::Shutdown),
    }
    ctx.waited += waiting.elapsed();
    Ok(())
}

async fn stream(
    ctx: &mut Ctx,
    resp: reqwest::Response,
    status: StatusCode,
    headers: HeaderMap,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
    primed: Primed,
) -> End {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CAPACITY);
    // Later upstream calls of a tool loop notice a client that leaves while they wait.
    head.streams_to(&tx);
    let mut pending = Some(response(
        status,
        headers,
        Body::new(ChannelBody { rx }),
        ctx.id,
    ));
    let mut facts = Vec::new();
    let mut resp = resp;
    #[cfg(feature = "mcp")]
    let mut primed = primed;
    // One pass per upstream call; more than one only inside an MCP tool loop.
    #[cfg_attr(
        not(feature = "mcp"),
        expect(clippy::never_loop, reason = "only the MCP tool loop goes round")
    )]
    let stop = loop {
        let stop = relay_one(
            ctx,
            &mut resp,
            primed,
            &mut pending,
            head,
            &tx,
            cancel,
            &mut facts,
        )
        .await;
        if !matches!(stop, Stop::Eof) || ctx.observer.status() != StreamStatus::ToolCalls {
            break stop;
        }
        #[cfg(feature = "mcp")]
        {
            ctx.sink.facts(&mut facts).await;
            match next_iteration(ctx, &mut pending, head, &tx, cancel, &mut facts).await {
                Ok((next_resp, next_primed)) => {
                    resp = next_resp;
                    primed = next_primed;
                    continue;
                }
                Err(stop) => break stop,
            }
        }
        #[cfg(not(feature = "mcp"))]
        break stop;
    };
    drop(resp);
    #[cfg(feature = "mcp")]
    {
        ctx.keep_alive = None;
    }
    ctx.observer.flush(&mut facts);
    ctx.sink.facts(&mut facts).await;
    let status = ctx.observer.status();
    let (end, event) = match (stop, status) {
        (Stop::ClientGone, _) => return client_gone(),
        // The upstream's own error is already provider-shaped and relayed: add nothing.
        (Stop::Eof | Stop::Fail(_), StreamStatus::UpstreamError(text)) => {
            if let Some(r) = pending.take() {
                head.send(r);
            }
            return failed(text);
        }
        (Stop::Eof, StreamStatus::Completed) => return (Outcome::Completed, None),
        (Stop::Shutdown, _) => {
            if pending.is_some() {
                head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                return shutting_down();
            }
            (
                shutting_down(),
                ctx.observer
                    .terminal_event("aibridge: gateway is shutting down"),
            )
        }
        (Stop::Eof, _) => {
            let msg =
                "aibridge: upstream stream failed: connection closed before the message ended"
                    .to_owned();
            let ev = ctx.observer.terminal_event(&msg);
            (failed(msg), ev)
        }
        (Stop::Fail(reason), _) => {
            let msg = if reason.starts_with("aibridge: ") {
                reason
            } else {
                format!("aibridge: upstream stream failed: {reason}")
            };
            let ev = ctx.observer.terminal_event(&msg);
            (failed(msg), ev)
        }
    };
    if let Some(r) = pending.take()
        && !head.send(r)
    {
        return client_gone();
    }
    // The client may already be gone; the outcome stands either way.
    let _ = tx.send(event).await;
    end
}

/// Relays one upstream event stream until it ends or breaks.
#[expect(
    clippy::too_many_arguments,
    reason = "the relay loop's state, passed down once"
)]
async fn relay_one(
    ctx: &mut Ctx,
    resp: &mut reqwest::Response,
    primed: Primed,
    pending: &mut Option<Response<Body>>,
    head: &mut Head,
    tx: &mpsc::Sender<Bytes>,
    cancel: &mut watch::Receiver<bool>,
    facts: &mut Vec<super::Fact>,
) -> Stop {
    let Primed {
        mut decoder,
        first,
        stop: early,
    } = primed;
    let idle = ctx.shared.timeouts.stream_idle;
    if let Some(stop) = early {
        return stop;
    }
    if let Some(frame) = first
        && let Err(stop) = relay_frame(ctx, frame, pending, head, tx, cancel, facts).await
    {
        return stop;
    }
    let mut batch = Batch::default();
    loop {
        loop {
            let stop = match decoder.next_frame() {
                Err(e) => Stop::Fail(format!("invalid event: {e}")),
                Ok(None) => break,
                Ok(Some(frame)) => match observe_frame(ctx, frame, facts).await {
                    Ok(Some(out)) => {
                        batch.push(out);
                        continue;
                    }
                    Ok(None) => continue,
                    Err(stop) => stop,
                },
            };
            // What came before the failure still goes out, then the stream stops.
            if let Err(gone) = batch.flush(ctx, pending, head, tx, cancel).await {
                return gone;
            }
            return stop;
        }
        if let Err(stop) = batch.flush(ctx, pending, head, tx, cancel).await {
            return stop;
        }
        let waiting = Instant::now();
        let next = tokio::select! {
            biased;
            () = head.closed() => return Stop::ClientGone,
            () = tx.closed(), if head.is_sent() => return Stop::ClientGone,
            () = cancelled(cancel) => return Stop::Shutdown,
            r = tokio::time::timeout(idle, resp.chunk()) => r,
        };
        ctx.waited += waiting.elapsed();
        match next {
            Err(_) => return Stop::Fail(format!("idle for more than {}s", secs_ceil(idle))),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "upstream stream broke");
                return Stop::Fail("connection closed before the message ended".to_owned());
            }
            Ok(Ok(None)) => {
                // A final event ended by a bare CR is only complete at EOF. An incomplete
                // tail is not an event (SSE) and is not relayed: the client gets the
                // terminal error event instead of half an event.
                let tail = decoder.finish();
                while let Ok(Some(frame)) = decoder.next_frame() {
                    if let Err(stop) =
                        relay_frame(ctx, frame, pending, head, tx, cancel, facts).await
                    {
                        return stop;
                    }
                }
                if let Some(tail) = tail {
                    tracing::debug!(bytes = tail.len(), "upstream stream ended inside an event");
                }
                return Stop::Eof;
            }
            Ok(Ok(Some(chunk))) => decoder.push(chunk),
        }
    }
}

/// One step of a streaming tool loop: run the injected calls (keep-alives to the client
/// meanwhile), append the turns, and make the next upstream call.
#[cfg(feature = "mcp")]
async fn next_iteration(
    ctx: &mut Ctx,
    pending: &mut Option<Response<Body>>,
    head: &mut Head,
    tx: &mpsc::Sender<Bytes>,
    cancel: &mut watch::Receiver<bool>,
    facts: &mut Vec<super::Fact>,
) -> Result<(reqwest::Response, Primed), Stop> {
    ctx.observer.flush(facts);
    let Some(turn) = ctx.observer.take_turn() else {
        return Err(Stop::Fail("aibridge: internal error".to_owned()));
    };
    let Some(mut lp) = ctx.tool_loop.take() else {
        return Err(Stop::Fail("aibridge: internal error".to_owned()));
    };
    let limit = lp.iteration() >= lp.config.max_iterations;
    let keep_alive = super::tool_loop::keep_alive_bytes(ctx.api);
    if pending.is_some() {
        // The client has seen nothing yet: send the head and one keep-alive at once.
        send_out(ctx, keep_alive.clone(), pending, head, tx, cancel).await?;
    }
    // Keep-alives from now until the next iteration relays its first bytes (send_out).
    ctx.keep_alive = Some(KeepAlive::start(
        tx.clone(),
        keep_alive,
        lp.config.keep_alive,
    ));
    let results = if limit {
        super::tool_loop::not_executed(&lp.tools, &turn, "tool loop limit reached", facts)
    } else {
        // The interrupted call's record stays in `facts`; the caller queues it.
        let abort = async {
            tokio::select! {
                () = tx.closed() => Stop::ClientGone,
                () = cancelled(cancel) => Stop::Shutdown,
            }
        };
        let waiting = Instant::now();
        let results =
            super::tool_loop::execute(&lp.tools, lp.executor.as_ref(), &turn, facts, abort).await?;
        ctx.waited += waiting.elapsed();
        results
    };
    ctx.sink.facts(facts).await;
    let body = lp.advance(ctx.api, turn, &results, limit);
    ctx.tool_loop = Some(lp);
    let Some(body) = body else {
        return Err(Stop::Fail("aibridge: internal error".to_owned()));
    };
    ctx.body = body;
    ctx.observer.next_iteration(limit);
    match call(ctx, head, cancel).await {
        Call::Done((Outcome::Cancelled, error)) => {
            if error == client_gone().1 {
                Err(Stop::ClientGone)
            } else {
                Err(Stop::Shutdown)
            }
        }
        Call::Done((_, error)) => {
            Err(Stop::Fail(error.unwrap_or_else(|| {
                "aibridge: upstream stream failed".to_owned()
            })))
        }
        Call::Answer(resp, Some(primed)) => Ok((resp, *primed)),
        Call::Answer(mut resp, None) => {
            let status = resp.status();
            let body = read_all(&mut resp, MAX_BLOCKING_BODY)
                .await
                .unwrap_or_default();
            let reason = if status.is_success() {
                "aibridge: upstream stream failed: invalid upstream response: not an event stream"
                    .to_owned()
            } else {
                format!(
                    "aibridge: upstream stream failed: {}",
                    upstream_error_text(ctx.flavor, status, &body)
                )
            };
            Err(Stop::Fail(reason))
        }
    }
}

/// A relayed response: upstream status, relayed headers, the interception id.
fn response(status: StatusCode, headers: HeaderMap, body: Body, id: RecordId) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    set_interception_header(resp.headers_mut(), id);
    if !resp.headers().contains_key(header::CONTENT_TYPE) {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    resp
}

enum ReadError {
    TooLarge,
    Io(reqwest::Error),
}

async fn read_all(resp: &mut reqwest::Response, limit: usize) -> Result<Bytes, ReadError> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Io)? {
        let total = first.as_ref().map_or(0, Bytes::len) + buf.len() + chunk.len();
        if total > limit {
            return Err(ReadError::TooLarge);
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
            None => buf.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// `upstream returned {status}: {error.type}: {error.message}` (parts present; ≤ 1 KiB
/// later). OpenAI-shaped errors name `error.code`, falling back to `error.type`.
pub(crate) fn upstream_error_text(flavor: Flavor, status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Option<ErrorObj>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorObj {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
        message: Option<String>,
    }
    let mut text = format!("upstream returned {}", status.as_u16());
    if let Ok(Envelope { error: Some(e) }) = serde_json::from_slice::<Envelope>(body) {
        let code = e.code.and_then(|c| match c {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let kind = match flavor {
            Flavor::OpenAi => code.or(e.kind),
            Flavor::Anthropic => e.kind,
        };
        for part in [kind, e.message].into_iter().flatten() {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// The body of a streamed response: frames sent by the interception task.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Whole seconds for messages, rounded up (a 300 ms timeout reads "1s", not "0s").
fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

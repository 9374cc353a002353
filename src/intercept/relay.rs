//! The interception task: one upstream call, relayed as a blocking body or as a stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tokio::sync::{mpsc, oneshot, watch};

use super::emit::Emitter;
use super::facts::{FrameAction, StreamStatus};
use super::{StreamObserver, blocking_facts};
use crate::BoxError;
use crate::body::Body;
use crate::bridge::Inner;
use crate::error::{BridgeError, Flavor, set_interception_header};
use crate::provider::Api;
use crate::recorder::{Outcome, RecordId};
use crate::sse::Decoder;
use crate::upstream::relayed_response_headers;

/// Largest SSE event the bridge accepts (resilience.md "Limits").
pub(crate) const MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;
/// Largest blocking upstream body.
pub(crate) const MAX_BLOCKING_BODY: usize = 64 * 1024 * 1024;
/// Frames buffered between the interception task and the client body.
const CHANNEL_CAPACITY: usize = 16;

/// Everything the interception task needs.
pub(crate) struct Ctx {
    pub(crate) inner: Arc<Inner>,
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
}

/// The response head, until it is sent to the service future.
struct Head(Option<oneshot::Sender<Response<Body>>>);

impl Head {
    /// Resolves when the service future was dropped (never, once the head was sent).
    async fn closed(&mut self) {
        match self.0.as_mut() {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }

    /// Sends the head; false if the client is gone.
    fn send(&mut self, resp: Response<Body>) -> bool {
        self.0.take().is_some_and(|tx| tx.send(resp).is_ok())
    }

    fn is_sent(&self) -> bool {
        self.0.is_none()
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

/// Runs one interception to its end and records the end.
pub(crate) async fn drive(mut ctx: Ctx, head_tx: oneshot::Sender<Response<Body>>) {
    let mut head = Head(Some(head_tx));
    let mut cancel = ctx.inner.cancel.subscribe();
    let (outcome, error) = exchange(&mut ctx, &mut head, &mut cancel).await;
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
}

async fn exchange(ctx: &mut Ctx, head: &mut Head, cancel: &mut watch::Receiver<bool>) -> End {
    ctx.sink.attempted = true;
    let timeouts = ctx.inner.timeouts;
    let send = ctx
        .inner
        .client
        .post(&ctx.url)
        .headers(ctx.headers.clone())
        .body(ctx.body.clone())
        .send();
    let sent = tokio::select! {
        () = head.closed() => return client_gone(),
        () = cancelled(cancel) => {
            head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
            return shutting_down();
        }
        r = tokio::time::timeout(timeouts.response, send) => r,
    };
    let mut resp = match sent {
        Err(_) => {
            let e = BridgeError::upstream_timeout(timeouts.response.as_secs());
            let msg = e.message.clone();
            head.send(e.into_response(ctx.flavor, Some(ctx.id)));
            return failed(msg);
        }
        Ok(Err(err)) => {
            let kind = connect_error_kind(&err);
            tracing::warn!(error = %err, kind, "upstream unreachable");
            let e = BridgeError::upstream_unreachable(kind);
            let msg = e.message.clone();
            head.send(e.into_response(ctx.flavor, Some(ctx.id)));
            return failed(msg);
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let headers = relayed_response_headers(resp.headers());
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    if status.is_success() && is_sse {
        return stream(ctx, resp, status, headers, head, cancel).await;
    }
    let body = tokio::select! {
        () = head.closed() => return client_gone(),
        () = cancelled(cancel) => {
            head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
            return shutting_down();
        }
        r = read_all(&mut resp, MAX_BLOCKING_BODY) => r,
    };
    let body = match body {
        Ok(b) => b,
        Err(ReadError::TooLarge) => {
            let e = BridgeError::upstream_too_large(MAX_BLOCKING_BODY);
            let msg = e.message.clone();
            head.send(e.into_response(ctx.flavor, Some(ctx.id)));
            return failed(msg);
        }
        Err(ReadError::Io(err)) => {
            tracing::warn!(error = %err, "upstream body failed");
            let e = BridgeError::upstream_unreachable("connection reset");
            let msg = e.message.clone();
            head.send(e.into_response(ctx.flavor, Some(ctx.id)));
            return failed(msg);
        }
    };
    if !status.is_success() {
        let text = upstream_error_text(ctx.flavor, status, &body);
        if !head.send(response(status, headers, Body::from(body), ctx.id)) {
            return client_gone();
        }
        return failed(text);
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

/// How the relay loop stopped.
enum Stop {
    ClientGone,
    Shutdown,
    Eof,
    Fail(String),
    UpstreamError(String),
}

async fn stream(
    ctx: &mut Ctx,
    mut resp: reqwest::Response,
    status: StatusCode,
    headers: HeaderMap,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
) -> End {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CAPACITY);
    let mut pending = Some(response(
        status,
        headers,
        Body::new(ChannelBody { rx }),
        ctx.id,
    ));
    let mut decoder = Decoder::new(MAX_EVENT_SIZE);
    let obs = &mut ctx.observer;
    let mut facts = Vec::new();
    let idle = ctx.inner.timeouts.stream_idle;
    let stop = 'outer: loop {
        let next = tokio::select! {
            biased;
            () = head.closed() => break Stop::ClientGone,
            () = tx.closed(), if head.is_sent() => break Stop::ClientGone,
            () = cancelled(cancel) => break Stop::Shutdown,
            r = tokio::time::timeout(idle, resp.chunk()) => r,
        };
        let chunk = match next {
            Err(_) => break Stop::Fail(format!("idle for more than {}s", idle.as_secs())),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "upstream stream broke");
                break Stop::Fail("connection closed before the message ended".to_owned());
            }
            Ok(Ok(None)) => break Stop::Eof,
            Ok(Ok(Some(chunk))) => chunk,
        };
        decoder.push(chunk);
        loop {
            let frame = match decoder.next_frame() {
                Err(e) => break 'outer Stop::Fail(format!("invalid event: {e}")),
                Ok(None) => break,
                Ok(Some(frame)) => frame,
            };
            let action = match obs.on_frame(&frame, &mut facts) {
                Ok(a) => a,
                Err(detail) => break 'outer Stop::Fail(format!("invalid event: {detail}")),
            };
            if !facts.is_empty() {
                ctx.sink.facts(&mut facts).await;
            }
            if action == FrameAction::Relay {
                if let Some(r) = pending.take()
                    && !head.send(r)
                {
                    break 'outer Stop::ClientGone;
                }
                tokio::select! {
                    r = tx.send(frame.into_raw()) => if r.is_err() { break 'outer Stop::ClientGone },
                    () = cancelled(cancel) => break 'outer Stop::Shutdown,
                }
            }
            if let StreamStatus::UpstreamError(text) = obs.status() {
                break 'outer Stop::UpstreamError(text);
            }
        }
    };
    obs.flush(&mut facts);
    ctx.sink.facts(&mut facts).await;
    let terminal = |message: &str| obs.terminal_event(message);
    let (end, event) = match stop {
        Stop::ClientGone => return client_gone(),
        Stop::UpstreamError(text) => return failed(text),
        Stop::Eof if obs.status() == StreamStatus::Completed => return (Outcome::Completed, None),
        Stop::Shutdown => {
            if pending.is_some() {
                head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                return shutting_down();
            }
            (
                shutting_down(),
                terminal("aibridge: gateway is shutting down"),
            )
        }
        Stop::Eof => {
            let msg =
                "aibridge: upstream stream failed: connection closed before the message ended"
                    .to_owned();
            let ev = terminal(&msg);
            (failed(msg), ev)
        }
        Stop::Fail(reason) => {
            let msg = format!("aibridge: upstream stream failed: {reason}");
            let ev = terminal(&msg);
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

/// The spec's kind of a connection-level failure.
pub(crate) fn connect_error_kind(err: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut text = String::new();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused",
                std::io::ErrorKind::TimedOut => return "connect timeout",
                _ => {}
            }
        }
        text.push_str(&e.to_string().to_ascii_lowercase());
        text.push(' ');
        source = e.source();
    }
    if err.is_timeout() || text.contains("timed out") {
        "connect timeout"
    } else if text.contains("dns") || text.contains("resolve") {
        "dns lookup failed"
    } else if text.contains("tls") || text.contains("certificate") || text.contains("handshake") {
        "tls handshake failed"
    } else if text.contains("refused") {
        "connection refused"
    } else {
        "connection reset"
    }
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

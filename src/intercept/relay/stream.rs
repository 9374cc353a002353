//! An event-stream answer relayed as it arrives: frames observed and batched per read, a
//! client that stops reading, the terminal event, and the streaming tool loop.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response, StatusCode};
use tokio::sync::{mpsc, watch};

#[cfg(feature = "mcp")]
use super::call::{Call, call, read_all, upstream_error_text};
use super::call::{Primed, breaker_counts_kind, overload_kind};
use super::task::{
    Ctx, End, Failure, Head, Stop, cancelled, client_gone, failed, response, secs_ceil,
    shutting_down,
};
#[cfg(feature = "mcp")]
use super::task::{KeepAlive, MAX_BLOCKING_BODY};
#[cfg(feature = "mcp")]
use super::tools;
use crate::BoxError;
use crate::body::Body;
use crate::error::BridgeError;
#[cfg(feature = "mcp")]
use crate::intercept::UpstreamError;
use crate::intercept::facts::{Fact, StreamStatus};
use crate::intercept::step;
#[cfg(feature = "mcp")]
use crate::intercept::tool_loop::LoopState;
use crate::recorder::Outcome;
use crate::sse::Frame;

/// Frames buffered between the interception task and the client body.
pub(super) const CHANNEL_CAPACITY: usize = 16;

/// After the upstream's terminal event (`message_stop`, `response.completed`, `[DONE]`,
/// or the finish of a Chat completion) the rest of the stream is only its end: an upstream
/// that then stalls is waited for this long at most, and a reset ends the stream cleanly.
pub(super) const AFTER_TERMINAL_WAIT: Duration = Duration::from_secs(2);

/// How long the terminal error event of a cancelled or failed stream may wait for room in a
/// client's full body channel (a client that reads nothing must not hold the task).
pub(super) const TERMINAL_EVENT_WAIT: Duration = Duration::from_secs(1);

/// Relays one frame: observe, record, send. `Err` stops the stream.
pub(super) async fn relay_frame(
    ctx: &mut Ctx,
    frame: Frame,
    pending: &mut Option<Response<Body>>,
    head: &mut Head,
    tx: &mpsc::Sender<Bytes>,
    cancel: &mut watch::Receiver<bool>,
    facts: &mut Vec<Fact>,
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
pub(super) struct Batch {
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
    facts: &mut Vec<Fact>,
) -> Result<Option<Bytes>, Stop> {
    let stepped = step::step(ctx.observer.as_mut(), frame, facts)
        .map_err(|reason| Stop::Fail(Failure::Upstream(reason)))?;
    Ok(record_step(ctx, stepped, facts).await)
}

/// Records what one step found; returns the bytes to relay, if any.
async fn record_step(
    ctx: &mut Ctx,
    stepped: step::Stepped,
    facts: &mut Vec<Fact>,
) -> Option<Bytes> {
    if !facts.is_empty() {
        ctx.sink.facts(facts).await;
    }
    if let Some(frame) = &stepped.error
        && !ctx.observer.content_started()
        && let Some(kind) = overload_kind(frame)
    {
        // An overload or rate-limit error before any content counts against the breaker.
        ctx.breaker_failure = breaker_counts_kind(ctx, kind);
    }
    stepped.out
}

/// Sends bytes to the client (the head first, if it is still pending).
pub(super) async fn send_out(
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
    // Room in the channel (the usual case): no timer needed.
    let out = match tx.try_send(out) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::ClientGone),
        Err(mpsc::error::TrySendError::Full(out)) => out,
    };
    let waiting = Instant::now();
    tokio::select! {
        r = tx.send(out) => if r.is_err() { return Err(Stop::ClientGone) },
        () = cancelled(cancel) => return Err(Stop::Shutdown),
        () = tokio::time::sleep(ctx.shared.client_write_stall) => return Err(Stop::ClientStalled),
    }
    ctx.waited += waiting.elapsed();
    Ok(())
}

#[cfg_attr(
    feature = "mcp",
    expect(
        clippy::too_many_arguments,
        reason = "the relay's state and the tool loop's, passed down once"
    )
)]
pub(super) async fn stream(
    ctx: &mut Ctx,
    #[cfg(feature = "mcp")] mut lp: Option<LoopState>,
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
    let aborted = Arc::new(AtomicBool::new(false));
    let mut pending = Some(response(
        status,
        headers,
        Body::new(ChannelBody {
            rx,
            aborted: aborted.clone(),
        }),
        ctx.id,
    ));
    let mut facts = Vec::new();
    let mut resp = resp;
    // Reassigned only by a tool loop's next iteration.
    #[cfg(feature = "mcp")]
    let mut primed = primed;
    // One pass per upstream call; more than one only inside an MCP tool loop.
    #[cfg_attr(
        not(feature = "mcp"),
        expect(clippy::never_loop, reason = "only the MCP tool loop loops")
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
            let Some(state) = lp.take() else {
                break Failure::internal();
            };
            match next_iteration(ctx, state, &mut pending, head, &tx, cancel, &mut facts).await {
                Ok((state, next_resp, next_primed)) => {
                    lp = Some(state);
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
        (Stop::ClientStalled, _) => {
            // The client reads nothing: end its body with an error (the connection is
            // reset, so the cut is not mistaken for a complete stream).
            aborted.store(true, Ordering::Release);
            return (
                Outcome::Cancelled,
                Some(format!(
                    "client stopped reading for more than {}s",
                    secs_ceil(ctx.shared.client_write_stall)
                )),
            );
        }
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
            let msg = Failure::Upstream("connection closed before the message ended".to_owned())
                .message();
            let ev = ctx.observer.terminal_event(&msg);
            (failed(msg), ev)
        }
        #[cfg(feature = "mcp")]
        (Stop::Fail(Failure::Answered(error)), _) => {
            let ev = ctx.observer.error_event(&error);
            (failed(error.text), ev)
        }
        (Stop::Fail(failure), _) => {
            let msg = failure.message();
            let ev = ctx.observer.terminal_event(&msg);
            (failed(msg), ev)
        }
    };
    if let Some(r) = pending.take()
        && !head.send(r)
    {
        return client_gone();
    }
    // The client may already be gone; the outcome stands either way. A client that reads
    // nothing gets no more than TERMINAL_EVENT_WAIT: its body then ends with an error, and
    // the end record says the event was not delivered.
    let delivered = match tx.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => return end,
        Err(mpsc::error::TrySendError::Full(event)) => {
            matches!(
                tokio::time::timeout(TERMINAL_EVENT_WAIT, tx.send(event)).await,
                Ok(Ok(()))
            )
        }
    };
    if delivered {
        return end;
    }
    aborted.store(true, Ordering::Release);
    tracing::warn!("client reads nothing: terminal event not delivered");
    let (outcome, error) = end;
    let error = error.map(|e| format!("{e} (terminal event not delivered: client not reading)"));
    (outcome, error)
}

/// Relays one upstream event stream until it ends or breaks.
#[expect(
    clippy::too_many_arguments,
    reason = "the relay loop's state, passed down once"
)]
pub(super) async fn relay_one(
    ctx: &mut Ctx,
    resp: &mut reqwest::Response,
    primed: Primed,
    pending: &mut Option<Response<Body>>,
    head: &mut Head,
    tx: &mpsc::Sender<Bytes>,
    cancel: &mut watch::Receiver<bool>,
    facts: &mut Vec<Fact>,
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
            let stop = match step::next(&mut decoder, ctx.observer.as_mut(), facts) {
                Err(reason) => Stop::Fail(Failure::Upstream(reason)),
                Ok(None) => break,
                Ok(Some(stepped)) => {
                    if let Some(out) = record_step(ctx, stepped, facts).await {
                        batch.push(out);
                    }
                    continue;
                }
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
        // Once the terminal event was seen, only the stream's end is missing: a stall or a
        // reset then ends the stream as if at EOF (the client has the whole message).
        let terminal = ctx.observer.ended();
        let wait = if terminal {
            idle.min(AFTER_TERMINAL_WAIT)
        } else {
            idle
        };
        let waiting = Instant::now();
        let next = tokio::select! {
            biased;
            () = head.closed() => return Stop::ClientGone,
            () = tx.closed(), if head.is_sent() => return Stop::ClientGone,
            () = cancelled(cancel) => return Stop::Shutdown,
            r = tokio::time::timeout(wait, resp.chunk()) => r,
        };
        ctx.waited += waiting.elapsed();
        match next {
            Err(_) | Ok(Err(_)) if terminal => {
                tracing::debug!("upstream stream stalled or broke after its terminal event");
                return Stop::Eof;
            }
            Err(_) => {
                return Stop::Fail(Failure::Upstream(format!(
                    "idle for more than {}s",
                    secs_ceil(idle)
                )));
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "upstream stream broke");
                return Stop::Fail(Failure::Upstream(
                    "connection closed before the message ended".to_owned(),
                ));
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
pub(super) async fn next_iteration(
    ctx: &mut Ctx,
    lp: LoopState,
    pending: &mut Option<Response<Body>>,
    head: &mut Head,
    tx: &mpsc::Sender<Bytes>,
    cancel: &mut watch::Receiver<bool>,
    facts: &mut Vec<Fact>,
) -> Result<(LoopState, reqwest::Response, Primed), Stop> {
    ctx.observer.flush(facts);
    let Some((turn, decision)) = ctx.observer.take_turn() else {
        return Err(Failure::internal());
    };
    let keep_alive = ctx.adapter.keep_alive();
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
    let abort = async {
        tokio::select! {
            () = tx.closed() => Stop::ClientGone,
            () = cancelled(cancel) => Stop::Shutdown,
        }
    };
    let (lp, body) = tools::step(ctx, lp, turn, decision, facts, abort).await?;
    ctx.body = body;
    ctx.observer.next_iteration(lp.iteration());
    ctx.call_finished();
    match call(ctx, head, cancel).await {
        Call::Stopped(stop) => Err(stop),
        Call::Done((_, error)) => {
            // The call's own error, already whole (`aibridge: upstream unreachable …`).
            Err(Stop::Fail(Failure::Bridge(error.unwrap_or_else(|| {
                "aibridge: upstream stream failed".to_owned()
            }))))
        }
        Call::Answer(resp, Some(primed)) => Ok((lp, resp, *primed)),
        Call::Answer(mut resp, None) => {
            let status = resp.status();
            let body = read_all(&mut resp, MAX_BLOCKING_BODY)
                .await
                .unwrap_or_default();
            if status.is_success() {
                let reason = "invalid upstream response: not an event stream".to_owned();
                return Err(Stop::Fail(Failure::Upstream(reason)));
            }
            // The upstream's own error type and message reach the client in the API's
            // terminal event; the record keeps the whole text.
            let text = upstream_error_text(ctx.flavor, status, &body);
            Err(Stop::Fail(Failure::Answered(UpstreamError::parse(
                &body, text,
            ))))
        }
    }
}

/// The body of a streamed response: frames sent by the interception task. When the task
/// gave up on the client (`aborted`), the body ends with an error instead of cleanly.
pub(super) struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    aborted: Arc<AtomicBool>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) if self.aborted.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err("aibridge: stream abandoned".into())))
            }
            p => p.map(|o| o.map(|b| Ok(http_body::Frame::data(b)))),
        }
    }
}

//! A blocking (JSON) answer: read whole, relayed, and the blocking tool loop (S19).

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

#[cfg(feature = "mcp")]
use super::call::{Call, call};
use super::call::{ReadError, read_all, upstream_error_text};
#[cfg(feature = "mcp")]
use super::task::Stop;
use super::task::{
    Ctx, End, Head, MAX_BLOCKING_BODY, cancelled, client_gone, failed, response, secs_ceil,
    shutting_down,
};
#[cfg(feature = "mcp")]
use super::tools;
use crate::body::Body;
use crate::error::BridgeError;
#[cfg(feature = "mcp")]
use crate::intercept::facts::Fact;
#[cfg(feature = "mcp")]
use crate::intercept::tool_loop::{Decision, LoopState, not_executed};
#[cfg(feature = "mcp")]
use crate::recorder::Outcome;
#[cfg(feature = "mcp")]
use crate::upstream::relayed_response_headers;

/// A blocking tool loop (S19): run injected calls until the model answers without them,
/// then return the last response with usage summed over the iterations.
#[cfg(feature = "mcp")]
pub(super) async fn blocking_loop(
    ctx: &mut Ctx,
    mut lp: LoopState,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
    mut status: StatusCode,
    mut headers: HeaderMap,
    mut body: Bytes,
) -> End {
    loop {
        let mut facts = Vec::new();
        let parsed = ctx.adapter.blocking_facts(&body, &mut facts);
        facts.retain(|f| !matches!(f, Fact::Tool { name, .. } if lp.tools.contains(name)));
        let turn = ctx.adapter.blocking_turn(lp.original(), &body, &lp.tools);
        let decision = match &turn {
            None => Decision::Finish(None),
            Some(t) => lp.decide(t.ending()),
        };
        let turn = match (decision, turn) {
            (Decision::Execute | Decision::LastCall, Some(turn)) => turn,
            (decision, turn) => {
                if let (Decision::Finish(Some(reason)), Some(t)) = (decision, &turn) {
                    not_executed(&lp.tools, &t.turn, reason, &mut facts);
                }
                ctx.sink.facts(&mut facts).await;
                let sum = turn.filter(|_| lp.iteration() > 1).map(|t| {
                    let mut sum = lp.sum.clone();
                    sum.add(&t.usage);
                    sum
                });
                let mut out = ctx.adapter.final_blocking(&body, sum.as_ref(), &lp.tools);
                if let Some(first) = lp.first_id.as_deref() {
                    out = ctx.adapter.present_id(out, first);
                }
                if !head.send(response(status, headers, Body::from(out), ctx.id)) {
                    return client_gone();
                }
                return match parsed {
                    Ok(()) => (Outcome::Completed, None),
                    Err(reason) => failed(format!("invalid upstream response: {reason}")),
                };
            }
        };
        // This response's records (prompt, token usage, thoughts) are final now: queue them
        // before the tools run, so a client that leaves meanwhile does not lose them.
        ctx.sink.facts(&mut facts).await;
        lp.sum.add(&turn.usage);
        if lp.first_id.is_none() {
            lp.first_id.clone_from(&turn.turn.response_id);
        }
        let abort = async {
            tokio::select! {
                () = head.closed() => Stop::ClientGone,
                () = cancelled(cancel) => Stop::Shutdown,
            }
        };
        let next = tools::step(ctx, lp, turn.turn, decision, &mut facts, abort).await;
        (lp, ctx.body) = match next {
            Ok(next) => next,
            Err(Stop::ClientGone) => return client_gone(),
            Err(Stop::Shutdown) => {
                head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                return shutting_down();
            }
            Err(_) => return failed("aibridge: internal error"),
        };
        ctx.call_finished();
        let mut resp = match call(ctx, head, cancel).await {
            Call::Done(end) => return end,
            Call::Stopped(Stop::ClientGone) => return client_gone(),
            Call::Stopped(_) => return shutting_down(),
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
pub(super) async fn read_answer(
    ctx: &mut Ctx,
    resp: &mut reqwest::Response,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Bytes, End> {
    let waiting = Instant::now();
    // The response timeout runs from the call's send to the body's last byte.
    let response = ctx.shared.timeouts.response;
    let deadline = tokio::time::Instant::from_std(ctx.call_started + response);
    let read = tokio::select! {
        () = head.closed() => return Err(client_gone()),
        () = cancelled(cancel) => {
            head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
            return Err(shutting_down());
        }
        r = tokio::time::timeout_at(deadline, read_all(resp, MAX_BLOCKING_BODY)) => r,
    };
    ctx.waited += waiting.elapsed();
    let e = match read {
        Err(_) => {
            ctx.breaker_failure = true;
            BridgeError::upstream_timeout(secs_ceil(response))
        }
        Ok(read) => match read {
            Ok(b) => return Ok(b),
            Err(ReadError::TooLarge) => BridgeError::upstream_too_large(MAX_BLOCKING_BODY),
            Err(ReadError::Io(err)) => {
                tracing::warn!(error = %err, "upstream body failed");
                BridgeError::upstream_unreachable("connection reset")
            }
        },
    };
    let msg = e.message.clone();
    head.send(e.into_response(ctx.flavor, Some(ctx.id)));
    Err(failed(msg))
}

/// Relays an upstream HTTP error verbatim (D6); the interception fails with its text.
pub(super) fn relay_error(
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

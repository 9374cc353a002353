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
    Ctx, End, Head, MAX_BLOCKING_BODY, cancelled, client_gone, failed, response, shutting_down,
};
use crate::body::Body;
use crate::error::BridgeError;
#[cfg(feature = "mcp")]
use crate::intercept::blocking_facts;
#[cfg(feature = "mcp")]
use crate::recorder::Outcome;
#[cfg(feature = "mcp")]
use crate::upstream::relayed_response_headers;

/// A blocking tool loop (S19): run injected calls until the model answers without them,
/// then return the last response with usage summed over the iterations.
#[cfg(feature = "mcp")]
pub(super) async fn blocking_loop(
    ctx: &mut Ctx,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
    mut status: StatusCode,
    mut headers: HeaderMap,
    mut body: Bytes,
) -> End {
    use crate::intercept::tool_loop::{blocking_turn, execute, final_blocking, not_executed};
    loop {
        let Some(mut lp) = ctx.tool_loop.take() else {
            return failed("aibridge: internal error");
        };
        let mut facts = Vec::new();
        let parsed = blocking_facts(ctx.api, &body, &mut facts);
        facts.retain(
            |f| !matches!(f, crate::intercept::Fact::Tool { name, .. } if lp.tools.contains(name)),
        );
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
pub(super) async fn read_answer(
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

//! The interception task: upstream calls with retries and the circuit breaker, relayed as
//! a blocking body or as a stream.
//!
//! `call` makes one upstream call with its retries; `blocking` relays a JSON answer (and
//! drives a blocking tool loop); `stream` relays an event stream (and drives a streaming
//! tool loop); this module holds the task state and the interception's start and end.

mod blocking;
mod call;
mod stream;
mod task;
#[cfg(feature = "mcp")]
mod tools;

use std::time::Duration;

use http::Response;
use tokio::sync::{oneshot, watch};

use crate::body::Body;
use crate::breaker::Admitted;
use crate::error::BridgeError;
#[cfg(feature = "mcp")]
use crate::intercept::tool_loop::LoopState;
use crate::recorder::Outcome;
use crate::upstream::relayed_response_headers;

#[cfg(feature = "mcp")]
use self::blocking::blocking_loop;
use self::blocking::{read_answer, relay_error};
use self::call::{Call, call};
use self::stream::stream;
pub(crate) use self::task::Ctx;
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) use self::task::MAX_EVENT_SIZE;
use self::task::{End, Head, Stop, client_gone, failed, response, shutting_down};

/// Runs one interception to its end and records the end. Returns the outcome and the time
/// spent waiting on external parties. The driver owns the tool loop's state (`lp`, when
/// tools were injected) beside `ctx` and hands it by value to each loop step.
pub(crate) async fn drive(
    mut ctx: Ctx,
    #[cfg(feature = "mcp")] lp: Option<LoopState>,
    head_tx: oneshot::Sender<Response<Body>>,
) -> (Outcome, Duration) {
    let mut head = Head::new(head_tx);
    let mut cancel = ctx.shared.cancel.subscribe();
    let (outcome, error) = match admit(&mut ctx, &mut head) {
        Err(end) => end,
        Ok(admitted) => {
            ctx.admitted = admitted;
            let end = exchange(
                &mut ctx,
                #[cfg(feature = "mcp")]
                lp,
                &mut head,
                &mut cancel,
            )
            .await;
            if let Some(admitted) = ctx.admitted.take()
                && end.0 != Outcome::Cancelled
            {
                admitted.report(ctx.report(), ctx.shared.metrics.as_ref());
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
        Outcome::Denied => tracing::info!(
            error = error.as_deref().unwrap_or(""),
            "interception denied"
        ),
    }
    // D17: the interception span's outcome and GenAI attributes (the task runs inside it).
    let span = tracing::Span::current();
    span.record("outcome", outcome.as_str());
    let (input, output) = ctx.sink.tokens();
    // Signed: OpenTelemetry attributes have no unsigned integer (a `u64` would be exported
    // as text by `tracing-opentelemetry`).
    span.record(
        "gen_ai.usage.input_tokens",
        i64::try_from(input).unwrap_or(i64::MAX),
    );
    span.record(
        "gen_ai.usage.output_tokens",
        i64::try_from(output).unwrap_or(i64::MAX),
    );
    if let Some((first, _)) = ctx.sink.response_ids() {
        span.record("gen_ai.response.id", first.as_str());
    }
    if ctx.presents_first_id
        && let Some((first, last)) = ctx.sink.response_ids()
    {
        ctx.shared
            .response_ids
            .remember(first.clone(), last.clone());
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

async fn exchange(
    ctx: &mut Ctx,
    #[cfg(feature = "mcp")] lp: Option<LoopState>,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
) -> End {
    // A client that left while the interception was being recorded: nothing goes upstream.
    if head.is_abandoned() {
        return client_gone();
    }
    ctx.sink.attempted = true;
    let (mut resp, primed) = match call(ctx, head, cancel).await {
        Call::Done(end) => return end,
        Call::Stopped(Stop::ClientGone) => return client_gone(),
        Call::Stopped(_) => return shutting_down(),
        Call::Answer(resp, primed) => (resp, primed),
    };
    let status = resp.status();
    let headers = relayed_response_headers(resp.headers());
    if let Some(primed) = primed {
        return stream(
            ctx,
            #[cfg(feature = "mcp")]
            lp,
            resp,
            status,
            headers,
            head,
            cancel,
            *primed,
        )
        .await;
    }
    let body = match read_answer(ctx, &mut resp, head, cancel).await {
        Ok(b) => b,
        Err(end) => return end,
    };
    if !status.is_success() {
        return relay_error(ctx, status, headers, body, head);
    }
    #[cfg(feature = "mcp")]
    if let Some(lp) = lp {
        return blocking_loop(ctx, lp, head, cancel, status, headers, body).await;
    }
    let mut facts = Vec::new();
    let parsed = ctx.adapter.blocking_facts(&body, &mut facts);
    ctx.sink.facts(&mut facts).await;
    if !head.send(response(status, headers, Body::from(body), ctx.id)) {
        return client_gone();
    }
    match parsed {
        Ok(()) => (Outcome::Completed, None),
        Err(reason) => failed(format!("invalid upstream response: {reason}")),
    }
}

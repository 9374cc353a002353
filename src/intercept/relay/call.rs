//! One upstream call with its retries (resilience.md "Retries"), the first frame of a
//! stream read before the head is sent, and the upstream's error texts.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use tokio::sync::watch;

use super::task::{Ctx, End, Failure, Head, MAX_EVENT_SIZE, Stop, cancelled, failed, secs_ceil};
use crate::error::{BridgeError, Flavor};
use crate::provider::CredentialKind;
use crate::sse::{Decoder, Frame};

/// The first complete frame of a stream, read before the head is sent (so an overload
/// error arriving first can still be retried), or why there is none.
pub(super) struct Primed {
    pub(super) decoder: Decoder,
    pub(super) first: Option<Frame>,
    pub(super) stop: Option<Stop>,
}

/// What an upstream call (after its retries) produced.
pub(super) enum Call {
    /// An answer to relay.
    Answer(reqwest::Response, Option<Box<Primed>>),
    /// The client has been answered with the bridge's error.
    Done(End),
    /// The client left ([`Stop::ClientGone`]) or the bridge is shutting down
    /// ([`Stop::Shutdown`]; a client still waiting for its head got the 503).
    Stopped(Stop),
}

/// Error kinds an upstream uses for overload and rate limits (D14, D15).
pub(super) const OVERLOAD_KINDS: [&str; 3] = [
    "overloaded_error",
    "rate_limit_error",
    "rate_limit_exceeded",
];

pub(super) const RATE_LIMIT_KINDS: [&str; 2] = ["rate_limit_error", "rate_limit_exceeded"];

/// The in-band error kind of a frame (`error.type`, `error.code`, `code` or `type`), if it
/// is an overload or rate-limit error.
pub(super) fn overload_kind(frame: &Frame) -> Option<&'static str> {
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
pub(super) fn breaker_counts_status(ctx: &Ctx, status: StatusCode) -> bool {
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

pub(super) fn breaker_counts_kind(ctx: &Ctx, kind: &str) -> bool {
    let Some(cfg) = ctx.provider.circuit_breaker() else {
        return false;
    };
    !(RATE_LIMIT_KINDS.contains(&kind)
        && cfg.ignore_byok_rate_limits
        && ctx.credential_kind == CredentialKind::Byok)
}

/// The server's retry hint (`retry-after-ms` wins over `retry-after`), if under the cap.
pub(super) fn retry_hint(headers: &HeaderMap, cap: Duration) -> Option<Duration> {
    // Upstream-controlled: `inf`, `NaN`, `1e30` or a negative value must not panic
    // (`Duration::from_secs_f64` does); anything not a finite, representable duration is
    // ignored like an absent hint.
    let ms = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|v| Duration::try_from_secs_f64(v / 1000.0).ok());
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

/// The back-off before retry `n` (0-based): never longer than its base (D14).
fn backoff(initial: Duration, max: Duration, n: u32) -> Duration {
    crate::backoff::delay(initial, max, n, crate::backoff::Jitter::Down25)
}

/// Whether a failed status should be retried (`x-should-retry` overrides).
pub(super) fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
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
pub(super) async fn call(
    ctx: &mut Ctx,
    head: &mut Head,
    cancel: &mut watch::Receiver<bool>,
) -> Call {
    let retry = ctx.provider.retry().clone();
    let timeouts = ctx.shared.timeouts;
    let mut attempt: u32 = 0;
    loop {
        let waiting = Instant::now();
        #[cfg(any(feature = "bedrock", feature = "vertex"))]
        let (headers, body) = match &ctx.cloud {
            None => (ctx.headers.clone(), ctx.body.clone()),
            Some(cloud) => match cloud.prepare(&ctx.url, &ctx.headers, &ctx.body).await {
                Ok(prepared) => prepared,
                Err(e) => {
                    let e = BridgeError::cloud_auth(e.0);
                    let msg = e.message.clone();
                    head.send(e.into_response(ctx.flavor, Some(ctx.id)));
                    return Call::Done(failed(msg));
                }
            },
        };
        #[cfg(not(any(feature = "bedrock", feature = "vertex")))]
        let (headers, body) = (ctx.headers.clone(), ctx.body.clone());
        ctx.call_started = waiting;
        let span = upstream_span(ctx, attempt);
        let send = ctx
            .shared
            .client
            .post(&ctx.url)
            .headers(headers)
            .body(body)
            .send();
        let send = tracing::Instrument::instrument(send, span.clone());
        let sent = tokio::select! {
            () = head.closed() => return Call::Stopped(Stop::ClientGone),
            () = cancelled(cancel) => {
                head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                return Call::Stopped(Stop::Shutdown);
            }
            r = tokio::time::timeout(timeouts.response, send) => r,
        };
        ctx.waited += waiting.elapsed();
        let can_retry = attempt < retry.max_retries;
        match &sent {
            Err(_) => span.record("error_kind", "timeout"),
            Ok(Err(err)) => span.record("error_kind", crate::upstream::connect_error_kind(err)),
            Ok(Ok(resp)) => span.record("status", i64::from(resp.status().as_u16())),
        };
        let delay = match sent {
            Err(_) => {
                ctx.breaker_failure = true;
                let e = BridgeError::upstream_timeout(secs_ceil(timeouts.response));
                let msg = e.message.clone();
                head.send(e.into_response(ctx.flavor, Some(ctx.id)));
                return Call::Done(failed(msg));
            }
            Ok(Err(err)) => {
                let kind = crate::upstream::connect_error_kind(&err);
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
            Ok(Ok(resp)) => {
                #[cfg(any(feature = "bedrock", feature = "vertex"))]
                let resp = match &ctx.cloud {
                    Some(cloud) => cloud.response(resp),
                    None => resp,
                };
                let mut resp = resp;
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
                        Some(kind) => {
                            // The call's first event is the overload error: nothing of
                            // this call was relayed, whatever earlier calls of a tool loop
                            // relayed (D15).
                            ctx.breaker_failure = breaker_counts_kind(ctx, kind);
                            return Call::Answer(resp, Some(Box::new(primed)));
                        }
                        None => return Call::Answer(resp, Some(Box::new(primed))),
                    }
                }
            }
        };
        span.record(
            "retry_delay_ms",
            i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        );
        drop(span);
        let waiting = Instant::now();
        tokio::select! {
            () = head.closed() => return Call::Stopped(Stop::ClientGone),
            () = cancelled(cancel) => {
                head.send(BridgeError::shutting_down().into_response(ctx.flavor, Some(ctx.id)));
                return Call::Stopped(Stop::Shutdown);
            }
            () = tokio::time::sleep(delay) => {}
        }
        ctx.waited += waiting.elapsed();
        attempt += 1;
    }
}

/// The span of one upstream call attempt (D17), a child of the interception's span, with
/// the OpenTelemetry GenAI attributes that fit. The URL carries no userinfo and no query.
fn upstream_span(ctx: &Ctx, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        "aibridge.upstream",
        // Signed integers: OpenTelemetry attributes have no unsigned ones.
        iteration = i64::from(ctx.iteration),
        attempt = i64::from(attempt) + 1,
        url = crate::upstream::url_for_span(&ctx.url),
        status = tracing::field::Empty,
        error_kind = tracing::field::Empty,
        retry_delay_ms = tracing::field::Empty,
        gen_ai.system = ctx.provider.kind().as_str(),
        gen_ai.request.model = %ctx.breaker_key.model,
    )
}

pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
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
pub(super) async fn prime(
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
                    stop: Some(Stop::Fail(Failure::Upstream(format!("invalid event: {e}")))),
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
            Ok(Err(_)) => Stop::Fail(Failure::Upstream(format!(
                "idle for more than {}s",
                secs_ceil(idle)
            ))),
            Ok(Ok(Err(_))) => Stop::Fail(Failure::Upstream(
                "connection closed before the message ended".to_owned(),
            )),
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

pub(super) enum ReadError {
    TooLarge,
    Io(reqwest::Error),
}

pub(super) async fn read_all(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
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
    let mut text = format!("upstream returned {}", status.as_u16());
    if let Some(e) = crate::error::UpstreamErrorObject::parse(body) {
        let kind = match flavor {
            Flavor::OpenAi => e.code.or(e.kind),
            Flavor::Anthropic => e.kind,
        };
        for part in [kind, e.message].into_iter().flatten() {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn hint(name: &'static str, value: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        retry_hint(&h, Duration::from_secs(60))
    }

    /// Issue 17, defect 2: `retry-after-ms: inf` panicked the interception task.
    #[test]
    fn unrepresentable_retry_hints_are_ignored() {
        for v in ["inf", "-inf", "NaN", "1e30", "-1", "1e400"] {
            assert_eq!(hint("retry-after-ms", v), None, "{v}");
        }
        assert_eq!(
            hint("retry-after-ms", "1500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(hint("retry-after", "2"), Some(Duration::from_secs(2)));
        assert_eq!(
            hint("retry-after", "18446744073709551615"),
            None,
            "over the cap"
        );
    }

    proptest! {
        /// The retry-hint parsers take any header value without panicking, and never
        /// return a hint at or over the cap.
        #[test]
        fn retry_hints_never_panic(ms in "\\PC{0,40}", secs in "\\PC{0,40}", f in any::<f64>()) {
            let mut h = HeaderMap::new();
            for (name, v) in [("retry-after-ms", ms), ("retry-after", secs), ("retry-after-ms", f.to_string())] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(name, v);
                    if let Some(d) = retry_hint(&h, Duration::from_secs(60)) {
                        prop_assert!(d < Duration::from_secs(60));
                    }
                }
            }
        }
    }
}

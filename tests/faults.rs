//! Fault injection over loopback, for Messages, Chat Completions and Responses: the client
//! goes away (before the head, mid-stream), the upstream resets (before the head, inside an
//! event, between events), sends garbage, invalid UTF-8, a truncated JSON event, an event
//! over the 16 MiB cap, or stalls. Every client gets a provider-shaped answer (never an empty
//! 200), the upstream call is dropped within a second, and the records say what happened.
//! No sleeps: every wait is on an event (a request arriving, a body being dropped, a record).

mod common;
mod faultkit;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use aibridge::RequestBridge;
use aibridge::bridge::{Builder, UpstreamTimeouts};
use aibridge::provider::RetryConfig;
use aibridge::recorder::{MemoryRecorder, Outcome};
use bytes::Bytes;
use common::{anthropic, bridge_with, ended, openai, post, send};
use faultkit::Api;
use http_body_util::BodyExt;
use support::{MockResponse, MockUpstream};
use tower::ServiceExt;

const CUT_MSG: &str =
    "aibridge: upstream stream failed: connection closed before the message ended";

/// Both providers in front of `base`: no retries and no breaker, so every test sees one
/// upstream call per request.
fn bridge(base: &str, f: impl FnOnce(Builder) -> Builder) -> (RequestBridge, MemoryRecorder) {
    let no_retry = RetryConfig::default().with_max_retries(0);
    bridge_with(|b| {
        f(b.provider(
            anthropic(base)
                .with_retry(no_retry.clone())
                .without_circuit_breaker(),
        )
        .provider(openai(base).with_retry(no_retry).without_circuit_breaker()))
    })
}

/// The single interception's end: (outcome, error).
async fn the_end(rec: &MemoryRecorder) -> (Outcome, String) {
    ended(rec, 1).await;
    let e = rec.interceptions_ended();
    assert_eq!(e.len(), 1, "{e:?}");
    (e[0].outcome, e[0].error.clone().unwrap_or_default())
}

fn concat(parts: &[Bytes]) -> Bytes {
    parts.concat().into()
}

// ---------------------------------------------------------------------------------------------
// The client goes away

#[tokio::test]
async fn client_disconnect_before_the_head_cancels_the_upstream_call_within_a_second() {
    // (streaming, held): a stream whose upstream sent its head but no event yet (the
    // client has no head), and streaming and blocking calls whose upstream head is held.
    for api in Api::ALL {
        for (streaming, held) in [(true, false), (true, true), (false, true)] {
            {
                let label = format!("{api:?} streaming={streaming} held={held}");
                let upstream = MockUpstream::start().await;
                let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
                let body = if streaming {
                    api.stream_request()
                } else {
                    api.blocking_request()
                };
                let mut gate = None;
                let mut ctl = None;
                if held {
                    let (resp, g) = if streaming {
                        MockResponse::sse(api.stream()).held()
                    } else {
                        MockResponse::json(200, api.blocking_body()).held()
                    };
                    upstream.push(resp);
                    gate = Some(g);
                } else {
                    let (resp, c) = MockResponse::streamed(200, "text/event-stream");
                    upstream.push(resp);
                    ctl = Some(c);
                }
                let task = tokio::spawn(bridge.clone().oneshot(post(api.path(), body)));
                upstream.wait_for_requests(1).await;
                task.abort(); // the host drops the service future: the client is gone
                let gone = async {
                    match (&gate, &ctl) {
                        (Some(g), _) => g.closed().await,
                        (_, Some(c)) => c.closed().await,
                        _ => unreachable!(),
                    }
                };
                tokio::time::timeout(Duration::from_secs(1), gone)
                    .await
                    .unwrap_or_else(|_| panic!("{label}: upstream call not cancelled within 1s"));
                let (outcome, error) = the_end(&rec).await;
                assert_eq!(outcome, Outcome::Cancelled, "{label}");
                assert_eq!(error, "client disconnected", "{label}");
                assert_eq!(rec.interceptions().len(), 1, "{label}");
            }
        }
    }
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_upstream_and_records_what_was_seen() {
    for api in Api::ALL {
        let events = api.events();
        let usage = api.usage_event();
        // Relay at least two events, and the usage event if it is not the last one.
        let n = if usage + 1 < events.len() {
            (usage + 1).max(2)
        } else {
            2
        };
        let upstream = MockUpstream::start().await;
        let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
        upstream.push(mock);
        let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
        let fut = bridge
            .clone()
            .oneshot(post(api.path(), api.stream_request()));
        ctl.send(concat(&events[..n])).await.unwrap();
        let resp = fut.await.unwrap();
        assert_eq!(resp.status(), 200, "{api:?}");
        let mut body = resp.into_body();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(
            events[0].starts_with(&frame) || frame.starts_with(&events[0]),
            "{api:?}"
        );
        drop(body);
        tokio::time::timeout(Duration::from_secs(1), ctl.closed())
            .await
            .unwrap_or_else(|_| panic!("{api:?}: upstream not cancelled within 1s"));
        let (outcome, error) = the_end(&rec).await;
        assert_eq!(
            (outcome, error.as_str()),
            (Outcome::Cancelled, "client disconnected"),
            "{api:?}"
        );
        assert_eq!(
            rec.token_usages().len(),
            usize::from(usage < n),
            "{api:?}: usage seen before the disconnect is recorded"
        );
        assert_eq!(rec.prompt_usages().len(), 1, "{api:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream resets

/// A server that reads the request head and closes the connection without answering.
async fn rude_server() -> SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            drop(s);
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_reset_before_the_head_is_a_provider_shaped_502() {
    let addr = rude_server().await;
    let (bridge, rec) = bridge(&format!("http://{addr}"), |b| b);
    let mut n = 0;
    for api in Api::ALL {
        for body in [api.stream_request(), api.blocking_request()] {
            let resp = send(&bridge, post(api.path(), body)).await;
            assert_eq!(resp.status, 502, "{api:?}: {}", resp.text());
            api.assert_error_body(
                &resp.body,
                "aibridge: upstream unreachable (connection reset)",
            );
            assert!(resp.headers.contains_key("x-aibridge-interception-id"));
            n += 1;
        }
    }
    ended(&rec, n).await;
    for e in rec.interceptions_ended() {
        assert_eq!(e.outcome, Outcome::Failed);
        assert_eq!(
            e.error.as_deref(),
            Some("aibridge: upstream unreachable (connection reset)")
        );
    }
}

#[tokio::test]
async fn an_upstream_reset_inside_or_between_events_ends_with_the_terminal_event() {
    for api in Api::ALL {
        let events = api.events();
        let usage = api.usage_event();
        // Cut after the usage event when something follows it, else after two events.
        let k = if usage + 2 < events.len() {
            usage + 1
        } else {
            2
        };
        let whole = concat(&events[..k]);
        let half = events[k].slice(..events[k].len() / 2);
        for (how, tail, abort) in [
            ("reset between events", Bytes::new(), true),
            ("reset inside an event", half.clone(), true),
            ("clean EOF inside an event", half.clone(), false),
            ("clean EOF between events", Bytes::new(), false),
        ] {
            let label = format!("{api:?}: {how}");
            let upstream = MockUpstream::start().await;
            let mock = MockResponse::sse(concat(&[whole.clone(), tail])).chunked(vec![7, 300]);
            upstream.push(if abort { mock.then_abort() } else { mock });
            let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
            let resp = send(&bridge, post(api.path(), api.stream_request())).await;
            assert_eq!(resp.status, 200, "{label}");
            assert!(
                resp.body.starts_with(&whole),
                "{label}: complete events relayed byte for byte"
            );
            let relayed = api.assert_terminal(&resp.body[whole.len()..], CUT_MSG);
            assert_eq!(relayed, 0, "{label}: the partial event is not relayed");
            let (outcome, error) = the_end(&rec).await;
            assert_eq!(
                (outcome, error.as_str()),
                (Outcome::Failed, CUT_MSG),
                "{label}"
            );
            assert_eq!(
                rec.token_usages().len(),
                usize::from(usage < k),
                "{label}: usage so far is recorded"
            );
        }
    }
}

#[tokio::test]
async fn a_blocking_body_cut_by_a_reset_is_a_502_not_a_short_200() {
    for api in Api::ALL {
        let body = api.blocking_body();
        let upstream = MockUpstream::start().await;
        upstream.push(MockResponse::json(200, body.slice(..body.len() / 2)).then_abort());
        let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
        let resp = send(&bridge, post(api.path(), api.blocking_request())).await;
        assert_eq!(resp.status, 502, "{api:?}: {}", resp.text());
        api.assert_error_body(
            &resp.body,
            "aibridge: upstream unreachable (connection reset)",
        );
        assert_eq!(the_end(&rec).await.0, Outcome::Failed, "{api:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream sends garbage

/// Replaces the data of `event` (which keeps its `event:` line, if any) by `data`.
fn with_data(event: &Bytes, data: &[u8]) -> Bytes {
    let text = event.as_ref();
    let at = memchr::memmem::find(text, b"data: ").expect("a data line") + 6;
    let mut out = text[..at].to_vec();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// Breaks the JSON of `event`: truncated, invalid UTF-8 inside a string, not JSON at all.
fn corruptions(event: &Bytes) -> Vec<(&'static str, Bytes)> {
    let at = memchr::memmem::find(event, b"data: ").unwrap() + 6;
    let end = event.len() - 2;
    let data = &event[at..end];
    // Inside the first key: keys are always decoded (an ignored value is only skipped).
    let mut bad_utf8 = data.to_vec();
    bad_utf8.splice(2..2, [0xff, 0xfe, 0xc3]);
    vec![
        ("truncated JSON", with_data(event, &data[..data.len() / 2])),
        ("invalid UTF-8", with_data(event, &bad_utf8)),
        (
            "not JSON",
            with_data(event, b"<html>502 Bad Gateway</html>"),
        ),
        ("empty data", with_data(event, b"")),
    ]
}

#[tokio::test]
async fn garbage_in_a_parsed_event_ends_with_the_terminal_event_and_keeps_usage_so_far() {
    for api in Api::ALL {
        let events = api.events();
        let usage = api.usage_event();
        // The event to corrupt: one the parser must read (usage), after the usage event when
        // there is a later one it reads (Messages: message_delta).
        let target = match api {
            Api::Messages => events
                .iter()
                .position(|e| e.starts_with(b"event: message_delta"))
                .unwrap(),
            Api::Chat | Api::Responses => usage,
        };
        for (how, bad) in corruptions(&events[target]) {
            let label = format!("{api:?}: {how}");
            let upstream = MockUpstream::start().await;
            let mut stream = events.clone();
            stream[target] = bad;
            upstream.push(MockResponse::sse(concat(&stream)));
            let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
            let resp = send(&bridge, post(api.path(), api.stream_request())).await;
            assert_eq!(resp.status, 200, "{label}");
            let (outcome, error) = the_end(&rec).await;
            assert_eq!(outcome, Outcome::Failed, "{label}: {error}");
            assert!(
                error.starts_with("aibridge: upstream stream failed: invalid event: "),
                "{label}: {error}"
            );
            let before = concat(&events[..target]);
            assert!(resp.body.starts_with(&before), "{label}");
            api.assert_terminal(&resp.body[before.len()..], &error);
            assert_eq!(
                rec.token_usages().len(),
                usize::from(usage < target),
                "{label}: usage so far is recorded"
            );
        }
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_value_the_bridge_does_not_read_is_relayed_byte_for_byte() {
    // The relay is byte-faithful: a string the parser skips is not validated. The client's
    // SDK sees exactly what the upstream sent; the usage is recorded as usual.
    let api = Api::Messages;
    let mut events = api.events();
    let i = events
        .iter()
        .position(|e| e.starts_with(b"event: message_delta"))
        .unwrap();
    let text = events[i].as_ref();
    let at = memchr::memmem::find(text, b"\"end_turn\"").expect("a stop reason") + 1;
    let mut bad = text.to_vec();
    bad.splice(at..at, [0xff, 0xfe]);
    events[i] = bad.into();
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::sse(concat(&events)));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let resp = send(&bridge, post(api.path(), api.stream_request())).await;
    assert_eq!(resp.body, concat(&events));
    assert_eq!(the_end(&rec).await, (Outcome::Completed, String::new()));
    assert_eq!(rec.token_usages().len(), 1);
}

#[tokio::test]
async fn an_event_over_the_16_mib_cap_ends_the_stream_and_the_upstream_call() {
    const MSG: &str =
        "aibridge: upstream stream failed: invalid event: event exceeds 16777216 bytes";
    let mib = Bytes::from(vec![b'a'; 1024 * 1024]);
    for api in Api::ALL {
        let events = api.events();
        let upstream = MockUpstream::start().await;
        let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
        upstream.push(mock);
        let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
        let fut = bridge
            .clone()
            .oneshot(post(api.path(), api.stream_request()));
        let head = concat(&events[..2]);
        ctl.send(head.clone()).await.unwrap();
        ctl.send(&b"data: "[..]).await.unwrap();
        for _ in 0..17 {
            // Fails once the bridge has given up and dropped the upstream response.
            if ctl.send(mib.clone()).await.is_err() {
                break;
            }
        }
        let resp = fut.await.unwrap();
        assert_eq!(resp.status(), 200, "{api:?}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(&head), "{api:?}");
        assert!(
            body.len() < head.len() + 4096,
            "{api:?}: the oversized event is not relayed"
        );
        api.assert_terminal(&body[head.len()..], MSG);
        tokio::time::timeout(Duration::from_secs(1), ctl.closed())
            .await
            .unwrap_or_else(|_| panic!("{api:?}: upstream not dropped"));
        assert_eq!(
            the_end(&rec).await,
            (Outcome::Failed, MSG.to_owned()),
            "{api:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream stalls

#[tokio::test]
async fn a_stalled_stream_ends_at_the_idle_timeout_with_the_terminal_event() {
    const MSG: &str = "aibridge: upstream stream failed: idle for more than 1s";
    let timeouts = UpstreamTimeouts::default().with_stream_idle(Duration::from_millis(300));
    for api in Api::ALL {
        // Stalled before the first event (no head sent yet) and after two events.
        for sent in [0, 2] {
            let label = format!("{api:?} after {sent} events");
            let events = api.events();
            let upstream = MockUpstream::start().await;
            let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
            upstream.push(mock);
            let (bridge, rec) = bridge(&upstream.base_url(), |b| b.upstream_timeouts(timeouts));
            let fut = bridge
                .clone()
                .oneshot(post(api.path(), api.stream_request()));
            let head = concat(&events[..sent]);
            if sent > 0 {
                ctl.send(head.clone()).await.unwrap();
            }
            let resp = fut.await.unwrap();
            assert_eq!(resp.status(), 200, "{label}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(body.starts_with(&head), "{label}");
            api.assert_terminal(&body[head.len()..], MSG);
            tokio::time::timeout(Duration::from_secs(1), ctl.closed())
                .await
                .unwrap_or_else(|_| panic!("{label}: upstream not dropped"));
            assert_eq!(
                the_end(&rec).await,
                (Outcome::Failed, MSG.to_owned()),
                "{label}"
            );
        }
    }
}

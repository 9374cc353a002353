//! The server's limits (issue 17, limit 10): the header-read timeout (slowloris), the idle
//! timeout (HTTP/1.1 keep-alive, h2c, silent connections) and the connection limit.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::{
    DEADLINE, Gateway, HeldUpstream, closed_by_server, eventually, exchange, get, open_now,
    read_response,
};

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: gateway";

/// A whole blocking Messages request (with a client key: no key is configured).
fn messages_request() -> String {
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    format!(
        "POST /api/v2/aibridge/anthropic/v1/messages HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\nx-api-key: sk-ant-client-0123456789\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
/// A POST whose body the bridge waits for: `100 Continue` shows the request is in progress.
const HELD_POST: &str = "POST /api/v2/aibridge/anthropic/v1/messages HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-api-key: sk-ant-client-0123456789\r\nexpect: 100-continue";

/// Starts a request the server keeps in progress until its body is sent.
async fn held_request(gw: &Gateway) -> TcpStream {
    let mut s = gw.connect().await;
    let interim = exchange(&mut s, HELD_POST).await;
    assert_eq!(interim.status, 100, "{interim:?}");
    s
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_read_timeout() {
    let timeout = Duration::from_millis(300);
    let gw = Gateway::start(&[
        ("AIBRIDGE_HEADER_READ_TIMEOUT", "300ms"),
        ("AIBRIDGE_IDLE_TIMEOUT", "60s"),
    ])
    .await;
    let silent = gw.connect().await;

    // Half a header, then nothing.
    let mut half = gw.connect().await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: gate")
        .await
        .unwrap();
    let sent = Instant::now();
    assert!(closed_by_server(&mut half, DEADLINE).await, "still open");
    assert!(
        sent.elapsed() >= timeout,
        "closed after {:?}",
        sent.elapsed()
    );

    // A header trickled a byte at a time does not restart the timer.
    let mut trickle = gw.connect().await;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let header = b"GET /healthz HTTP/1.1\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut refused = false;
    for byte in header {
        tick.tick().await;
        if trickle.write_all(&[*byte]).await.is_err() {
            refused = true;
            break;
        }
        if !open_now(&trickle) {
            refused = true;
            break;
        }
    }
    assert!(
        refused || closed_by_server(&mut trickle, DEADLINE).await,
        "a trickled header kept the connection"
    );
    let took = started.elapsed();
    assert!(took >= timeout, "closed after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "closed only after {took:?}: the trickle kept restarting the timer"
    );

    // The header timeout starts at the first byte: a silent connection is only idle (its
    // timeout is a minute), so it is still open although older than both.
    assert!(open_now(&silent));

    // A head that arrives in pieces within the timeout is answered.
    let mut split = gw.connect().await;
    split.write_all(b"GET /healthz HT").await.unwrap();
    let r = exchange(&mut split, "TP/1.1\r\nhost: gateway").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    gw.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let mut upstream = HeldUpstream::start().await;
    let gw = Gateway::start(&[
        ("AIBRIDGE_HEADER_READ_TIMEOUT", "60s"),
        ("AIBRIDGE_IDLE_TIMEOUT", "400ms"),
        ("ANTHROPIC_BASE_URL", &upstream.base_url),
    ])
    .await;
    // A request in progress longer than the idle timeout (its upstream takes its time) is
    // not cut.
    let mut held = gw.connect().await;
    held.write_all(messages_request().as_bytes()).await.unwrap();
    upstream.arrived().await;

    // A connection that never sends a byte.
    let mut silent = gw.connect().await;
    let opened = Instant::now();
    // HTTP/1.1 keep-alive after one answered request.
    let mut kept = gw.connect().await;
    let r = exchange(&mut kept, HEALTHZ).await;
    assert_eq!(r.status, 200);
    let answered = Instant::now();
    assert!(closed_by_server(&mut silent, DEADLINE).await, "silent");
    assert!(opened.elapsed() >= idle, "{:?}", opened.elapsed());
    assert!(closed_by_server(&mut kept, DEADLINE).await, "keep-alive");
    assert!(answered.elapsed() >= idle, "{:?}", answered.elapsed());

    // h2c (prior knowledge) is served, and closed once idle.
    let tcp = gw.connect().await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::get("http://gateway/healthz")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    drop(resp);
    let idle_from = Instant::now();
    tokio::time::timeout(DEADLINE, driver)
        .await
        .expect("the h2c connection stayed open")
        .unwrap()
        .ok();
    assert!(idle_from.elapsed() >= idle, "{:?}", idle_from.elapsed());

    // The held request outlived every idle timeout above and still gets its answer.
    assert!(open_now(&held));
    upstream.release();
    let r = read_response(&mut held).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("held"), "{r:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_fails_after_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let gw = Gateway::start(&[
        ("AIBRIDGE_HEADER_READ_TIMEOUT", "60s"),
        ("AIBRIDGE_IDLE_TIMEOUT", "400ms"),
    ])
    .await;
    let mut stalled = held_request(&gw).await;
    let since = Instant::now();
    let r = read_response(&mut stalled).await;
    assert!(since.elapsed() >= idle, "{:?}", since.elapsed());
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("request body could not be read"), "{r:?}");
    gw.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    const CAP: usize = 4;
    let gw = Gateway::start(&[
        ("AIBRIDGE_HEADER_READ_TIMEOUT", "60s"),
        ("AIBRIDGE_IDLE_TIMEOUT", "60s"),
        ("AIBRIDGE_MAX_CONNECTIONS", "4"),
    ])
    .await;
    // Four idle connections: silent (the oldest), half a header, kept alive after a
    // request, silent.
    let mut oldest = gw.connect().await;
    let mut half = gw.connect().await;
    half.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut kept = gw.connect().await;
    assert_eq!(exchange(&mut kept, HEALTHZ).await.status, 200);
    let newest = gw.connect().await;

    // A fifth is served; the oldest idle one gave it its place.
    let r = get(&gw, "/healthz", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert!(closed_by_server(&mut oldest, DEADLINE).await, "oldest");
    assert!(open_now(&half) && open_now(&kept) && open_now(&newest));

    // The probe's case: hundreds of idle connections never starve /healthz, and no more
    // than the limit stay open.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(gw.connect().await);
    }
    let r = get(&gw, "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    // Evictions go oldest first: the /healthz connection took the place of the oldest of
    // the last four, the three newest stay.
    let mut all: Vec<TcpStream> = [half, kept, newest].into_iter().chain(flood).collect();
    let newest = all.split_off(all.len() - (CAP - 1));
    assert!(
        eventually(|| all.iter().all(|s| !open_now(s))).await,
        "{} of the {} older connections still open",
        all.iter().filter(|s| open_now(s)).count(),
        all.len()
    );
    assert!(newest.iter().all(open_now));
    gw.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_with_every_connection_busy_a_new_one_is_closed_at_once() {
    let gw = Gateway::start(&[
        ("AIBRIDGE_HEADER_READ_TIMEOUT", "60s"),
        ("AIBRIDGE_IDLE_TIMEOUT", "60s"),
        ("AIBRIDGE_MAX_CONNECTIONS", "2"),
    ])
    .await;
    let mut first = held_request(&gw).await;
    let second = held_request(&gw).await;

    let mut over = gw.connect().await;
    // Whatever the client sends, the server closes without an answer.
    let _ = over
        .write_all(format!("{HEALTHZ}\r\n\r\n").as_bytes())
        .await;
    assert!(
        closed_by_server(&mut over, DEADLINE).await,
        "over the limit"
    );
    assert!(open_now(&first) && open_now(&second));

    // Once a request ends its connection is idle, and the next one takes its place.
    first.write_all(b"{}").await.unwrap();
    assert_eq!(read_response(&mut first).await.status, 400);
    let r = get(&gw, "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    assert!(closed_by_server(&mut first, DEADLINE).await, "evicted");
    assert!(open_now(&second));
    drop(second);
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_lets_requests_finish() {
    let gw = Gateway::start(&[]).await;
    let mut idle = gw.connect().await;
    let mut held = held_request(&gw).await;
    let stopping = tokio::spawn(gw.stop());
    assert!(closed_by_server(&mut idle, DEADLINE).await, "idle");
    assert!(!stopping.is_finished(), "the server waits for the request");
    held.write_all(b"{}").await.unwrap();
    let r = read_response(&mut held).await;
    assert_eq!(r.status, 400);
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("the server did not stop")
        .unwrap();
}

//! `MockUpstream`: a real HTTP server on `127.0.0.1:0` that records every request and answers
//! with scripted responses, first in first out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Body of the `500` the mock answers when a request arrives and no response is queued.
pub const NO_RESPONSE_QUEUED: &str = "mock upstream: no response queued";

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query exactly as received (`/v1/messages?beta=true`).
    pub path_and_query: String,
    pub headers: HeaderMap,
    /// The request body bytes (everything received, even if the body failed mid-way).
    pub body: Bytes,
    /// `false` if reading the request body failed (the client aborted it).
    pub body_complete: bool,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: http::Version,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }

    /// The query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }

    /// The first value of a header as a string (`None` if absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "upstream request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct Shared {
    queue: Mutex<VecDeque<MockResponse>>,
    requests: Mutex<Vec<RecordedRequest>>,
    count: watch::Sender<usize>,
    unanswered: AtomicUsize,
}

/// A scripted upstream server. Dropping it stops the server and closes every connection.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and starts serving HTTP/1.1 and HTTP/2 (prior knowledge).
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock upstream local addr");
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            unanswered: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        MockUpstream { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a response. Requests are answered in arrival order with the queued responses in
    /// push order. With the queue empty the mock answers `500`, `x-should-retry: false`, body
    /// [`NO_RESPONSE_QUEUED`], and counts it in [`MockUpstream::unanswered`].
    pub fn push(&self, resp: MockResponse) {
        self.shared.queue.lock().unwrap().push_back(resp);
    }

    /// Everything received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Waits until at least `n` requests have arrived (body fully read), then returns all
    /// requests received so far. No polling: it waits on a watch channel.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<RecordedRequest> {
        let mut rx = self.shared.count.subscribe();
        rx.wait_for(|count| *count >= n)
            .await
            .expect("mock upstream state dropped");
        self.requests()
    }

    /// How many requests were answered with the "no response queued" 500.
    pub fn unanswered(&self) -> usize {
        self.shared.unanswered.load(Ordering::SeqCst)
    }

    /// How many queued responses have not been used yet.
    pub fn pending_responses(&self) -> usize {
        self.shared.queue.lock().unwrap().len()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&shared), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut buf = Vec::new();
    let mut body_complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Err(_) => {
                body_complete = false;
                break;
            }
        }
    }
    let recorded = RecordedRequest {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts.headers,
        body: Bytes::from(buf),
        body_complete,
        version: parts.version,
    };
    // Take the response in the same critical section as the recording, so that the n-th
    // request always gets the n-th queued response.
    let resp = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(recorded);
        let n = requests.len();
        let resp = shared.queue.lock().unwrap().pop_front();
        shared.count.send_replace(n);
        resp
    };
    let Some(resp) = resp else {
        shared.unanswered.fetch_add(1, Ordering::SeqCst);
        return Ok(
            MockResponse::raw(500, "text/plain; charset=utf-8", NO_RESPONSE_QUEUED)
                .header("x-should-retry", "false")
                .into_response(None),
        );
    };
    Ok(resp.into_http().await)
}

// ---------------------------------------------------------------------------------------------
// Responses

enum BodySpec {
    Fixed {
        bytes: Bytes,
        sizes: Option<Vec<usize>>,
        abort: bool,
        content_length: bool,
    },
    Streamed(mpsc::UnboundedReceiver<StreamMsg>),
}

enum StreamMsg {
    Data(Bytes),
    Abort,
}

/// A scripted response. Build it with [`MockResponse::json`], [`MockResponse::sse`],
/// [`MockResponse::raw`] or [`MockResponse::streamed`], then adjust it.
pub struct MockResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: BodySpec,
    gate: Option<oneshot::Receiver<()>>,
    closed_signal: Option<oneshot::Sender<()>>,
}

impl fmt::Debug for MockResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.body {
            BodySpec::Fixed { .. } => "fixed",
            BodySpec::Streamed(_) => "streamed",
        };
        f.debug_struct("MockResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &kind)
            .finish_non_exhaustive()
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or_else(|_| panic!("invalid status code {code}"))
}

impl MockResponse {
    /// A response with this status, `Content-Type` and body (sent with `Content-Length`).
    pub fn raw(status_code: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("content type"),
        );
        MockResponse {
            status: status(status_code),
            headers,
            body: BodySpec::Fixed {
                bytes: body.into(),
                sizes: None,
                abort: false,
                content_length: true,
            },
            gate: None,
            closed_signal: None,
        }
    }

    /// `Content-Type: application/json`, sent with `Content-Length`.
    pub fn json(status_code: u16, body: impl Into<Bytes>) -> Self {
        Self::raw(status_code, "application/json", body)
    }

    /// `200`, `Content-Type: text/event-stream`, sent with chunked transfer encoding (like
    /// real providers; no `Content-Length`).
    pub fn sse(body: impl Into<Bytes>) -> Self {
        let mut resp = Self::raw(200, "text/event-stream", body);
        if let BodySpec::Fixed { content_length, .. } = &mut resp.body {
            *content_length = false;
        }
        resp
    }

    /// Adds a header. `Content-Type` replaces the default; other names are appended (so a
    /// header may be given several values).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_str(value).expect("header value");
        if name == CONTENT_TYPE {
            self.headers.insert(name, value);
        } else {
            self.headers.append(name, value);
        }
        self
    }

    /// Sends the body in chunks of exactly these sizes (the last chunk is the remainder, if
    /// any), flushing each one separately. Sizes of 0 are ignored; sizes beyond the body's
    /// end are cut.
    pub fn chunked(mut self, chunk_sizes: Vec<usize>) -> Self {
        match &mut self.body {
            BodySpec::Fixed { sizes, .. } => *sizes = Some(chunk_sizes),
            BodySpec::Streamed(_) => panic!("chunked() does not apply to a streamed response"),
        }
        self
    }

    /// After the body bytes, aborts the connection instead of ending the body cleanly (the
    /// response then has no `Content-Length`, so the client sees an incomplete body).
    pub fn then_abort(mut self) -> Self {
        match &mut self.body {
            BodySpec::Fixed {
                abort,
                content_length,
                ..
            } => {
                *abort = true;
                *content_length = false;
            }
            BodySpec::Streamed(_) => {
                panic!("then_abort() does not apply to a streamed response; use abort()")
            }
        }
        self
    }

    /// A response whose body the test drives through the returned [`StreamController`]. The
    /// head (status, `Content-Type`, headers) is sent as soon as a request takes it.
    pub fn streamed(status_code: u16, content_type: &str) -> (Self, StreamController) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut resp = Self::raw(status_code, content_type, Bytes::new());
        resp.body = BodySpec::Streamed(rx);
        (resp, StreamController { tx })
    }

    /// Holds the response head until [`HeadGate::release`] is called (or the gate is dropped).
    /// Until then the client has received nothing; [`HeadGate::closed`] tells when the client
    /// gave up (connection closed).
    pub fn held(mut self) -> (Self, HeadGate) {
        let (release_tx, release_rx) = oneshot::channel();
        let (closed_tx, closed_rx) = oneshot::channel();
        self.gate = Some(release_rx);
        self.closed_signal = Some(closed_tx);
        (
            self,
            HeadGate {
                release: release_tx,
                closed: Mutex::new(Some(closed_rx)),
            },
        )
    }

    async fn into_http(mut self) -> Response<MockBody> {
        // Keeps the "closed" signal alive while waiting, then moves it into the body, so the
        // signal fires when hyper drops the future (client gone) or the body.
        let signal = self.closed_signal.take().map(DropSignal);
        if let Some(gate) = self.gate.take() {
            let _ = gate.await;
        }
        self.into_response(signal)
    }

    fn into_response(self, signal: Option<DropSignal>) -> Response<MockBody> {
        let body = match self.body {
            BodySpec::Fixed {
                bytes,
                sizes,
                abort,
                content_length,
            } => {
                let chunks = split_chunks(bytes, sizes);
                let exact_len = content_length.then(|| chunks.iter().map(|c| c.len() as u64).sum());
                MockBody {
                    chunks: chunks.into(),
                    abort,
                    rx: None,
                    exact_len,
                    yield_next: false,
                    aborting: false,
                    _signal: signal,
                }
            }
            BodySpec::Streamed(rx) => MockBody {
                chunks: VecDeque::new(),
                abort: false,
                rx: Some(rx),
                exact_len: None,
                yield_next: false,
                aborting: false,
                _signal: signal,
            },
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

fn split_chunks(mut bytes: Bytes, sizes: Option<Vec<usize>>) -> Vec<Bytes> {
    let mut out = Vec::new();
    for size in sizes.unwrap_or_default() {
        if bytes.is_empty() {
            break;
        }
        if size == 0 {
            continue;
        }
        out.push(bytes.split_to(size.min(bytes.len())));
    }
    if !bytes.is_empty() {
        out.push(bytes);
    }
    out
}

/// The client went away: the response body was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClosed;

impl fmt::Display for StreamClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock upstream: the response body was dropped (client gone)")
    }
}

impl std::error::Error for StreamClosed {}

/// Drives the body of a [`MockResponse::streamed`] response. Dropping it ends the body
/// cleanly, like [`StreamController::finish`].
#[derive(Debug)]
pub struct StreamController {
    tx: mpsc::UnboundedSender<StreamMsg>,
}

impl StreamController {
    /// Sends one chunk (one body frame, flushed on its own). Fails if the body was dropped.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), StreamClosed> {
        self.tx
            .send(StreamMsg::Data(chunk.into()))
            .map_err(|_| StreamClosed)
    }

    /// Ends the body cleanly.
    pub fn finish(self) {}

    /// Aborts the body after the chunks already sent (the connection is reset).
    pub fn abort(self) {
        let _ = self.tx.send(StreamMsg::Abort);
    }

    /// Resolves when the response body was dropped by the server, i.e. the client's connection
    /// closed (or, for a request that never took this response, the mock was dropped).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Whether the body has already been dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Controls a [`MockResponse::held`] response head.
#[derive(Debug)]
pub struct HeadGate {
    release: oneshot::Sender<()>,
    closed: Mutex<Option<oneshot::Receiver<()>>>,
}

impl HeadGate {
    /// Sends the response head (and then the body).
    pub fn release(self) {
        let _ = self.release.send(());
    }

    /// Resolves when the request holding this response is gone: the client closed the
    /// connection while waiting for the head. (Only meaningful before `release`.)
    pub async fn closed(&self) {
        let rx = self.closed.lock().unwrap().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }
}

struct DropSignal(oneshot::Sender<()>);

// ---------------------------------------------------------------------------------------------
// Body

/// The response body type: scripted chunks, or frames sent by a [`StreamController`].
pub struct MockBody {
    chunks: VecDeque<Bytes>,
    abort: bool,
    rx: Option<mpsc::UnboundedReceiver<StreamMsg>>,
    exact_len: Option<u64>,
    /// Return `Pending` once (after waking ourselves) before the next frame, so that hyper
    /// flushes what it has buffered: every chunk leaves in its own write.
    yield_next: bool,
    aborting: bool,
    _signal: Option<DropSignal>,
}

fn abort_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "mock upstream: aborted")
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.yield_next {
            this.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.aborting {
            return Poll::Ready(Some(Err(abort_error())));
        }
        if let Some(chunk) = this.chunks.pop_front() {
            this.yield_next = !this.chunks.is_empty() || this.abort;
            if this.chunks.is_empty() && this.abort {
                this.aborting = true;
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.abort {
            return Poll::Ready(Some(Err(abort_error())));
        }
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(StreamMsg::Data(chunk))) => {
                this.yield_next = true;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(StreamMsg::Abort)) => {
                // Flush what was sent before, then fail.
                this.aborting = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.rx = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && !self.abort && !self.aborting && self.rx.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

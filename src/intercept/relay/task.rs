//! The interception task's state (`Ctx`), the response head on its way to the client, and
//! how an exchange ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tokio::sync::{mpsc, oneshot, watch};

use crate::body::Body;
use crate::breaker::{Admitted, Key, Report};
use crate::error::{Flavor, set_interception_header};
use crate::intercept::StreamObserver;
use crate::intercept::adapter::Adapter;
use crate::intercept::emit::Emitter;
use crate::pipeline::Shared;
use crate::provider::{CredentialKind, Provider};
use crate::recorder::{Outcome, RecordId};

/// Largest SSE event the bridge accepts (resilience.md "Limits").
pub(crate) const MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;

/// Largest blocking upstream body.
pub(crate) const MAX_BLOCKING_BODY: usize = 64 * 1024 * 1024;

/// Everything the interception task needs.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) provider: Arc<dyn Provider>,
    /// Everything specific to the request's API.
    pub(crate) adapter: &'static dyn Adapter,
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
    /// The current upstream call counts as a breaker failure.
    pub(super) breaker_failure: bool,
    /// The breaker admission, while the interception calls the upstream.
    pub(super) admitted: Option<Admitted>,
    /// Responses: the interception's first upstream response id is the one the client
    /// sees, and the bridge remembers which last id it stands for (S20).
    pub(crate) presents_first_id: bool,
    /// The upstream call's number within the interception (a tool loop's iteration).
    pub(super) iteration: u32,
    /// When the current upstream call was sent (its response timeout covers a blocking
    /// body too).
    pub(super) call_started: Instant,
    /// Keep-alives to the streaming client while a tool loop runs tools and waits for the
    /// next iteration's first relayed bytes.
    #[cfg(feature = "mcp")]
    pub(super) keep_alive: Option<KeepAlive>,
}

impl Ctx {
    #[expect(
        clippy::too_many_arguments,
        reason = "plain constructor of the task's state"
    )]
    pub(crate) fn new(
        shared: Arc<Shared>,
        provider: Arc<dyn Provider>,
        adapter: &'static dyn Adapter,
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
            adapter,
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
            admitted: None,
            presents_first_id: false,
            iteration: 1,
            call_started: start,
            #[cfg(feature = "mcp")]
            keep_alive: None,
        }
    }
}

impl Ctx {
    /// Reports a finished upstream call that the interception follows with another (a tool
    /// loop's next iteration) to the breaker, and starts the next call's count afresh.
    #[cfg(feature = "mcp")]
    pub(super) fn call_finished(&mut self) {
        if let Some(a) = &self.admitted {
            a.note(self.report(), self.shared.metrics.as_ref());
        }
        self.breaker_failure = false;
        self.iteration += 1;
    }

    /// The current call's breaker outcome.
    pub(super) fn report(&self) -> Report {
        if self.breaker_failure {
            Report::Failure
        } else {
            Report::Success
        }
    }
}

/// The response head, until it is sent to the service future.
pub(super) struct Head {
    pub(super) tx: Option<oneshot::Sender<Response<Body>>>,
    /// The streamed body's channel, once there is one (weak: it must not keep the body
    /// open).
    body: Option<mpsc::WeakSender<Bytes>>,
}

impl Head {
    pub(super) fn new(tx: oneshot::Sender<Response<Body>>) -> Self {
        Self {
            tx: Some(tx),
            body: None,
        }
    }

    /// Resolves when the client is gone: the service future was dropped before the head
    /// was sent, or afterwards the streamed body (never for a sent blocking head).
    pub(super) async fn closed(&mut self) {
        match self.tx.as_mut() {
            Some(tx) => tx.closed().await,
            None => match self.body.as_ref().and_then(mpsc::WeakSender::upgrade) {
                Some(body) => body.closed().await,
                None => std::future::pending().await,
            },
        }
    }

    /// From now on the client's body is fed through `body`.
    pub(super) fn streams_to(&mut self, body: &mpsc::Sender<Bytes>) {
        self.body = Some(body.downgrade());
    }

    /// Sends the head; false if the client is gone.
    pub(super) fn send(&mut self, resp: Response<Body>) -> bool {
        self.tx.take().is_some_and(|tx| tx.send(resp).is_ok())
    }

    pub(super) fn is_sent(&self) -> bool {
        self.tx.is_none()
    }

    /// Whether the client left before its head was sent.
    pub(super) fn is_abandoned(&self) -> bool {
        self.tx.as_ref().is_some_and(oneshot::Sender::is_closed)
    }
}

/// Resolves when the bridge cancels in-flight work (shutdown deadline).
pub(super) async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How an exchange ended.
pub(super) type End = (Outcome, Option<String>);

pub(super) fn failed(msg: impl Into<String>) -> End {
    (Outcome::Failed, Some(msg.into()))
}

pub(super) fn client_gone() -> End {
    (Outcome::Cancelled, Some("client disconnected".to_owned()))
}

pub(super) fn shutting_down() -> End {
    (Outcome::Cancelled, Some("bridge shutting down".to_owned()))
}

/// Sends a keep-alive to the streaming client every `every` until dropped (D11: while
/// tools run and until the next iteration relays something).
#[cfg(feature = "mcp")]
pub(super) struct KeepAlive(tokio::task::JoinHandle<()>);

#[cfg(feature = "mcp")]
impl KeepAlive {
    pub(super) fn start(tx: mpsc::Sender<Bytes>, bytes: Bytes, every: Duration) -> Self {
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

/// How the relay loop stopped.
pub(super) enum Stop {
    ClientGone,
    /// The client accepted no bytes for the write-stall timeout.
    ClientStalled,
    Shutdown,
    Eof,
    Fail(Failure),
}

/// Why a relayed stream failed, rendered to the client's terminal event and the end record
/// in one place ([`Failure::message`]).
pub(super) enum Failure {
    /// The upstream stream broke or sent what the bridge cannot read: `aibridge: upstream
    /// stream failed: {reason}`.
    Upstream(String),
    /// A message the bridge already made whole (a later upstream call's error, an internal
    /// error; both only inside a tool loop).
    #[cfg_attr(
        not(feature = "mcp"),
        expect(dead_code, reason = "made by the tool loop only")
    )]
    Bridge(String),
    /// A later upstream call of a tool loop answered an error status: its type and message
    /// go to the client in the API's terminal event.
    #[cfg(feature = "mcp")]
    Answered(crate::intercept::UpstreamError),
}

impl Failure {
    /// The internal error of a state the task should never be in.
    #[cfg(feature = "mcp")]
    pub(super) fn internal() -> Stop {
        Stop::Fail(Self::Bridge("aibridge: internal error".to_owned()))
    }

    /// The message of the terminal event and of the end record.
    pub(super) fn message(self) -> String {
        match self {
            Self::Upstream(reason) => format!("aibridge: upstream stream failed: {reason}"),
            Self::Bridge(message) => message,
            #[cfg(feature = "mcp")]
            Self::Answered(error) => error.text,
        }
    }
}

/// A relayed response: upstream status, relayed headers, the interception id.
pub(super) fn response(
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
    id: RecordId,
) -> Response<Body> {
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

/// Whole seconds for messages, rounded up (a 300 ms timeout reads "1s", not "0s").
pub(super) fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

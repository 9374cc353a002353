//! The gateway's HTTP server: an accept loop on hyper-util's auto builder (HTTP/1.1 and
//! h2c, upgrades, `TCP_NODELAY`) with a header-read timeout, an idle timeout (which also
//! bounds the gaps in a request body), a connection limit and graceful shutdown.
//!
//! `axum::serve` has none of the first three, so one client could hold thousands of
//! connections that never send a byte (or half a header), and under a low file descriptor
//! limit that starved `/healthz` and every request.
//!
//! At the connection limit, a new connection takes the place of the connection idle for
//! the longest time (no request in progress: waiting for its next request, or for the rest
//! of a header), which is closed. When every connection has a request in progress, the new
//! connection is closed at once: the client sees a closed connection and retries (the
//! official SDKs retry connection errors with back-off), where waiting in the accept
//! backlog would leave it, and a load balancer's health check, hanging with no answer.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

use crate::conn::{Conn, Expiry, Table, WatchedIo};

/// How long the accept loop waits for an evicted connection to give back its slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// After the server asked a connection to close (shutdown, expiry), how long it may stay
/// open with no request in progress (an HTTP/2 client that never acknowledges the GOAWAY)
/// before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The pause after an accept error other than a failed handshake (e.g. out of file
/// descriptors: an idle connection is evicted first, so the pause is short).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The server's protections against slow and idle clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// From the first byte of a request head to its last.
    pub(crate) header_read_timeout: Duration,
    /// Longest time a connection may stay open with no request in progress.
    pub(crate) idle_timeout: Duration,
    /// Most connections open at once.
    pub(crate) max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its requests, and returns once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let table = Arc::new(Table::default());
    let (stop_tx, stop_rx) = watch::channel(());
    // Every connection task holds a receiver; `closed()` resolves when the last one ends.
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                table.evict_idle();
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(slot) = admit(&slots, &table).await else {
            tracing::debug!(
                max_connections = limits.max_connections,
                "connection refused: at the connection limit and none is idle"
            );
            continue;
        };
        // TCP_NODELAY: without it, Nagle's algorithm holds back the small writes of a
        // relayed SSE stream (and of small JSON answers) until the client's delayed ACK,
        // up to 40 ms per stall on Linux.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn = table.open();
        let task = connection(
            tcp,
            conn,
            app.clone(),
            limits,
            stop_rx.clone(),
            table.clone(),
        );
        let done = done_rx.clone();
        tokio::spawn(async move {
            task.await;
            drop((slot, done));
        });
    }
    drop(listener);
    drop(stop_tx);
    drop(done_rx);
    done_tx.closed().await;
}

/// A slot for a new connection: a free one, or the one of the connection idle the longest,
/// which is told to close. `None` when every connection has a request in progress.
async fn admit(slots: &Arc<Semaphore>, table: &Table) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    if !table.evict_idle() {
        return None;
    }
    tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Serves one connection until it closes, the server stops, or it expires.
async fn connection(
    tcp: TcpStream,
    conn: Arc<Conn>,
    app: axum::Router,
    limits: Limits,
    mut stop: watch::Receiver<()>,
    table: Arc<Table>,
) {
    let io = TokioIo::new(WatchedIo::new(tcp, conn.clone()));
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        // Dropped with the response body (or with this future): the request has ended.
        let guard = tracked.begin(req.version());
        // A request body that stops arriving for the idle timeout fails (400 from the
        // bridge) instead of holding its connection busy, and out of eviction, forever.
        let req = req.map(|body| TimeoutBody::new(limits.idle_timeout, body));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                })
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // As `axum::serve`: the CONNECT protocol for HTTP/2 upgrades.
    builder.http2().enable_connect_protocol();
    let mut http = pin!(builder.serve_connection_with_upgrades(io, service));
    let why = tokio::select! {
        result = http.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended");
            }
            table.closed(&conn);
            return;
        }
        why = conn.expired(limits.header_read_timeout, limits.idle_timeout) => Some(why),
        _ = stop.changed() => None,
    };
    match why {
        Some(Expiry::Idle) => tracing::trace!("closing an idle connection"),
        Some(Expiry::HeaderRead) => tracing::debug!(
            timeout_ms = limits.header_read_timeout.as_millis(),
            "closing a connection: request head not received in time"
        ),
        Some(Expiry::Evicted) => tracing::debug!(
            max_connections = limits.max_connections,
            "closing an idle connection to make room for a new one"
        ),
        None => {}
    }
    // A slow head or an eviction (nothing in progress): dropped at once, as hyper's own
    // header timeout does; a graceful close would wait for the rest of the head.
    if matches!(why, Some(Expiry::HeaderRead | Expiry::Evicted)) && conn.is_idle() {
        table.closed(&conn);
        return;
    }
    // Otherwise requests in progress finish (the bridge's shutdown bounds them); then
    // HTTP/1.1 closes, HTTP/2 sends GOAWAY. A connection that stays open without a request
    // past the grace period is dropped.
    http.as_mut().graceful_shutdown();
    tokio::select! {
        result = http.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended");
            }
        }
        () = conn.quiet_for(CLOSE_GRACE) => {}
    }
    table.closed(&conn);
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

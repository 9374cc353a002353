//! What the server knows about one connection: the requests in progress, since when it has
//! been idle, whether a request head is being read; and the table of open connections the
//! accept loop evicts idle ones from.
//!
//! hyper's own header-read timer also runs while a kept-alive HTTP/1.1 connection waits for
//! its next request, which would tie the idle timeout to the header-read timeout; and hyper
//! has no idle timeout at all. So both are measured here, for HTTP/1.1 and h2c alike:
//!
//! - a connection with no request in progress is *idle*; it is closed once idle for the
//!   idle timeout;
//! - the first byte that arrives on an idle HTTP/1.1 connection starts a request head; if no
//!   request has started within the header-read timeout, the connection is closed (on h2c,
//!   after its first request, bytes arrive while idle for pings and window updates: there
//!   only the idle timeout applies).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Why a connection is closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No request in progress for the idle timeout.
    Idle,
    /// A request head was started and not finished within the header-read timeout.
    HeaderRead,
    /// Closed (idle) to make room for a new connection at the connection limit.
    Evicted,
}

/// One connection's activity.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests whose response has not ended (or been dropped) yet.
    requests: usize,
    /// When the connection last became idle: accepted, or its last response ended.
    idle_since: Instant,
    /// When the first byte arrived after `idle_since`, on HTTP/1.1.
    head_since: Option<Instant>,
    /// An HTTP/2 request was seen: idle bytes are frames, not a request head.
    h2: bool,
}

/// One open connection, shared by its task, its service, its I/O and the table.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    activity: watch::Sender<Activity>,
    evict: Notify,
}

/// Ends its request when dropped (with the response body, or with the request's future).
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Conn>);

/// The open connections, for eviction.
#[derive(Debug, Default)]
pub(crate) struct Table {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// A `TcpStream` that reports the bytes it reads to its [`Conn`].
#[derive(Debug)]
pub(crate) struct WatchedIo {
    io: TcpStream,
    conn: Arc<Conn>,
}

// === impl Conn ===

impl Conn {
    /// A request started; it ends when the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>, version: http::Version) -> RequestGuard {
        self.activity.send_modify(|a| {
            a.requests += 1;
            a.head_since = None;
            a.h2 |= version == http::Version::HTTP_2;
        });
        RequestGuard(self.clone())
    }

    /// Resolves when the connection should be closed: idle for `idle`, a request head
    /// unfinished after `header_read`, or evicted. Never while a request is in progress.
    pub(crate) async fn expired(&self, header_read: Duration, idle: Duration) -> Expiry {
        let mut rx = self.activity.subscribe();
        loop {
            let a = *rx.borrow_and_update();
            let deadline = match a {
                Activity { requests: 1.., .. } => None,
                Activity {
                    head_since: Some(t),
                    ..
                } => Some((t + header_read, Expiry::HeaderRead)),
                Activity { idle_since, .. } => Some((idle_since + idle, Expiry::Idle)),
            };
            let timer = async {
                match deadline {
                    Some((at, why)) => {
                        tokio::time::sleep_until(at).await;
                        why
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The sender lives in `self`: unreachable, but never spin.
                        return std::future::pending().await;
                    }
                }
                why = timer => return why,
                () = self.evict.notified() => return Expiry::Evicted,
            }
        }
    }

    /// Resolves once no request has been in progress for `grace`, counted from now.
    pub(crate) async fn quiet_for(&self, grace: Duration) {
        let start = Instant::now();
        let mut rx = self.activity.subscribe();
        loop {
            let a = *rx.borrow_and_update();
            let timer = async {
                if a.requests == 0 {
                    tokio::time::sleep_until(a.idle_since.max(start) + grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                () = timer => return,
            }
        }
    }

    fn end(&self) {
        self.activity.send_modify(|a| {
            a.requests = a.requests.saturating_sub(1);
            if a.requests == 0 {
                a.idle_since = Instant::now();
                a.head_since = None;
            }
        });
    }

    /// Bytes arrived from the client.
    fn read_some(&self) {
        let starts_head = {
            let a = self.activity.borrow();
            a.requests == 0 && a.head_since.is_none() && !a.h2
        };
        if starts_head {
            self.activity.send_modify(|a| {
                if a.requests == 0 && a.head_since.is_none() {
                    a.head_since = Some(Instant::now());
                }
            });
        }
    }

    /// No request in progress.
    pub(crate) fn is_idle(&self) -> bool {
        self.activity.borrow().requests == 0
    }

    /// Since when the connection has been idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        let a = self.activity.borrow();
        (a.requests == 0).then_some(a.idle_since)
    }
}

// === impl RequestGuard ===

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

// === impl Table ===

impl Table {
    /// A new open connection.
    pub(crate) fn open(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (activity, _) = watch::channel(Activity {
            requests: 0,
            idle_since: Instant::now(),
            head_since: None,
            h2: false,
        });
        let conn = Arc::new(Conn {
            id,
            activity,
            evict: Notify::new(),
        });
        self.lock().insert(id, conn.clone());
        conn
    }

    /// The connection's task ended.
    pub(crate) fn closed(&self, conn: &Conn) {
        self.lock().remove(&conn.id);
    }

    /// Tells the connection idle for the longest time to close; `false` if none is idle.
    /// It leaves the table at once, so it is not picked twice.
    pub(crate) fn evict_idle(&self) -> bool {
        let mut open = self.lock();
        let oldest = open
            .values()
            .filter_map(|c| c.idle_since().map(|t| (t, c.id)))
            .min();
        let Some(conn) = oldest.and_then(|(_, id)| open.remove(&id)) else {
            return false;
        };
        conn.evict.notify_one();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl WatchedIo ===

impl WatchedIo {
    pub(crate) fn new(io: TcpStream, conn: Arc<Conn>) -> Self {
        Self { io, conn }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        poll
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

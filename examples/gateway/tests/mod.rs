//! The gateway over real TCP on 127.0.0.1: the application `main` builds (bridge, SQLite
//! recorder in a temporary directory, routes) behind the server `main` runs, configured by
//! the same variables. Every wait is bounded; none is a sleep.

mod metrics_token;
mod policy;
mod server;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;

/// The longest any test waits for the server to do something.
const DEADLINE: Duration = Duration::from_secs(10);

/// A gateway serving on an ephemeral loopback port until dropped.
pub(super) struct Gateway {
    pub(super) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway with these variables (plus a fresh SQLite database and
    /// unreachable loopback upstreams).
    pub(super) async fn start(vars: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("gw.db").display());
        let mut env: HashMap<String, String> = [
            ("AIBRIDGE_DATABASE_URL", db.as_str()),
            // Port 9 (discard) on loopback: nothing here may reach a real provider.
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
            ("COPILOT_BASE_URL", "http://127.0.0.1:9"),
        ]
        .into_iter()
        .chain(vars.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert("AIBRIDGE_LISTEN".to_owned(), "127.0.0.1:0".to_owned());
        let cfg = Config::from_lookup(&|k| env.get(k).cloned()).unwrap();
        let (_bridge, app) = crate::prepare(&cfg).await.unwrap();
        let listener = TcpListener::bind(cfg.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::server::serve(listener, app, cfg.limits, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub(super) async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Stops accepting and waits (bounded) until every connection is closed.
    pub(super) async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the server did not stop")
                .unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// An upstream on loopback that takes one request and answers it (400, relayed as is by the
/// bridge) only when released: the gateway's request stays in progress until then.
pub(super) struct HeldUpstream {
    pub(super) base_url: String,
    arrived: Option<oneshot::Receiver<()>>,
    release: Option<oneshot::Sender<()>>,
}

impl HeldUpstream {
    pub(super) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (arrived_tx, arrived) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the bridge closed before sending a request");
                buf.extend_from_slice(&chunk[..n]);
            }
            let _ = arrived_tx.send(());
            let _ = released.await;
            let body =
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"held"}}"#;
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            // Hold the connection until the bridge closes it.
            let _ = s.read(&mut [0u8; 1]).await;
        });
        Self {
            base_url,
            arrived: Some(arrived),
            release: Some(release),
        }
    }

    /// Waits (bounded) until the request reached the upstream.
    pub(super) async fn arrived(&mut self) {
        let arrived = self.arrived.take().expect("once");
        tokio::time::timeout(DEADLINE, arrived)
            .await
            .expect("no request reached the upstream")
            .unwrap();
    }

    pub(super) fn release(&mut self) {
        let _ = self.release.take().expect("once").send(());
    }
}

/// One HTTP/1.1 response read off a connection.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) head: String,
    pub(super) body: String,
}

/// Sends `head` (request line and headers, without the blank line) and reads one response
/// (`Content-Length` framed), leaving the connection open.
pub(super) async fn exchange(s: &mut TcpStream, head: &str) -> Response {
    s.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(s).await
}

/// Reads one response, framed by `Content-Length` or chunked (the chunk framing is kept in
/// `body`).
pub(super) async fn read_response(s: &mut TcpStream) -> Response {
    let read = async {
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a response head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v == "chunked");
        let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = buf[end..].to_vec();
        while if chunked {
            !body.ends_with(b"0\r\n\r\n")
        } else {
            body.len() < len
        } {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed in a response body");
            body.extend_from_slice(&chunk[..n]);
        }
        Response {
            status,
            head,
            body: String::from_utf8(body).unwrap(),
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("no response in time")
}

/// A `GET path` on a new connection with these extra header lines.
pub(super) async fn get(gw: &Gateway, path: &str, headers: &[&str]) -> Response {
    let mut s = gw.connect().await;
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: gateway");
    for h in headers {
        head.push_str("\r\n");
        head.push_str(h);
    }
    exchange(&mut s, &head).await
}

/// Waits until the server closes `s` (EOF or reset; any bytes it still sends are skipped),
/// at most `within`. `true` if it did.
pub(super) async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

/// Whether `s` is open right now, as far as this end knows (no EOF, no reset pending).
pub(super) fn open_now(s: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match s.try_read(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Ok(0) => false,
        Ok(_) => panic!("unexpected bytes from the server"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
        Err(e) => panic!("read: {e}"),
    }
}

/// Polls `done` (bounded by [`DEADLINE`]) until it holds; `false` if it never did.
pub(super) async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! A do-nothing reverse proxy, the floor of the load benchmark (`scripts/bench.sh`): hyper
//! server in, hyper client out, bodies streamed through untouched, no parsing, no
//! recording. Whatever aibridge adds beyond this proxy is its own cost; what this proxy
//! adds over direct is the price of any extra HTTP hop on the machine.
//!
//! ```text
//! NULL_PROXY_UPSTREAM=http://127.0.0.1:9000 cargo run --release --example null_proxy
//! ```
//!
//! Prints `null proxy listening on http://ADDR` (`NULL_PROXY_LISTEN`, default
//! `127.0.0.1:0`). Requests keep their path and query; the `/api/v2/aibridge/anthropic`,
//! `/api/v2/aibridge/openai` prefixes are not understood (point clients at the proxy as at
//! the upstream).
#![allow(
    clippy::print_stdout,
    reason = "the proxy prints its listening line on stdout"
)]

use std::net::SocketAddr;

use http::{Request, Response, Uri, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<bytes::Bytes, hyper::Error>;

#[expect(
    clippy::disallowed_methods,
    reason = "the proxy is configured by its environment"
)]
fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() {
    let listen: SocketAddr = env("NULL_PROXY_LISTEN", "127.0.0.1:0")
        .parse()
        .expect("NULL_PROXY_LISTEN");
    let upstream: Uri = env("NULL_PROXY_UPSTREAM", "http://127.0.0.1:9000")
        .parse()
        .expect("NULL_PROXY_UPSTREAM");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "null proxy listening on http://{}",
                listener.local_addr().expect("local address")
            );
            let _ = out.flush();
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(connector);
        let authority = upstream.authority().expect("upstream authority").clone();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let client = client.clone();
            let authority = authority.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    let authority = authority.clone();
                    async move {
                        let (mut parts, body) = req.into_parts();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_owned();
                        parts.uri = Uri::builder()
                            .scheme("http")
                            .authority(authority.clone())
                            .path_and_query(path)
                            .build()
                            .expect("upstream uri");
                        parts.headers.remove(header::HOST);
                        let resp = match client.request(Request::from_parts(parts, body)).await {
                            Ok(r) => r.map(BodyExt::boxed),
                            Err(_) => {
                                let mut r = Response::new(
                                    http_body_util::Empty::new()
                                        .map_err(|never| match never {})
                                        .boxed(),
                                );
                                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                                r
                            }
                        };
                        Ok::<Response<Body>, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

//! The bridge mounted in real servers over loopback: axum's `nest_service` and a plain
//! hyper server with `path_prefix`.

mod common;
mod support;

use std::net::SocketAddr;

use aibridge::Actor;
use common::*;
use http_body_util::{BodyExt, Full};
use support::{MockResponse, MockUpstream, fixture};

const REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hello"}]}"#;

async fn http_post(addr: SocketAddr, path: &str, body: &'static str) -> (u16, bytes::Bytes) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn works_under_axum_nest_service() {
    let upstream = MockUpstream::start().await;
    let sse = fixture("anthropic/text_stream.upstream.sse");
    upstream.push(MockResponse::sse(sse.clone()).chunked(vec![17; sse.len() / 17 + 1]));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let app = axum::Router::new()
        .nest_service("/api/v2/aibridge", bridge)
        .layer(axum::middleware::from_fn(
            |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
                req.extensions_mut().insert(Actor::new("bob"));
                next.run(req).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (status, body) = http_post(
        addr,
        "/api/v2/aibridge/anthropic/v1/messages?beta=true",
        REQ,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, sse, "byte-faithful through a real server");
    assert_eq!(
        upstream.requests()[0].path_and_query,
        "/v1/messages?beta=true"
    );
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions()[0].initiator_id, "bob");
    let (status, _) = http_post(addr, "/api/v2/aibridge/unknown/x", REQ).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn works_under_a_plain_hyper_server_with_path_prefix() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let upstream = MockUpstream::start().await;
    let body = fixture("anthropic/text_blocking.upstream.json");
    upstream.push(MockResponse::json(200, body.clone()));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.path_prefix("/api/v2/aibridge"));
    // The host's "authentication": a tower layer that inserts the actor.
    let svc = tower::ServiceBuilder::new()
        .map_request(|mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Actor::new("carol"));
            req
        })
        .service(bridge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let (status, got) = http_post(
        addr,
        "/api/v2/aibridge/anthropic/v1/messages",
        r#"{"model":"m","messages":[]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    let (status, got) = http_post(addr, "/elsewhere/anthropic/v1/messages", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(
        got,
        "route not supported: POST /elsewhere/anthropic/v1/messages\n".as_bytes()
    );
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions()[0].initiator_id, "carol");
}

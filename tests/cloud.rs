//! Claude through AWS Bedrock and Google Vertex AI (cloud-anthropic.md), over real
//! loopback HTTP to mock clouds that check what the real ones would: the path per model and
//! stream flag, the edited body, no Anthropic credentials, a SigV4 signature recomputed
//! here independently of the bridge's signer, the Google token exchange (a JWT assertion
//! verified with the service account's public key), EventStream answers split into
//! one-byte chunks, exceptions mid-stream, throttling with retries, errors in the
//! Anthropic shape, records with the mapped model, `/v1/models` and count_tokens.

mod common;
mod support;

use std::time::Duration;

use aibridge::provider::{Bedrock, ModelMap, RetryConfig, Secret, Vertex};
use aibridge::recorder::Outcome;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine as _;
use common::{bridge_with, ended, get, post, send};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use support::{MockResponse, MockUpstream, RecordedRequest};

const ACCESS_KEY: &str = "AKIACLOUDTESTKEY7Q2W";
const SECRET_KEY: &str = "cloudSECRETaccessKEY/9z8x7c6v5b4n3m2";
const SESSION_TOKEN: &str = "cloudSESSIONtoken-FQoGZXIvYXdzEJr";
const REGION: &str = "us-west-2";
const MAIN: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const SMALL: &str = "anthropic.claude-haiku-4-5-20251001-v1:0";
const ARN: &str = "arn:aws:bedrock:us-west-2:111122223333:inference-profile/us.anthropic.claude-opus-4-5-20251101-v1:0";

const BLOCKING: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":10000,"thinking":{"type":"adaptive"},"metadata":{"user_id":"u1"},"messages":[{"role":"user","content":"say hello"}]}"#;
const STREAMING: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hello"}]}"#;
const ANSWER: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":11,"output_tokens":7}}"#;

const EVENTS: [&str; 6] = [
    r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":13,"output_tokens":1}}}"#,
    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hé"}}"#,
    r#"{"type":"content_block_stop","index":0}"#,
    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
    r#"{"type":"message_stop"}"#,
];

fn frame(msg: Message) -> Vec<u8> {
    let mut out = Vec::new();
    write_message_to(&msg, &mut out).unwrap();
    out
}

fn chunk(event: &str) -> Vec<u8> {
    let payload = serde_json::json!({
        "bytes": base64::engine::general_purpose::STANDARD.encode(event),
    });
    frame(
        Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("chunk".into()),
            )),
    )
}

fn exception(kind: &str, message: &str) -> Vec<u8> {
    frame(
        Message::new(format!(r#"{{"message":"{message}"}}"#).into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("exception".into()),
            ))
            .add_header(Header::new(
                ":exception-type",
                HeaderValue::String(kind.to_owned().into()),
            )),
    )
}

fn event_stream(body: Vec<u8>) -> MockResponse {
    let n = body.len();
    MockResponse::raw(200, "application/vnd.amazon.eventstream", body).chunked(vec![1; n])
}

fn expected_sse(events: &[&str]) -> String {
    events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap())
        })
        .collect()
}

fn bedrock(base: &str) -> Bedrock {
    Bedrock::new(REGION)
        .with_base_url(base.parse().unwrap())
        .with_static_credentials(
            ACCESS_KEY,
            Secret::new(SECRET_KEY),
            Some(Secret::new(SESSION_TOKEN)),
        )
        .with_models(
            ModelMap::new()
                .with_glob("claude-opus-*", ARN)
                .with_pair(MAIN, SMALL),
        )
        .with_retry(RetryConfig::default().with_max_retries(0))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Recomputes the request's SigV4 signature from what the mock received (AWS's algorithm,
/// written here without the bridge's signer) and checks the Authorization header.
fn check_sigv4(req: &RecordedRequest) {
    let auth = req.header("authorization").expect("authorization");
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .expect("sigv4");
    let (credential, rest) = rest.split_once(", SignedHeaders=").unwrap();
    let (signed, signature) = rest.split_once(", Signature=").unwrap();
    let amz_date = req.header("x-amz-date").expect("x-amz-date");
    let date = &amz_date[..8];
    let scope = format!("{date}/{REGION}/bedrock/aws4_request");
    assert_eq!(credential, format!("{ACCESS_KEY}/{scope}"));
    for must in ["host", "x-amz-date", "x-amz-security-token"] {
        assert!(
            signed.split(';').any(|h| h == must),
            "{must} not signed: {signed}"
        );
    }
    // Every service but S3 signs the path URI-encoded twice.
    let path: String = req
        .path()
        .split('/')
        .map(|seg| seg.replace('%', "%25"))
        .collect::<Vec<_>>()
        .join("/");
    let headers: String = signed
        .split(';')
        .map(|h| format!("{h}:{}\n", req.header(h).unwrap().trim()))
        .collect();
    let canonical = format!(
        "{}\n{path}\n{}\n{headers}\n{signed}\n{}",
        req.method,
        req.query().unwrap_or(""),
        hex::encode(Sha256::digest(&req.body)),
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), date);
    let k = hmac(&k, REGION);
    let k = hmac(&k, "bedrock");
    let k = hmac(&k, "aws4_request");
    assert_eq!(hex::encode(hmac(&k, &to_sign)), signature, "{canonical}");
}

fn with_beta(
    mut req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req.headers_mut().insert(
        "anthropic-beta",
        "interleaved-thinking-2025-05-14, made-up-2099-01-01,context-management-2025-06-27"
            .parse()
            .unwrap(),
    );
    req.headers_mut().insert(
        "x-api-key",
        "sk-client-key-should-not-leave".parse().unwrap(),
    );
    req
}

#[tokio::test]
async fn bedrock_blocking_call_is_edited_signed_and_recorded_with_the_mapped_model() {
    let cloud = MockUpstream::start().await;
    cloud.push(MockResponse::json(200, ANSWER));
    let (bridge, rec) = bridge_with(|b| b.provider(bedrock(&cloud.base_url())));
    let resp = send(&bridge, with_beta(post("/bedrock/v1/messages", BLOCKING))).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, ANSWER.as_bytes());
    let req = &cloud.requests()[0];
    assert_eq!(
        req.path(),
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    assert_eq!(
        std::str::from_utf8(&req.body).unwrap(),
        r#"{"max_tokens":10000,"thinking":{"type":"enabled","budget_tokens":8000},"messages":[{"role":"user","content":"say hello"}],"anthropic_beta":["interleaved-thinking-2025-05-14","context-management-2025-06-27"],"anthropic_version":"bedrock-2023-05-31"}"#
    );
    for gone in ["x-api-key", "anthropic-version", "anthropic-beta"] {
        assert!(req.header(gone).is_none(), "{gone} sent to AWS");
    }
    assert_eq!(req.header("x-amz-security-token"), Some(SESSION_TOKEN));
    check_sigv4(req);
    ended(&rec, 1).await;
    let i = &rec.interceptions()[0];
    assert_eq!(i.model, MAIN);
    assert_eq!(i.provider_name, "bedrock");
    let t = &rec.token_usages()[0];
    assert_eq!((t.input_tokens, t.output_tokens), (11, 7));
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Completed);
}

#[tokio::test]
async fn bedrock_arn_and_haiku_mapping_and_a_tampered_signature_is_caught() {
    let cloud = MockUpstream::start().await;
    cloud.push(MockResponse::json(200, ANSWER));
    cloud.push(MockResponse::json(200, ANSWER));
    let (bridge, rec) = bridge_with(|b| b.provider(bedrock(&cloud.base_url())));
    let opus = BLOCKING.replace("claude-sonnet-4-5", "claude-opus-4-5");
    let haiku = BLOCKING.replace("claude-sonnet-4-5", "claude-3-5-haiku-latest");
    assert_eq!(
        send(&bridge, post("/bedrock/v1/messages", opus))
            .await
            .status,
        200
    );
    assert_eq!(
        send(&bridge, post("/bedrock/v1/messages", haiku))
            .await
            .status,
        200
    );
    let reqs = cloud.requests();
    assert_eq!(
        reqs[0].path(),
        "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A111122223333%3Ainference-profile%2Fus.anthropic.claude-opus-4-5-20251101-v1%3A0/invoke"
    );
    assert_eq!(
        reqs[1].path(),
        "/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
    );
    check_sigv4(&reqs[0]);
    check_sigv4(&reqs[1]);
    // The recomputation fails when one byte of the signed body changes.
    let mut tampered = reqs[1].clone();
    let text = std::str::from_utf8(&reqs[1].body)
        .unwrap()
        .replace("say hello", "say jello");
    assert_ne!(text.as_bytes(), &reqs[1].body[..]);
    tampered.body = bytes::Bytes::from(text);
    assert!(std::panic::catch_unwind(|| check_sigv4(&tampered)).is_err());
    ended(&rec, 2).await;
    let models: Vec<String> = rec.interceptions().into_iter().map(|i| i.model).collect();
    assert!(
        models.contains(&ARN.to_owned()) && models.contains(&SMALL.to_owned()),
        "{models:?}"
    );
}

#[tokio::test]
async fn bedrock_event_stream_in_one_byte_chunks_becomes_the_anthropic_sse() {
    let cloud = MockUpstream::start().await;
    let body: Vec<u8> = EVENTS.iter().flat_map(|e| chunk(e)).collect();
    cloud.push(event_stream(body));
    let (bridge, rec) = bridge_with(|b| b.provider(bedrock(&cloud.base_url())));
    let resp = send(&bridge, post("/bedrock/v1/messages", STREAMING)).await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(resp.text(), expected_sse(&EVENTS));
    let req = &cloud.requests()[0];
    assert_eq!(
        req.path(),
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    );
    assert!(req.json().get("stream").is_none());
    check_sigv4(req);
    ended(&rec, 1).await;
    let t = &rec.token_usages();
    assert_eq!(t.iter().map(|t| t.input_tokens).sum::<u64>(), 13);
    assert_eq!(t.iter().map(|t| t.output_tokens).sum::<u64>(), 5);
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Completed);
}

#[tokio::test]
async fn bedrock_exception_mid_stream_ends_with_the_anthropic_error_event() {
    let cloud = MockUpstream::start().await;
    let mut body: Vec<u8> = EVENTS[..3].iter().flat_map(|e| chunk(e)).collect();
    body.extend(exception("modelStreamErrorException", "model failed"));
    cloud.push(event_stream(body));
    let (bridge, rec) = bridge_with(|b| b.provider(bedrock(&cloud.base_url())));
    let resp = send(&bridge, post("/bedrock/v1/messages", STREAMING)).await;
    let text = resp.text();
    assert!(text.starts_with(&expected_sse(&EVENTS[..3])), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\n"), "{last}");
    assert!(last.contains(r#""type":"api_error""#), "{last}");
    assert!(
        last.contains("modelStreamErrorException: model failed"),
        "{last}"
    );
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn bedrock_throttling_is_retried_then_mapped() {
    let cloud = MockUpstream::start().await;
    let throttled = || {
        MockResponse::json(
            429,
            r#"{"message":"Too many requests, please wait before trying again."}"#,
        )
        .header(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        )
    };
    // A throttling exception as the stream's first message is retried too.
    cloud.push(throttled());
    cloud.push(event_stream(exception("throttlingException", "slow down")));
    cloud.push(MockResponse::json(200, ANSWER));
    let retrying = bedrock(&cloud.base_url()).with_retry(
        RetryConfig::default()
            .with_max_retries(2)
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(2)),
    );
    let (bridge, _rec) = bridge_with(|b| b.provider(retrying));
    let resp = send(&bridge, post("/bedrock/v1/messages", BLOCKING)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = cloud.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        check_sigv4(r);
    }
    // Without retries the client gets AWS's error in the Anthropic shape, same status.
    cloud.push(throttled());
    let (bridge, _rec) = bridge_with(|b| b.provider(bedrock(&cloud.base_url())));
    let resp = send(&bridge, post("/bedrock/v1/messages", BLOCKING)).await;
    assert_eq!(resp.status, 429);
    let v = resp.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(
        v["error"]["message"],
        "Too many requests, please wait before trying again."
    );
    cloud.push(
        MockResponse::json(403, r#"{"message":"not authorized"}"#)
            .header("x-amzn-errortype", "AccessDeniedException"),
    );
    let resp = send(&bridge, post("/bedrock/v1/messages", BLOCKING)).await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"]["type"], "permission_error");
}

#[tokio::test]
async fn bedrock_models_count_tokens_and_no_other_passthrough() {
    let cloud = MockUpstream::start().await;
    let (bridge, _rec) = bridge_with(|b| b.provider(bedrock(&cloud.base_url())));
    let resp = send(&bridge, get("/bedrock/v1/models")).await;
    assert_eq!(resp.status, 200);
    let ids: Vec<String> = resp.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [ARN, MAIN, SMALL]);
    cloud.push(MockResponse::json(200, r#"{"inputTokens":42}"#));
    let resp = send(
        &bridge,
        post(
            "/bedrock/v1/messages/count_tokens",
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), serde_json::json!({"input_tokens": 42}));
    let req = &cloud.requests()[0];
    assert_eq!(
        req.path(),
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    let inner = base64::engine::general_purpose::STANDARD
        .decode(req.json()["input"]["invokeModel"]["body"].as_str().unwrap())
        .unwrap();
    let inner: serde_json::Value = serde_json::from_slice(&inner).unwrap();
    assert_eq!(inner["anthropic_version"], "bedrock-2023-05-31");
    assert!(inner.get("model").is_none());
    check_sigv4(req);
    let resp = send(&bridge, post("/bedrock/api/event_logging/batch", "{}")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(cloud.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Vertex

const PROJECT: &str = "test-project";
const GOOGLE_TOKEN: &str = "ya29.cloudTESTaccessTOKEN-3f9a8b7c";

fn sa_key(token_uri: &str) -> String {
    let pem = std::fs::read_to_string(support::fixture_path("cloud/test-sa-key.pem")).unwrap();
    serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "kid-1",
        "private_key": pem,
        "client_email": "bridge@test-project.iam.gserviceaccount.com",
        "token_uri": token_uri,
    })
    .to_string()
}

fn token(expires_in: u64) -> MockResponse {
    MockResponse::json(
        200,
        format!(
            r#"{{"access_token":"{GOOGLE_TOKEN}","expires_in":{expires_in},"token_type":"Bearer"}}"#
        ),
    )
}

fn vertex(base: &str, token_server: &MockUpstream) -> Vertex {
    Vertex::new(PROJECT, "us-east5")
        .with_base_url(base.parse().unwrap())
        .with_service_account_key(&sa_key(&format!("{}/token", token_server.base_url())))
        .unwrap()
        .with_models(ModelMap::parse("claude-sonnet-*=claude-sonnet-4-5@20250929").unwrap())
        .with_retry(RetryConfig::default().with_max_retries(0))
}

/// The token request: a JWT bearer grant whose assertion the service account's public
/// key verifies, for the cloud-platform scope and the key's token_uri.
fn check_assertion(req: &RecordedRequest, token_uri: &str) {
    let body = std::str::from_utf8(&req.body).unwrap();
    let assertion = body
        .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
        .expect(body);
    let public = std::fs::read(support::fixture_path("cloud/test-sa-pub.pem")).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[token_uri]);
    let data = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation).unwrap();
    assert_eq!(data.header.kid.as_deref(), Some("kid-1"));
    assert_eq!(
        data.claims["iss"],
        "bridge@test-project.iam.gserviceaccount.com"
    );
    assert_eq!(
        data.claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
}

#[tokio::test]
async fn vertex_calls_carry_a_cached_token_from_the_service_account_exchange() {
    let cloud = MockUpstream::start().await;
    let tokens = MockUpstream::start().await;
    tokens.push(token(3600));
    cloud.push(MockResponse::json(200, ANSWER));
    let sse: String = expected_sse(&EVENTS);
    cloud.push(MockResponse::sse(sse.clone()));
    let (bridge, rec) = bridge_with(|b| b.provider(vertex(&cloud.base_url(), &tokens)));
    let mut first = post("/vertex/v1/messages", BLOCKING);
    first.headers_mut().insert(
        "anthropic-beta",
        "interleaved-thinking-2025-05-14".parse().unwrap(),
    );
    let resp = send(&bridge, first).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, ANSWER.as_bytes());
    let resp = send(&bridge, post("/vertex/v1/messages", STREAMING)).await;
    assert_eq!(resp.text(), sse, "relayed byte for byte");
    // One token for both calls.
    assert_eq!(tokens.request_count(), 1);
    check_assertion(
        &tokens.requests()[0],
        &format!("{}/token", tokens.base_url()),
    );
    let reqs = cloud.requests();
    let base = format!(
        "/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929"
    );
    assert_eq!(reqs[0].path(), format!("{base}:rawPredict"));
    assert_eq!(reqs[1].path(), format!("{base}:streamRawPredict"));
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {GOOGLE_TOKEN}").as_str())
        );
        assert!(r.header("x-api-key").is_none());
        assert!(r.header("anthropic-version").is_none());
        let v = r.json();
        assert!(v.get("model").is_none());
        assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
    }
    assert_eq!(
        reqs[0].header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14")
    );
    assert_eq!(reqs[1].json()["stream"], true);
    // Body edits are targeted: the thinking and metadata members stay as sent.
    assert_eq!(reqs[0].json()["thinking"]["type"], "adaptive");
    ended(&rec, 2).await;
    assert!(
        rec.interceptions()
            .iter()
            .all(|i| i.model == "claude-sonnet-4-5@20250929")
    );
    let t = rec.token_usages();
    assert_eq!(t.iter().map(|t| t.input_tokens).sum::<u64>(), 11 + 13);
}

#[tokio::test]
async fn vertex_refreshes_a_token_about_to_expire_and_maps_google_errors() {
    let cloud = MockUpstream::start().await;
    let tokens = MockUpstream::start().await;
    // 60 s left is inside the refresh margin: every call asks for a new token.
    tokens.push(token(60));
    tokens.push(token(60));
    cloud.push(MockResponse::json(200, ANSWER));
    cloud.push(MockResponse::json(
        403,
        r#"{"error":{"code":403,"message":"Permission 'aiplatform.endpoints.predict' denied","status":"PERMISSION_DENIED"}}"#,
    ));
    let (bridge, _rec) = bridge_with(|b| b.provider(vertex(&cloud.base_url(), &tokens)));
    assert_eq!(
        send(&bridge, post("/vertex/v1/messages", BLOCKING))
            .await
            .status,
        200
    );
    let resp = send(&bridge, post("/vertex/v1/messages", BLOCKING)).await;
    assert_eq!(tokens.request_count(), 2);
    assert_eq!(resp.status, 403);
    let v = resp.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(
        v["error"]["message"],
        "Permission 'aiplatform.endpoints.predict' denied"
    );
    // A token endpoint that fails: a 502 in the Anthropic shape, nothing sent to Vertex.
    tokens.push(MockResponse::json(400, r#"{"error":"invalid_grant"}"#));
    let before = cloud.request_count();
    let resp = send(&bridge, post("/vertex/v1/messages", BLOCKING)).await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error"]["type"], "api_error");
    assert_eq!(cloud.request_count(), before);
}

#[tokio::test]
async fn vertex_models_and_count_tokens() {
    let cloud = MockUpstream::start().await;
    let tokens = MockUpstream::start().await;
    tokens.push(token(3600));
    let (bridge, _rec) = bridge_with(|b| b.provider(vertex(&cloud.base_url(), &tokens)));
    let resp = send(&bridge, get("/vertex/v1/models")).await;
    assert_eq!(resp.json()["data"][0]["id"], "claude-sonnet-4-5@20250929");
    cloud.push(MockResponse::json(200, r#"{"input_tokens":9}"#));
    let resp = send(
        &bridge,
        post(
            "/vertex/v1/messages/count_tokens",
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    )
    .await;
    assert_eq!(resp.json(), serde_json::json!({"input_tokens": 9}));
    let req = &cloud.requests()[0];
    assert_eq!(
        req.path(),
        format!(
            "/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
        )
    );
    assert_eq!(req.json()["model"], "claude-sonnet-4-5@20250929");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {GOOGLE_TOKEN}").as_str())
    );
}

#[tokio::test]
async fn metadata_server_tokens() {
    let cloud = MockUpstream::start().await;
    let meta = MockUpstream::start().await;
    meta.push(token(3600));
    cloud.push(MockResponse::json(200, ANSWER));
    let p = Vertex::new(PROJECT, "global")
        .with_base_url(cloud.base_url().parse().unwrap())
        .with_metadata_server_at(meta.base_url());
    let (bridge, _rec) = bridge_with(|b| b.provider(p));
    assert_eq!(
        send(&bridge, post("/vertex/v1/messages", BLOCKING))
            .await
            .status,
        200
    );
    let m = &meta.requests()[0];
    assert_eq!(
        m.path(),
        "/computeMetadata/v1/instance/service-accounts/default/token"
    );
    assert_eq!(m.header("metadata-flavor"), Some("Google"));
    assert!(cloud.requests()[0].path().contains("/locations/global/"));
}

#[tokio::test]
async fn bedrock_accepts_a_plain_sse_answer() {
    let cloud = MockUpstream::start().await;
    let sse = expected_sse(&EVENTS);
    cloud.push(MockResponse::sse(sse.clone()));
    let (bridge, rec) = bridge_with(|b| b.provider(bedrock(&cloud.base_url())));
    let resp = send(&bridge, post("/bedrock/v1/messages", STREAMING)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), sse);
    ended(&rec, 1).await;
    assert_eq!(
        rec.token_usages()
            .iter()
            .map(|t| t.output_tokens)
            .sum::<u64>(),
        5
    );
}

/// A host's own token source (here a fixed token) is asked once and cached.
#[derive(Debug)]
struct HostTokens(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl aibridge::provider::TokenSource for HostTokens {
    async fn token(
        &self,
    ) -> Result<aibridge::provider::AccessToken, aibridge::provider::TokenError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(aibridge::provider::AccessToken::new(
            Secret::new(GOOGLE_TOKEN),
            std::time::SystemTime::now() + Duration::from_secs(3600),
        ))
    }
}

#[tokio::test]
async fn host_supplied_aws_credentials_provider_and_google_token_source() {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    let cloud = MockUpstream::start().await;
    for _ in 0..4 {
        cloud.push(MockResponse::json(200, ANSWER));
    }
    let creds = Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(SESSION_TOKEN.to_owned()),
        None,
        "host",
    );
    let b =
        bedrock(&cloud.base_url()).with_credentials_provider(SharedCredentialsProvider::new(creds));
    let tokens = std::sync::Arc::new(HostTokens(Default::default()));
    let v = Vertex::new(PROJECT, "global")
        .with_base_url(cloud.base_url().parse().unwrap())
        .with_token_source(tokens.clone());
    let (bridge, _rec) = bridge_with(|x| x.provider(b).provider(v));
    for path in ["/bedrock/v1/messages", "/vertex/v1/messages"] {
        for _ in 0..2 {
            assert_eq!(send(&bridge, post(path, BLOCKING)).await.status, 200);
        }
    }
    let reqs = cloud.requests();
    check_sigv4(&reqs[0]);
    check_sigv4(&reqs[1]);
    assert_eq!(
        reqs[3].header("authorization"),
        Some(format!("Bearer {GOOGLE_TOKEN}").as_str())
    );
    assert_eq!(tokens.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

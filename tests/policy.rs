//! The policy stage observed from outside (issue 12): a bridge in front of the loopback
//! mock upstream, with a policy; denials in each API's error shape for blocking and
//! streaming requests, nothing upstream, the audit record, the metric, cost per record,
//! and a token budget enforced from the bridge's own records.

mod common;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aibridge::async_trait;
use aibridge::metrics::Metrics;
use aibridge::policy::{
    Budget, Decision, Denial, DenyKind, Policy, PolicyRequest, Rate, RatePer, Rules, RulesPolicy,
    Window,
};
use aibridge::provider::{Api, CredentialKind, ProviderKind};
use aibridge::recorder::Outcome;
use common::prom::{at, try_value, value};
use common::*;
use prometheus::Registry;
use support::{MockResponse, MockUpstream, fixture};

const MSG: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"secret prompt"}],"tools":[{"name":"read_file","input_schema":{"type":"object"}}]}"#;
const MSG_STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"secret prompt"}]}"#;
const CHAT: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"secret prompt"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"secret prompt"}]}"#;
const RESP: &str = r#"{"model":"gpt-4.1","input":"secret prompt"}"#;
const RESP_STREAM: &str = r#"{"model":"gpt-4.1","stream":true,"input":"secret prompt"}"#;

/// Denies every request with one denial, and remembers what it saw.
struct Always {
    denial: Option<Denial>,
    seen: Mutex<Vec<String>>,
}

impl Always {
    fn deny(denial: Denial) -> Arc<Self> {
        Arc::new(Self {
            denial: Some(denial),
            seen: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Policy for Always {
    async fn check(&self, req: &PolicyRequest<'_>) -> Decision {
        self.seen.lock().unwrap().push(format!(
            "{}|{}|{:?}|{:?}|{}|{}|{}|{:?}|{:?}|{}|{:?}",
            req.actor.id(),
            req.provider_name,
            req.provider_kind,
            req.api,
            req.model,
            req.streaming,
            req.client,
            req.session_id,
            req.credential_kind,
            req.body_len,
            req.client_tools,
        ));
        match &self.denial {
            Some(d) => Decision::Deny(d.clone()),
            None => Decision::allow(),
        }
    }
}

fn metered(
    base: &str,
    policy: Arc<dyn Policy>,
) -> (
    aibridge::RequestBridge,
    aibridge::recorder::MemoryRecorder,
    Registry,
) {
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, rec) = bridge(base, |b| b.metrics(metrics).policy_arc(policy));
    (bridge, rec, reg)
}

const CASES: [(&str, &str, bool); 6] = [
    ("/anthropic/v1/messages", MSG, true),
    ("/anthropic/v1/messages", MSG_STREAM, true),
    ("/openai/v1/chat/completions", CHAT, false),
    ("/openai/v1/chat/completions", CHAT_STREAM, false),
    ("/openai/v1/responses", RESP, false),
    ("/openai/v1/responses", RESP_STREAM, false),
];

#[tokio::test]
async fn each_denial_kind_has_its_status_and_shape_per_api_blocking_and_streaming() {
    let kinds = [
        (
            Denial::new(DenyKind::Forbidden, "model not allowed here"),
            403,
            "permission_error",
            "model_not_allowed",
            None,
        ),
        (
            Denial::new(
                DenyKind::Budget,
                "token budget of 100000 per day exhausted; resets at 2026-12-08T00:00:00Z",
            ),
            403,
            "permission_error",
            "budget_exceeded",
            None,
        ),
        (
            Denial::new(DenyKind::RateLimited, "slow down")
                .with_retry_after(Duration::from_millis(2_300)),
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            Some("3"),
        ),
        (
            Denial::new(
                DenyKind::Other {
                    reason: "maintenance".into(),
                    status: http::StatusCode::SERVICE_UNAVAILABLE,
                    code: "maintenance_window".into(),
                },
                "back at 10:00",
            ),
            503,
            "overloaded_error",
            "maintenance_window",
            None,
        ),
    ];
    let upstream = MockUpstream::start().await;
    for (denial, status, kind, code, retry) in kinds {
        let (bridge, rec, reg) = metered(&upstream.base_url(), Always::deny(denial.clone()));
        for (i, (path, body, anthropic)) in CASES.iter().enumerate() {
            let r = send(&bridge, post(path, *body)).await;
            assert_eq!(r.status.as_u16(), status, "{path} {body}");
            assert_eq!(
                r.headers["content-type"], "application/json",
                "never a stream"
            );
            assert_eq!(
                r.headers.get("retry-after").map(|v| v.to_str().unwrap()),
                retry
            );
            let v = r.json();
            if *anthropic {
                assert_eq!(
                    v,
                    serde_json::json!({"type":"error","error":{"type":kind,"message":denial.message}})
                );
            } else {
                assert_eq!(
                    v,
                    serde_json::json!({"error":{"message":denial.message,"type":kind,"param":null,"code":code}})
                );
            }
            ended(&rec, i + 1).await;
        }
        assert_eq!(upstream.request_count(), 0, "nothing goes upstream");
        // The audit: six interceptions, each ended denied with the message, no prompt.
        assert_eq!(rec.interceptions().len(), 6);
        for e in rec.interceptions_ended() {
            assert_eq!(e.outcome, Outcome::Denied);
            assert_eq!(e.outcome.as_str(), "denied");
            assert_eq!(e.error.as_deref(), Some(denial.message.as_str()));
        }
        assert!(rec.prompt_usages().is_empty() && rec.token_usages().is_empty());
        let reason = denial.kind.reason();
        assert_eq!(
            value(
                &reg,
                "policy_denials_total",
                &at(&format!(
                    "provider=anthropic,model=claude-sonnet-4-5,reason={reason}"
                ))
            ),
            2.0
        );
        assert_eq!(
            value(
                &reg,
                "policy_denials_total",
                &at(&format!("provider=openai,model=gpt-4.1,reason={reason}"))
            ),
            4.0
        );
    }
}

#[tokio::test]
async fn the_policy_sees_the_request_and_an_allowed_one_is_unchanged() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let policy = Arc::new(Always {
        denial: None,
        seen: Mutex::new(Vec::new()),
    });
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.policy_arc(policy.clone()));
    let r = send(&bridge, post("/anthropic/v1/messages", MSG)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, fixture("anthropic/text_blocking.upstream.json"));
    ended(&rec, 1).await;
    let sent = upstream.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].json(),
        serde_json::from_str::<serde_json::Value>(MSG).unwrap()
    );
    let seen = policy.seen.lock().unwrap().clone();
    let expected = format!(
        "alice|anthropic|{:?}|{:?}|claude-sonnet-4-5|false|Unknown|None|{:?}|{}|[\"read_file\"]",
        ProviderKind::Anthropic,
        Api::Messages,
        CredentialKind::Centralized,
        MSG.len()
    );
    assert_eq!(seen, [expected]);
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Completed);
}

#[tokio::test]
async fn token_usage_gets_its_cost_and_none_for_an_unknown_model() {
    let upstream = MockUpstream::start().await;
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let r = send(&bridge, post("/anthropic/v1/messages", MSG)).await;
    assert_eq!(r.status, 200);
    ended(&rec, 1).await;
    // 18 input and 254 output tokens of Sonnet 4.5 at $3 / $15 per million.
    let cost = rec.token_usages()[0].cost_usd.unwrap();
    assert!(
        (cost - (18.0 * 3.0 + 254.0 * 15.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let unknown = MSG.replace("claude-sonnet-4-5", "house-model-7b");
    send(&bridge, post("/anthropic/v1/messages", unknown)).await;
    ended(&rec, 2).await;
    assert_eq!(
        rec.token_usages()[1].cost_usd,
        None,
        "never 0 for an unknown model"
    );
}

#[tokio::test]
async fn a_token_budget_denies_the_next_request_once_the_bridges_own_records_spend_it() {
    let upstream = MockUpstream::start().await;
    let mut rules = Rules::default();
    // The fixture's one answer spends 18 + 254 = 272 tokens.
    rules.default.budget = Some(Budget::Tokens {
        limit: 300,
        per: Window::Day,
    });
    rules.default.rate = Some(Rate::new(100, RatePer::Minute));
    let policy = Arc::new(RulesPolicy::builder().rules(rules).build().unwrap());
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, rec) = bridge(&upstream.base_url(), |b| {
        b.policy_arc(policy.clone()).metrics(metrics)
    });
    for _ in 0..2 {
        upstream.push(MockResponse::json(
            200,
            fixture("anthropic/text_blocking.upstream.json"),
        ));
    }
    assert_eq!(
        send(&bridge, post("/anthropic/v1/messages", MSG))
            .await
            .status,
        200
    );
    ended(&rec, 1).await;
    assert_eq!(policy.spend("alice").tokens, 272);
    // 272 < 300: the next request runs (and is never cut), taking the spend over.
    assert_eq!(
        send(&bridge, post("/anthropic/v1/messages", MSG))
            .await
            .status,
        200
    );
    ended(&rec, 2).await;
    let r = send(&bridge, post("/anthropic/v1/messages", MSG_STREAM)).await;
    assert_eq!(r.status, 403);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with("aibridge: token budget of 300 per day exhausted (544 used); resets at "),
        "{msg}"
    );
    ended(&rec, 3).await;
    assert_eq!(upstream.request_count(), 2);
    assert_eq!(
        try_value(
            &reg,
            "policy_denials_total",
            &at("provider=anthropic,model=claude-sonnet-4-5,reason=budget")
        ),
        Some(1.0)
    );
    let status = policy.budget_status();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].actor.as_str(), status[0].spent_tokens),
        ("alice", 544)
    );
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_after_in_whole_seconds() {
    let upstream = MockUpstream::start().await;
    let mut rules = Rules::default();
    rules.default.rate = Some(Rate::new(1, RatePer::Minute));
    let policy = RulesPolicy::builder().rules(rules).build().unwrap();
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.policy(policy));
    upstream.push(MockResponse::json(
        200,
        fixture("openai/chat-simple.response.json"),
    ));
    assert_eq!(
        send(&bridge, post("/openai/v1/chat/completions", CHAT))
            .await
            .status,
        200
    );
    let r = send(&bridge, post("/openai/v1/chat/completions", CHAT_STREAM)).await;
    assert_eq!(r.status, 429);
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&secs), "{secs}");
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit of 1 requests per minute exceeded"),
        "{v}"
    );
    ended(&rec, 2).await;
    assert_eq!(upstream.request_count(), 1);
}

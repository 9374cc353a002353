//! Two replicas, one budget (issue 12): two bridges, each with its own `PostgresRecorder`
//! and `RulesPolicy` reading its spend back from the same PostgreSQL database (a real
//! throwaway server, `PgServer`). A budget spent through one bridge is enforced by the
//! other within the documented lag (refresh every 2 s, the default; bound 5 s), without a
//! database query per request.
#![cfg(feature = "postgres")]

mod common;
#[path = "../src/recorder/sql/tests/pg_server.rs"]
mod pg_server;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aibridge::policy::{Budget, DEFAULT_REFRESH, Rules, RulesPolicy, SpendSource, Window};
use aibridge::provider::{Anthropic, Secret};
use aibridge::recorder::PostgresRecorder;
use aibridge::{Actor, RequestBridge};
use common::{ANTHROPIC_KEY, post, send};
use pg_server::PgServer;
use support::{MockResponse, MockUpstream, fixture};

const REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"say hello"}]}"#;
/// The documented bound between a spend on one replica and its enforcement on another.
const LAG_BOUND: Duration = Duration::from_secs(5);

async fn replica(
    url: &str,
    upstream: &MockUpstream,
    rules: Rules,
) -> (RequestBridge, Arc<RulesPolicy>) {
    let recorder = Arc::new(PostgresRecorder::connect(url).await.unwrap());
    let source: Arc<dyn SpendSource> = recorder.clone();
    let policy = Arc::new(
        RulesPolicy::builder()
            .rules(rules)
            .spend_source(source)
            .build()
            .unwrap(),
    );
    let bridge = RequestBridge::builder()
        .provider(
            Anthropic::new(Secret::new(ANTHROPIC_KEY))
                .with_base_url(upstream.base_url().parse().unwrap()),
        )
        .recorder(recorder)
        .policy_arc(policy.clone())
        .build()
        .unwrap();
    (bridge, policy)
}

fn post_as(actor: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = post("/anthropic/v1/messages", REQ);
    req.extensions_mut().insert(Actor::new(actor));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_on_one_database_enforce_one_budget_within_the_documented_lag() {
    assert_eq!(DEFAULT_REFRESH, Duration::from_secs(2));
    let server = PgServer::start();
    let url = server.create_database("policy_two_replicas").await;
    let upstream = MockUpstream::start().await;
    for _ in 0..4 {
        upstream.push(MockResponse::json(
            200,
            fixture("anthropic/text_blocking.upstream.json"),
        ));
    }
    // One text_blocking answer spends 18 + 254 = 272 tokens: two exhaust 500.
    let mut rules = Rules::default();
    rules.default.budget = Some(Budget::Tokens {
        limit: 500,
        per: Window::Day,
    });
    let (a, policy_a) = replica(&url, &upstream, rules.clone()).await;
    let (b, policy_b) = replica(&url, &upstream, rules).await;

    for _ in 0..2 {
        let r = send(&a, post_as("alice")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let spent = Instant::now();
    assert_eq!(
        policy_a.spend("alice").tokens,
        544,
        "replica A counts its own at once"
    );
    let r = send(&a, post_as("alice")).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Replica B never saw alice: it learns her spend from the database.
    loop {
        if policy_b.spend("alice").tokens >= 544 {
            break;
        }
        assert!(
            spent.elapsed() < LAG_BOUND,
            "replica B still counts {} tokens for alice after {:?}",
            policy_b.spend("alice").tokens,
            spent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lag = spent.elapsed();
    assert!(lag < LAG_BOUND, "{lag:?}");
    let r = send(&b, post_as("alice")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with("aibridge: token budget of 500 per day exhausted (544 used)"),
        "{msg}"
    );
    // Another actor on B is within its own budget.
    let r = send(&b, post_as("bob")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        upstream.request_count(),
        3,
        "the denied requests never went upstream"
    );
    let status = policy_b.budget_status();
    let alice = status.iter().find(|s| s.actor == "alice").unwrap();
    assert_eq!(alice.spent_tokens, 544);
}

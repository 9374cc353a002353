//! `RulesPolicy` decisions, with a clock the tests move.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::*;
use crate::recorder::RecordId;

/// A clock the test sets.
#[derive(Debug)]
struct TestClock(Mutex<SystemTime>);

impl TestClock {
    fn at(s: &str) -> Arc<Self> {
        Arc::new(Self(Mutex::new(time(s))))
    }

    fn set(&self, s: &str) {
        *self.0.lock().unwrap() = time(s);
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

fn time(s: &str) -> SystemTime {
    SystemTime::from(chrono::DateTime::parse_from_rfc3339(s).unwrap())
}

fn usage(tokens: u64, cost: Option<f64>) -> TokenUsage {
    TokenUsage {
        id: RecordId::new(),
        interception_id: RecordId::new(),
        provider_response_id: None,
        input_tokens: tokens / 2,
        output_tokens: tokens - tokens / 2,
        cache_read_input_tokens: 0,
        cache_write_input_tokens: 0,
        extra: BTreeMap::new(),
        cost_usd: cost,
        created_at: SystemTime::now(),
    }
}

async fn decide(p: &RulesPolicy, actor: &str, model: &str) -> Result<Allow, Denial> {
    let actor = Actor::new(actor);
    match p
        .check(&PolicyRequest::new(&actor, "anthropic", model))
        .await
    {
        Decision::Allow(a) => Ok(a),
        Decision::Deny(d) => Err(d),
    }
}

fn policy(rules: Rules, clock: Arc<TestClock>) -> RulesPolicy {
    RulesPolicy::builder()
        .rules(rules)
        .clock(clock)
        .build()
        .unwrap()
}

#[tokio::test]
async fn no_rules_allow_everything_with_every_tool() {
    let p = RulesPolicy::builder().build().unwrap();
    let a = decide(&p, "alice", "anything").await.unwrap();
    assert!(a.mcp_tools.is_none());
}

#[tokio::test]
async fn model_access_per_actor_overrides_the_default() {
    let mut rules = Rules::default();
    rules.default.models = Some(vec!["claude-*".into(), "gpt-*".into()]);
    rules.default.deny_models = Some(vec!["*-preview".into()]);
    rules.actors.insert(
        "alice".into(),
        ActorRules {
            models: Some(vec!["claude-sonnet-*".into()]),
            ..ActorRules::default()
        },
    );
    let p = policy(rules, TestClock::at("2026-12-07T12:00:00Z"));
    assert!(decide(&p, "bob", "gpt-5").await.is_ok());
    assert!(decide(&p, "bob", "claude-opus-4-5").await.is_ok());
    let d = decide(&p, "bob", "gpt-5-preview").await.unwrap_err();
    assert_eq!(d.kind, DenyKind::Forbidden);
    assert_eq!(d.kind.reason(), "model");
    assert!(decide(&p, "bob", "llama").await.is_err());
    // Alice's models replace the default's; the default's deny_models still apply.
    assert!(decide(&p, "alice", "claude-sonnet-4-5").await.is_ok());
    assert!(decide(&p, "alice", "gpt-5").await.is_err());
    assert!(
        decide(&p, "alice", "claude-sonnet-4-5-preview")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_token_budget_denies_the_next_request_once_spent_and_resets_at_midnight() {
    let clock = TestClock::at("2026-12-07T23:00:00Z");
    let mut rules = Rules::default();
    rules.default.budget = Some(Budget::Tokens {
        limit: 1000,
        per: Window::Day,
    });
    let p = policy(rules, clock.clone());
    assert!(decide(&p, "alice", "m").await.is_ok());
    p.usage("alice", "m", &usage(999, None));
    assert!(decide(&p, "alice", "m").await.is_ok(), "999 < 1000");
    p.usage("alice", "m", &usage(1, None));
    let d = decide(&p, "alice", "m").await.unwrap_err();
    assert_eq!(d.kind, DenyKind::Budget);
    assert_eq!(
        d.message,
        "aibridge: token budget of 1000 per day exhausted (1000 used); resets at 2026-12-08T00:00:00Z"
    );
    assert!(d.retry_after.is_none());
    // Another actor has its own spend.
    assert!(decide(&p, "bob", "m").await.is_ok());
    let spend = p.spend("alice");
    assert_eq!((spend.window, spend.tokens), (Some(Window::Day), 1000));
    // One second before midnight: still denied; at midnight: a new window.
    clock.set("2026-12-07T23:59:59Z");
    assert!(decide(&p, "alice", "m").await.is_err());
    clock.set("2026-12-08T00:00:00Z");
    assert!(decide(&p, "alice", "m").await.is_ok());
    assert_eq!(p.spend("alice").tokens, 0);
}

#[tokio::test]
async fn a_weekly_budget_resets_on_monday_and_a_monthly_one_on_the_first() {
    let clock = TestClock::at("2026-12-13T23:59:59Z"); // a Sunday
    let mut rules = Rules::default();
    rules.default.budget = Some(Budget::Tokens {
        limit: 10,
        per: Window::Week,
    });
    rules.actors.insert(
        "monthly".into(),
        ActorRules {
            budget: Some(Budget::Usd {
                limit: 1.0,
                per: Window::Month,
            }),
            ..ActorRules::default()
        },
    );
    let p = policy(rules, clock.clone());
    p.usage("weekly", "m", &usage(10, None));
    let d = decide(&p, "weekly", "m").await.unwrap_err();
    assert!(
        d.message.ends_with("resets at 2026-12-14T00:00:00Z"),
        "{}",
        d.message
    );
    clock.set("2026-12-14T00:00:00Z");
    assert!(decide(&p, "weekly", "m").await.is_ok());

    clock.set("2026-12-31T23:59:59Z");
    p.usage("monthly", "gpt-5", &usage(10, Some(1.5)));
    let d = decide(&p, "monthly", "gpt-5").await.unwrap_err();
    assert_eq!(
        d.message,
        "aibridge: USD budget of 1.00 per month exhausted (1.50 spent); resets at 2027-01-01T00:00:00Z"
    );
    clock.set("2027-01-01T00:00:00Z");
    assert!(decide(&p, "monthly", "gpt-5").await.is_ok());
    let status = p.budget_status();
    let names: Vec<&str> = status.iter().map(|s| s.actor.as_str()).collect();
    assert_eq!(
        names,
        ["monthly"],
        "the weekly actor's spend is of a past window"
    );
}

#[tokio::test]
async fn unpriced_models_under_a_usd_budget_are_denied_unless_allowed() {
    let mut rules = Rules::default();
    rules.default.budget = Some(Budget::Usd {
        limit: 5.0,
        per: Window::Day,
    });
    rules.actors.insert(
        "free".into(),
        ActorRules {
            unpriced: Some(Unpriced::Allow),
            ..ActorRules::default()
        },
    );
    let p = policy(rules.clone(), TestClock::at("2026-12-07T12:00:00Z"));
    let d = decide(&p, "alice", "my-local-model").await.unwrap_err();
    assert_eq!(d.kind, DenyKind::Budget);
    assert!(d.message.contains("has no price"), "{}", d.message);
    assert!(decide(&p, "alice", "claude-sonnet-4-5").await.is_ok());
    assert!(decide(&p, "free", "my-local-model").await.is_ok());
    // A host price makes the model priced.
    rules.prices = Prices::builtin()
        .with("my-local-*", Price::new(0.0, 0.0, 0.0, 0.0))
        .unwrap();
    p.replace_rules(rules).unwrap();
    assert!(decide(&p, "alice", "my-local-model").await.is_ok());
}

#[tokio::test]
async fn the_rate_limit_answers_with_a_retry_after_and_survives_a_reload() {
    let mut rules = Rules::default();
    rules.default.rate = Some(Rate::new(2, RatePer::Minute));
    let p = policy(rules.clone(), TestClock::at("2026-12-07T12:00:00Z"));
    assert!(decide(&p, "alice", "m").await.is_ok());
    assert!(decide(&p, "alice", "m").await.is_ok());
    let d = decide(&p, "alice", "m").await.unwrap_err();
    assert_eq!(d.kind, DenyKind::RateLimited);
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    // A reload with the same rate keeps the bucket; a bad reload keeps the old rules.
    p.replace_rules(rules.clone()).unwrap();
    assert!(decide(&p, "alice", "m").await.is_err());
    let mut bad = rules;
    bad.default.models = Some(vec!["[".into()]);
    assert!(p.replace_rules(bad).is_err());
    assert!(p.rules().default.models.is_none());
}

#[tokio::test]
async fn model_access_then_budget_then_rate_first_deny_wins() {
    let mut rules = Rules::default();
    rules.default.models = Some(vec!["ok".into()]);
    rules.default.budget = Some(Budget::Tokens {
        limit: 1,
        per: Window::Day,
    });
    rules.default.rate = Some(Rate::new(1, RatePer::Minute));
    let p = policy(rules, TestClock::at("2026-12-07T12:00:00Z"));
    p.usage("a", "ok", &usage(1, None));
    let d = decide(&p, "a", "nope").await.unwrap_err();
    assert_eq!(d.kind, DenyKind::Forbidden);
    let d = decide(&p, "a", "ok").await.unwrap_err();
    assert_eq!(d.kind, DenyKind::Budget);
    // Denied requests did not use the rate: b's first request passes, its second is rated.
    assert!(decide(&p, "b", "ok").await.is_ok());
    assert_eq!(
        decide(&p, "b", "ok").await.unwrap_err().kind,
        DenyKind::RateLimited
    );
}

#[tokio::test]
async fn mcp_tools_narrow_the_allowed_request() {
    let mut rules = Rules::default();
    rules.default.mcp_tools = Some(vec!["^coder_list_".into()]);
    let p = policy(rules, TestClock::at("2026-12-07T12:00:00Z"));
    let a = decide(&p, "a", "m").await.unwrap();
    let f = a.mcp_tools.unwrap();
    assert!(f.allows("coder_list_workspaces"));
    assert!(!f.allows("coder_delete_workspace"));
}

/// A store other replicas write to.
#[derive(Debug, Default)]
struct Store(Mutex<Vec<ActorSpend>>);

#[async_trait]
impl SpendSource for Store {
    async fn spend_since(&self, _since: SystemTime) -> Result<Vec<ActorSpend>, crate::BoxError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn the_store_adds_other_replicas_spend() {
    let store = Arc::new(Store::default());
    let mut rules = Rules::default();
    rules.default.budget = Some(Budget::Tokens {
        limit: 100,
        per: Window::Day,
    });
    let p = RulesPolicy::builder()
        .rules(rules)
        .spend_source(store.clone())
        .refresh_every(Duration::from_secs(3600))
        .build()
        .unwrap();
    p.usage("a", "m", &usage(40, None));
    *store.0.lock().unwrap() = vec![ActorSpend::new("a", [40, 0, 0, 60], 0.0)];
    assert!(decide(&p, "a", "m").await.is_ok(), "not read yet");
    p.refresh_now(store.as_ref()).await;
    assert_eq!(p.spend("a").tokens, 100);
    assert_eq!(
        decide(&p, "a", "m").await.unwrap_err().kind,
        DenyKind::Budget
    );
}

#[test]
fn a_spend_source_needs_a_runtime() {
    let e = RulesPolicy::builder()
        .spend_source(Arc::new(Store::default()))
        .build()
        .unwrap_err();
    assert!(matches!(e, PolicyError::NoRuntime));
}

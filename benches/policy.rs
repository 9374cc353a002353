//! The policy stage's allowed path (issue 12): what `RulesPolicy::check` costs for a
//! request it lets through with a model list, a token budget and a rate limit loaded (the
//! policy file of BENCHMARKS.md), next to a policy that allows everything (the floor of the
//! `async_trait` call) in the same run, and what recording one token usage into the
//! ledger costs. Without a policy the bridge does only an `Option` check.
//!
//! ```text
//! cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use aibridge::Actor;
use aibridge::async_trait;
use aibridge::policy::{
    Budget, ClientTools, Decision, Policy, PolicyRequest, Rate, RatePer, Rules, RulesPolicy, Window,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// Allows everything.
struct AllowAll;

#[async_trait]
impl Policy for AllowAll {
    async fn check(&self, _req: &PolicyRequest<'_>) -> Decision {
        Decision::allow()
    }
}

fn rules() -> Rules {
    let mut rules = Rules::default();
    rules.default.models = Some(vec!["claude-*".into(), "gpt-*".into()]);
    rules.default.deny_models = Some(vec!["*-preview".into()]);
    rules.default.budget = Some(Budget::Tokens {
        limit: u64::MAX,
        per: Window::Day,
    });
    rules.default.rate = Some(Rate::new(u32::MAX, RatePer::Second));
    rules
}

fn bench(c: &mut Criterion) {
    let actor = Actor::new("alice");
    let tools = vec!["read_file".to_owned(), "bash".to_owned()];
    let mut req = PolicyRequest::new(&actor, "anthropic", "claude-sonnet-4-5-20250929");
    req.client_tools = ClientTools::new(&tools);
    let rules_policy = RulesPolicy::builder().rules(rules()).build().unwrap();
    let mut g = c.benchmark_group("policy_allowed_path");
    g.bench_function("allow_all", |b| {
        b.iter(|| {
            let d = futures::executor::block_on(AllowAll.check(black_box(&req)));
            assert!(matches!(d, Decision::Allow(_)));
        });
    });
    g.bench_function("rules_models_budget_rate", |b| {
        b.iter(|| {
            let d = futures::executor::block_on(rules_policy.check(black_box(&req)));
            assert!(matches!(d, Decision::Allow(_)));
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

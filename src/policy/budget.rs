//! The decisions of [`RulesPolicy`](super::RulesPolicy), one function per rule, and the
//! messages the user reads.

use std::time::{Duration, SystemTime};

use globset::{Candidate, Glob, GlobSet, GlobSetBuilder};

use super::ledger::Amount;
use super::prices::Prices;
use super::rules::{ActorRules, Budget, Rate, Unpriced, rfc3339};
use super::{Denial, DenyKind, PolicyError, ToolFilter};

/// One actor's rules, compiled once per rules version.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    models: Option<GlobSet>,
    deny_models: Option<GlobSet>,
    pub(crate) budget: Option<Budget>,
    pub(crate) rate: Option<Rate>,
    pub(crate) mcp_tools: Option<ToolFilter>,
    unpriced: Unpriced,
}

impl Compiled {
    pub(crate) fn new(rules: &ActorRules, at: &str) -> Result<Self, PolicyError> {
        let globs = |name: &str, list: &Option<Vec<String>>| -> Result<_, PolicyError> {
            let Some(list) = list else { return Ok(None) };
            let mut b = GlobSetBuilder::new();
            for (i, g) in list.iter().enumerate() {
                b.add(Glob::new(g).map_err(|e| {
                    PolicyError::invalid(format!("{at}.{name}[{i}]"), e.to_string())
                })?);
            }
            b.build()
                .map(Some)
                .map_err(|e| PolicyError::invalid(format!("{at}.{name}"), e.to_string()))
        };
        let mcp_tools = match &rules.mcp_tools {
            Some(list) => Some(
                ToolFilter::new(list)
                    .map_err(|e| PolicyError::invalid(format!("{at}.mcp_tools"), e.to_string()))?,
            ),
            None => None,
        };
        Ok(Self {
            models: globs("models", &rules.models)?,
            deny_models: globs("deny_models", &rules.deny_models)?,
            budget: rules.budget,
            rate: rules.rate,
            mcp_tools,
            unpriced: rules.unpriced.unwrap_or_default(),
        })
    }

    /// Model access: `deny_models` wins over `models`.
    pub(crate) fn model(&self, actor: &str, model: &str) -> Option<Denial> {
        if self.deny_models.is_none() && self.models.is_none() {
            return None;
        }
        // One candidate (globset's path split) for both lists.
        let candidate = Candidate::new(model);
        let denied = self
            .deny_models
            .as_ref()
            .is_some_and(|d| d.is_match_candidate(&candidate))
            || self
                .models
                .as_ref()
                .is_some_and(|m| !m.is_match_candidate(&candidate));
        denied.then(|| {
            Denial::new(
                DenyKind::Forbidden,
                format!("aibridge: model {model:?} is not allowed for {actor:?}"),
            )
        })
    }

    /// The budget, given what was spent in its current window.
    pub(crate) fn budget(
        &self,
        model: &str,
        prices: &Prices,
        spent: impl FnOnce(Budget) -> Amount,
        now: SystemTime,
    ) -> Option<Denial> {
        let budget = self.budget?;
        let window = budget.window();
        // Formatted only for a denial: the allowed path allocates nothing here.
        let resets = || rfc3339(window.end(now));
        let per = window.as_str();
        match budget {
            Budget::Usd { limit, .. } => {
                if self.unpriced == Unpriced::Deny && prices.price(model).is_none() {
                    return Some(Denial::new(
                        DenyKind::Budget,
                        format!(
                            "aibridge: model {model:?} has no price, so it cannot be used under a USD budget of {limit:.2} per {per}"
                        ),
                    ));
                }
                let spent = spent(budget);
                (spent.usd >= limit).then(|| {
                    Denial::new(
                        DenyKind::Budget,
                        format!(
                            "aibridge: USD budget of {limit:.2} per {per} exhausted ({:.2} spent); resets at {}",
                            spent.usd,
                            resets()
                        ),
                    )
                })
            }
            Budget::Tokens { limit, .. } => {
                let spent = spent(budget);
                (spent.tokens >= limit).then(|| {
                    Denial::new(
                        DenyKind::Budget,
                        format!(
                            "aibridge: token budget of {limit} per {per} exhausted ({} used); resets at {}",
                            spent.tokens,
                            resets()
                        ),
                    )
                })
            }
        }
    }
}

/// The rate-limit denial.
pub(crate) fn rate_limited(rate: Rate, wait: Duration) -> Denial {
    let secs = retry_secs(wait);
    Denial::new(
        DenyKind::RateLimited,
        format!(
            "aibridge: rate limit of {} requests per {} exceeded; retry in {secs} s",
            rate.requests,
            rate.per.as_str()
        ),
    )
    .with_retry_after(wait)
}

/// Whole seconds, rounded up, at least 1.
pub(crate) fn retry_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::{RatePer, Window};

    fn at(s: &str) -> SystemTime {
        SystemTime::from(chrono::DateTime::parse_from_rfc3339(s).unwrap())
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_secs(Duration::ZERO), 1);
        let d = rate_limited(Rate::new(2, RatePer::Minute), Duration::from_millis(29_100));
        assert_eq!(d.kind, DenyKind::RateLimited);
        assert!(d.message.contains("2 requests per minute"), "{}", d.message);
        assert!(d.message.contains("retry in 30 s"), "{}", d.message);
    }

    #[test]
    fn deny_models_win_over_models() {
        let c = Compiled::new(
            &ActorRules {
                models: Some(vec!["claude-*".into()]),
                deny_models: Some(vec!["*-preview".into()]),
                ..ActorRules::default()
            },
            "default",
        )
        .unwrap();
        assert!(c.model("a", "claude-sonnet-4-5").is_none());
        let d = c.model("a", "claude-x-preview").unwrap();
        assert_eq!(d.kind, DenyKind::Forbidden);
        assert_eq!(
            d.message,
            r#"aibridge: model "claude-x-preview" is not allowed for "a""#
        );
        assert!(c.model("a", "gpt-5").is_some());
    }

    #[test]
    fn budget_messages_say_what_and_when() {
        let now = at("2026-12-07T15:00:00Z");
        let c = Compiled::new(
            &ActorRules {
                budget: Some(Budget::Tokens {
                    limit: 100_000,
                    per: Window::Day,
                }),
                ..ActorRules::default()
            },
            "default",
        )
        .unwrap();
        let prices = Prices::builtin();
        let spent = |tokens| move |_| Amount { tokens, usd: 0.0 };
        assert!(c.budget("m", &prices, spent(99_999), now).is_none());
        let d = c.budget("m", &prices, spent(100_000), now).unwrap();
        assert_eq!(d.kind, DenyKind::Budget);
        assert_eq!(
            d.message,
            "aibridge: token budget of 100000 per day exhausted (100000 used); resets at 2026-12-08T00:00:00Z"
        );
    }

    #[test]
    fn usd_budgets_deny_unpriced_models_unless_allowed() {
        let now = at("2026-12-31T23:00:00Z");
        let mut rules = ActorRules {
            budget: Some(Budget::Usd {
                limit: 50.0,
                per: Window::Month,
            }),
            ..ActorRules::default()
        };
        let prices = Prices::builtin();
        let zero = |_| Amount::default();
        let c = Compiled::new(&rules, "default").unwrap();
        let d = c.budget("my-local-model", &prices, zero, now).unwrap();
        assert_eq!(d.kind, DenyKind::Budget);
        assert!(d.message.contains("has no price"), "{}", d.message);
        assert!(c.budget("gpt-5", &prices, zero, now).is_none());
        let d = c
            .budget(
                "gpt-5",
                &prices,
                |_| Amount {
                    tokens: 0,
                    usd: 50.0,
                },
                now,
            )
            .unwrap();
        assert_eq!(
            d.message,
            "aibridge: USD budget of 50.00 per month exhausted (50.00 spent); resets at 2027-01-01T00:00:00Z"
        );
        rules.unpriced = Some(Unpriced::Allow);
        let c = Compiled::new(&rules, "default").unwrap();
        assert!(c.budget("my-local-model", &prices, zero, now).is_none());
    }
}

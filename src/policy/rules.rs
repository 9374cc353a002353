//! [`Rules`]: what [`RulesPolicy`](super::RulesPolicy) enforces, per actor and by default.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};

use super::PolicyError;
use super::prices::Prices;

/// The rules of every actor: a default, and per-actor entries that override the default
/// field by field (an absent field takes the default's).
///
/// ```
/// use aibridge::policy::{ActorRules, Budget, Rules, Window};
/// let mut rules = Rules::default();
/// rules.default.models = Some(vec!["claude-*".into(), "gpt-*".into()]);
/// rules.actors.insert(
///     "alice".into(),
///     ActorRules {
///         budget: Some(Budget::Tokens { limit: 100_000, per: Window::Day }),
///         ..ActorRules::default()
///     },
/// );
/// rules.validate().unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// What applies to every actor.
    pub default: ActorRules,
    /// Per actor id, the fields that differ from the default.
    pub actors: HashMap<String, ActorRules>,
    /// The price table of USD budgets (the default is [`Prices::builtin`]).
    pub prices: Prices,
}

/// The rules of one actor (or the default). Every field is optional.
#[derive(Clone, Debug, Default)]
pub struct ActorRules {
    /// Globs on the request's model the actor may use; `None` = every model.
    pub models: Option<Vec<String>>,
    /// Globs on the model the actor may not use; deny wins over `models`.
    pub deny_models: Option<Vec<String>>,
    /// The spend limit per calendar window.
    pub budget: Option<Budget>,
    /// The request rate limit (per process).
    pub rate: Option<Rate>,
    /// Regexes on original MCP tool names the actor's requests may use; `None` = all.
    pub mcp_tools: Option<Vec<String>>,
    /// Whether a model without a price may be used under a USD budget (default deny).
    pub unpriced: Option<Unpriced>,
}

/// A spend limit per calendar window.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Budget {
    /// All four token counts of every token-usage record.
    Tokens {
        /// The limit.
        limit: u64,
        /// The window.
        per: Window,
    },
    /// The records' `cost_usd`.
    Usd {
        /// The limit in US dollars.
        limit: f64,
        /// The window.
        per: Window,
    },
}

impl Budget {
    /// The budget's window.
    pub fn window(&self) -> Window {
        match self {
            Self::Tokens { per, .. } | Self::Usd { per, .. } => *per,
        }
    }
}

/// A calendar window in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// From 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC.
    Week,
    /// From the first of the month, 00:00 UTC.
    Month,
}

impl Window {
    /// `"day"`, `"week"` or `"month"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The start of the window `now` is in.
    pub fn start(&self, now: SystemTime) -> SystemTime {
        to_system(self.start_date(now))
    }

    /// The start of the next window (when the current one resets).
    pub fn end(&self, now: SystemTime) -> SystemTime {
        let start = self.start_date(now);
        let next = match self {
            Self::Day => start.checked_add_days(Days::new(1)),
            Self::Week => start.checked_add_days(Days::new(7)),
            Self::Month => start.checked_add_months(Months::new(1)),
        };
        next.map_or(
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4),
            to_system,
        )
    }

    fn start_date(&self, now: SystemTime) -> NaiveDate {
        let today = DateTime::<Utc>::from(now).date_naive();
        match self {
            Self::Day => today,
            Self::Week => today
                .checked_sub_days(Days::new(u64::from(today.weekday().num_days_from_monday())))
                .unwrap_or(today),
            Self::Month => today.with_day(1).unwrap_or(today),
        }
    }
}

fn to_system(date: NaiveDate) -> SystemTime {
    SystemTime::from(date.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// RFC 3339 in UTC to the second, e.g. `2026-12-08T00:00:00Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A request rate limit: at most `requests` per `per`, per actor and per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rate {
    /// Requests allowed per period (bursts up to this many).
    pub requests: u32,
    /// The period.
    pub per: RatePer,
}

impl Rate {
    /// At most `requests` per `per`.
    pub fn new(requests: u32, per: RatePer) -> Self {
        Self { requests, per }
    }
}

/// The period of a [`Rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RatePer {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
}

impl RatePer {
    /// `"second"` or `"minute"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
        }
    }
}

/// Whether a model without a price may be used under a USD budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Unpriced {
    /// Denied (reason `budget`): its spend could not be counted.
    #[default]
    Deny,
    /// Allowed; its records add no dollars.
    Allow,
}

impl Rules {
    /// The effective rules of an actor: its entry, each absent field taken from the default.
    pub fn for_actor(&self, actor: &str) -> ActorRules {
        match self.actors.get(actor) {
            Some(a) => a.merged(&self.default),
            None => self.default.clone(),
        }
    }

    /// Checks every glob, regex, rate and limit.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`] naming the first bad field (e.g. `actors."alice".rate`).
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.default.validate("default")?;
        let mut ids: Vec<&String> = self.actors.keys().collect();
        ids.sort();
        for id in ids {
            self.actors[id].validate(&format!("actors.{id:?}"))?;
        }
        Ok(())
    }
}

impl ActorRules {
    /// `self`, each absent field taken from `default`.
    pub(crate) fn merged(&self, default: &Self) -> Self {
        Self {
            models: self.models.clone().or_else(|| default.models.clone()),
            deny_models: self
                .deny_models
                .clone()
                .or_else(|| default.deny_models.clone()),
            budget: self.budget.or(default.budget),
            rate: self.rate.or(default.rate),
            mcp_tools: self.mcp_tools.clone().or_else(|| default.mcp_tools.clone()),
            unpriced: self.unpriced.or(default.unpriced),
        }
    }

    fn validate(&self, at: &str) -> Result<(), PolicyError> {
        for (name, globs) in [("models", &self.models), ("deny_models", &self.deny_models)] {
            for (i, g) in globs.iter().flatten().enumerate() {
                globset::Glob::new(g).map_err(|e| {
                    PolicyError::invalid(format!("{at}.{name}[{i}]"), e.to_string())
                })?;
            }
        }
        for (i, r) in self.mcp_tools.iter().flatten().enumerate() {
            regex::Regex::new(r)
                .map_err(|e| PolicyError::invalid(format!("{at}.mcp_tools[{i}]"), e.to_string()))?;
        }
        if let Some(Budget::Usd { limit, .. }) = self.budget
            && !(limit.is_finite() && limit >= 0.0)
        {
            return Err(PolicyError::invalid(
                format!("{at}.budget"),
                format!("usd limit must be a finite number ≥ 0, not {limit}"),
            ));
        }
        if let Some(rate) = self.rate
            && rate.requests == 0
        {
            return Err(PolicyError::invalid(
                format!("{at}.rate"),
                "requests must be greater than zero",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        SystemTime::from(DateTime::parse_from_rfc3339(s).unwrap())
    }

    #[test]
    fn windows_are_utc_calendar_windows() {
        // Monday 2026-12-07.
        let t = at("2026-12-07T23:59:59Z");
        assert_eq!(rfc3339(Window::Day.start(t)), "2026-12-07T00:00:00Z");
        assert_eq!(rfc3339(Window::Day.end(t)), "2026-12-08T00:00:00Z");
        assert_eq!(rfc3339(Window::Week.start(t)), "2026-12-07T00:00:00Z");
        assert_eq!(rfc3339(Window::Week.end(t)), "2026-12-14T00:00:00Z");
        // Sunday night still belongs to the week that began on Monday.
        let sunday = at("2026-12-13T23:59:59Z");
        assert_eq!(rfc3339(Window::Week.start(sunday)), "2026-12-07T00:00:00Z");
        let monday = at("2026-12-14T00:00:00Z");
        assert_eq!(rfc3339(Window::Week.start(monday)), "2026-12-14T00:00:00Z");
        // Month ends: December into January, February of a leap year.
        assert_eq!(rfc3339(Window::Month.start(t)), "2026-12-01T00:00:00Z");
        assert_eq!(rfc3339(Window::Month.end(t)), "2027-01-01T00:00:00Z");
        let feb = at("2028-02-29T12:00:00Z");
        assert_eq!(rfc3339(Window::Month.start(feb)), "2028-02-01T00:00:00Z");
        assert_eq!(rfc3339(Window::Month.end(feb)), "2028-03-01T00:00:00Z");
        // A week across a month and year end.
        let wed = at("2025-12-31T10:00:00Z");
        assert_eq!(rfc3339(Window::Week.start(wed)), "2025-12-29T00:00:00Z");
        assert_eq!(rfc3339(Window::Week.end(wed)), "2026-01-05T00:00:00Z");
    }

    #[test]
    fn an_actor_entry_overrides_field_by_field() {
        let mut rules = Rules::default();
        rules.default.models = Some(vec!["claude-*".into()]);
        rules.default.rate = Some(Rate::new(10, RatePer::Minute));
        rules.actors.insert(
            "alice".into(),
            ActorRules {
                models: Some(vec!["gpt-*".into()]),
                ..ActorRules::default()
            },
        );
        let alice = rules.for_actor("alice");
        assert_eq!(alice.models, Some(vec!["gpt-*".to_owned()]));
        assert_eq!(alice.rate, Some(Rate::new(10, RatePer::Minute)));
        assert_eq!(
            rules.for_actor("bob").models,
            Some(vec!["claude-*".to_owned()])
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut rules = Rules::default();
        rules.actors.insert(
            "alice".into(),
            ActorRules {
                models: Some(vec!["ok-*".into(), "bad[".into()]),
                ..ActorRules::default()
            },
        );
        let e = rules.validate().unwrap_err().to_string();
        assert!(e.contains("actors.\"alice\".models[1]"), "{e}");

        let mut rules = Rules::default();
        rules.default.rate = Some(Rate::new(0, RatePer::Second));
        assert!(
            rules
                .validate()
                .unwrap_err()
                .to_string()
                .contains("default.rate")
        );

        let mut rules = Rules::default();
        rules.default.budget = Some(Budget::Usd {
            limit: -1.0,
            per: Window::Day,
        });
        assert!(
            rules
                .validate()
                .unwrap_err()
                .to_string()
                .contains("default.budget")
        );

        let mut rules = Rules::default();
        rules.default.mcp_tools = Some(vec!["(".into()]);
        assert!(
            rules
                .validate()
                .unwrap_err()
                .to_string()
                .contains("default.mcp_tools[0]")
        );
    }
}

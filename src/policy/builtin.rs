//! [`RulesPolicy`]: the built-in policy, model access, then budget, then rate (first deny
//! wins), from [`Rules`], with a per-process spend ledger refreshed from a
//! [`SpendSource`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::budget::{Compiled, rate_limited};
use super::clock::{Clock, SystemClock};
use super::ledger::{Amount, Ledger};
use super::rate::Limiters;
use super::rules::{Budget, Rules, Window};
use super::spend::{Spend, SpendSource};
use super::{Allow, Decision, Policy, PolicyError, PolicyRequest};
use crate::recorder::TokenUsage;

/// Default of [`RulesPolicyBuilder::refresh_every`]: 2 s.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);

/// The built-in policy: per actor (and a default), model globs, a budget in tokens or US
/// dollars per UTC calendar window, and a request rate, checked in that order (first deny
/// wins); an allowed request's injected MCP tools are narrowed to `mcp_tools`.
///
/// **Budgets** deny the next request once the window's spend is at or over the limit (a
/// running request is never cut). The spend is kept in memory, per process: this process's
/// own token-usage records count at once (through [`Policy::usage`]), and with a
/// [`SpendSource`] (the PostgreSQL recorder shared by several replicas) every replica's
/// records are read back every [`refresh_every`](RulesPolicyBuilder::refresh_every)
/// (default 2 s) in the background, never per request. A spend on another replica is
/// therefore enforced here within `refresh_every` + the time that replica's record queue
/// takes to write it (typically milliseconds) + one store read: under 5 s with the
/// defaults.
///
/// **Rate limits** are GCRA buckets (`governor`) per actor **in this process**: with N
/// replicas behind a load balancer an actor may send up to N times the rate.
///
/// ```
/// use aibridge::policy::{Budget, Rules, RulesPolicy, Window};
/// let mut rules = Rules::default();
/// rules.default.models = Some(vec!["claude-*".into()]);
/// rules.default.budget = Some(Budget::Tokens { limit: 2_000_000, per: Window::Day });
/// let policy = RulesPolicy::builder().rules(rules).build().unwrap();
/// # drop(policy);
/// ```
pub struct RulesPolicy {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<Arc<State>>,
    ledger: Ledger,
    limiters: Limiters,
    clock: Arc<dyn Clock>,
}

/// One version of the rules, compiled.
struct State {
    rules: Rules,
    default: Compiled,
    actors: HashMap<String, Compiled>,
    /// The windows of every budget in the rules.
    windows: Vec<Window>,
}

impl State {
    fn new(rules: Rules) -> Result<Self, PolicyError> {
        rules.validate()?;
        let default = Compiled::new(&rules.default, "default")?;
        let mut actors = HashMap::with_capacity(rules.actors.len());
        for (id, a) in &rules.actors {
            let merged = a.merged(&rules.default);
            actors.insert(
                id.clone(),
                Compiled::new(&merged, &format!("actors.{id:?}"))?,
            );
        }
        let mut windows: Vec<Window> = std::iter::once(&default)
            .chain(actors.values())
            .filter_map(|c| c.budget.map(|b| b.window()))
            .collect();
        windows.sort_by_key(|w| w.as_str());
        windows.dedup();
        Ok(Self {
            rules,
            default,
            actors,
            windows,
        })
    }

    fn of(&self, actor: &str) -> &Compiled {
        self.actors.get(actor).unwrap_or(&self.default)
    }
}

impl fmt::Debug for RulesPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RulesPolicy")
            .field("rules", &self.inner.state().rules)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RulesPolicy`].
#[must_use]
pub struct RulesPolicyBuilder {
    rules: Rules,
    source: Option<Arc<dyn SpendSource>>,
    refresh_every: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RulesPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RulesPolicyBuilder")
            .field("rules", &self.rules)
            .field("spend_source", &self.source.is_some())
            .field("refresh_every", &self.refresh_every)
            .finish_non_exhaustive()
    }
}

impl RulesPolicyBuilder {
    /// The rules (default: none, every request allowed).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Where every replica's spend is read from (e.g. the `PostgresRecorder` all replicas
    /// write to). Without one, only this process's records count.
    pub fn spend_source(mut self, source: Arc<dyn SpendSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// How often the spend is read from the source (default 2 s; at least 10 ms).
    pub fn refresh_every(mut self, every: Duration) -> Self {
        self.refresh_every = every.max(Duration::from_millis(10));
        self
    }

    /// The clock of the budget windows (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the rules and, with a spend source, starts the background refresh (the
    /// first read starts at once; see [`RulesPolicy::refresh_now`]).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`] for a bad rule; [`PolicyError::NoRuntime`] when a spend
    /// source is set outside a Tokio runtime.
    pub fn build(self) -> Result<RulesPolicy, PolicyError> {
        let state = State::new(self.rules)?;
        let inner = Arc::new(Inner {
            state: RwLock::new(Arc::new(state)),
            ledger: Ledger::default(),
            limiters: Limiters::default(),
            clock: self.clock,
        });
        if let Some(source) = self.source {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| PolicyError::NoRuntime)?;
            handle.spawn(refresh_loop(
                Arc::downgrade(&inner),
                source,
                self.refresh_every,
            ));
        }
        Ok(RulesPolicy { inner })
    }
}

/// Reads the spend every `every` until the policy is dropped.
async fn refresh_loop(inner: Weak<Inner>, source: Arc<dyn SpendSource>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.refresh(source.as_ref()).await;
    }
}

impl Inner {
    fn state(&self) -> Arc<State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn refresh(&self, source: &dyn SpendSource) {
        let windows = self.state().windows.clone();
        for w in windows {
            let start = w.start(self.clock.now());
            if !self.ledger.read_begins(w, start) {
                continue;
            }
            let rows = match source.spend_since(start).await {
                Ok(rows) => Some(rows),
                Err(e) => {
                    tracing::warn!(error = %e, window = w.as_str(), "policy: spend refresh failed; keeping the last figures");
                    None
                }
            };
            self.ledger.read_ends(w, start, rows);
        }
    }
}

/// An actor's budget and what it spent in the current window (for a usage page).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BudgetStatus {
    /// The actor.
    pub actor: String,
    /// Its effective budget.
    pub budget: Budget,
    /// Tokens spent in the window (all four counts).
    pub spent_tokens: u64,
    /// US dollars spent in the window.
    pub spent_usd: f64,
    /// When the window resets.
    pub resets_at: SystemTime,
}

impl RulesPolicy {
    /// A builder.
    pub fn builder() -> RulesPolicyBuilder {
        RulesPolicyBuilder {
            rules: Rules::default(),
            source: None,
            refresh_every: DEFAULT_REFRESH,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the rules (hot reload). The spend ledger and the rate limiters' state are
    /// kept (a limiter restarts only for an actor whose rate changed).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`]: the old rules stay in force.
    pub fn replace_rules(&self, rules: Rules) -> Result<(), PolicyError> {
        let state = Arc::new(State::new(rules)?);
        *self
            .inner
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        Ok(())
    }

    /// The rules in force.
    pub fn rules(&self) -> Rules {
        self.inner.state().rules.clone()
    }

    /// Reads the spend source now (the background refresh does it every `refresh_every`).
    pub async fn refresh_now(&self, source: &dyn SpendSource) {
        self.inner.refresh(source).await;
    }

    /// What `actor` spent in the current window of its budget.
    pub fn spend(&self, actor: &str) -> Spend {
        let state = self.inner.state();
        let Some(budget) = state.of(actor).budget else {
            return Spend::default();
        };
        let now = self.inner.clock.now();
        let w = budget.window();
        let a = self.inner.ledger.spent(w, actor, now);
        Spend {
            window: Some(w),
            tokens: a.tokens,
            usd: a.usd,
            resets_at: Some(w.end(now)),
        }
    }

    /// Every actor with a budget (named in the rules, or with spend under the default
    /// budget), sorted by actor, with its spend in the current window.
    pub fn budget_status(&self) -> Vec<BudgetStatus> {
        let state = self.inner.state();
        let now = self.inner.clock.now();
        let mut actors: Vec<String> = state
            .actors
            .iter()
            .filter(|(_, c)| c.budget.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(b) = state.default.budget {
            actors.extend(self.inner.ledger.actors(b.window()));
        }
        actors.sort();
        actors.dedup();
        actors
            .into_iter()
            .filter_map(|actor| {
                let budget = state.of(&actor).budget?;
                let w = budget.window();
                let a = self.inner.ledger.spent(w, &actor, now);
                Some(BudgetStatus {
                    actor,
                    budget,
                    spent_tokens: a.tokens,
                    spent_usd: a.usd,
                    resets_at: w.end(now),
                })
            })
            .collect()
    }
}

#[async_trait]
impl Policy for RulesPolicy {
    async fn check(&self, req: &PolicyRequest<'_>) -> Decision {
        let state = self.inner.state();
        let actor = req.actor.id();
        let rules = state.of(actor);
        if req.api == crate::provider::Api::Mcp {
            // The MCP endpoint for editors: no model and no tokens, so only the rate and
            // the tool filter apply.
            if let Some(rate) = rules.rate
                && let Err(wait) = self.inner.limiters.check(actor, rate)
            {
                return Decision::Deny(rate_limited(rate, wait));
            }
            return Decision::Allow(Allow {
                mcp_tools: rules.mcp_tools.clone(),
            });
        }
        if let Some(d) = rules.model(actor, req.model) {
            return Decision::Deny(d);
        }
        let now = self.inner.clock.now();
        let ledger = &self.inner.ledger;
        let spent = |b: Budget| ledger.spent(b.window(), actor, now);
        if let Some(d) = rules.budget(req.model, &state.rules.prices, spent, now) {
            return Decision::Deny(d);
        }
        if let Some(rate) = rules.rate
            && let Err(wait) = self.inner.limiters.check(actor, rate)
        {
            return Decision::Deny(rate_limited(rate, wait));
        }
        Decision::Allow(Allow {
            mcp_tools: rules.mcp_tools.clone(),
        })
    }

    fn usage(&self, actor: &str, _model: &str, usage: &TokenUsage) {
        let state = self.inner.state();
        if state.windows.is_empty() {
            return;
        }
        let amount = Amount {
            tokens: usage
                .input_tokens
                .saturating_add(usage.output_tokens)
                .saturating_add(usage.cache_read_input_tokens)
                .saturating_add(usage.cache_write_input_tokens),
            usd: usage.cost_usd.unwrap_or(0.0),
        };
        self.inner
            .ledger
            .add(&state.windows, actor, amount, self.inner.clock.now());
    }
}

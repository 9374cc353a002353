//! The gateway's policy: the file of `AIBRIDGE_POLICY` (format in `policy_file`) turned
//! into the library's `policy::Rules` and `Prices`, loaded into a `RulesPolicy` whose spend
//! source is the recorder, and reloaded when the file changes or on SIGHUP.
//!
//! # Reloading: a poll, not a file watcher
//!
//! The file is read again every [`POLL_EVERY`] and on SIGHUP, and the new text is applied
//! when its bytes differ from the last text read. A poll of one small file costs nothing,
//! needs no extra dependency and sees every way a file is replaced: an editor writing a new
//! file and renaming it over the old one, a Kubernetes ConfigMap swapping a symlink, a file
//! on a network or container bind mount, where inotify-based watchers (such as the `notify`
//! crate) miss events or follow the old inode. The lag is at most [`POLL_EVERY`]; SIGHUP
//! applies it at once.
//!
//! A new version that does not parse or validate is logged as an error and the policy in
//! force stays (its rate limiters and spend ledger too: `RulesPolicy::replace_rules` keeps
//! them). The `[prices]` table of a new version applies at once to the dollar budgets; the
//! cost recorded per token usage keeps the prices the gateway started with until a restart
//! (the bridge's price table is fixed when it is built), which the reload logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aibridge::policy::{
    ActorRules, Budget, Price, Prices, Rate, RatePer, Rules, RulesPolicy, SpendSource, Unpriced,
    Window,
};

use crate::policy_file::{
    self, BudgetFile, PolicyFile, RateFile, RatePerFile, RulesFile, UnpricedFile, WindowFile,
};
use crate::usage::{BudgetRow, Limit};

/// How often the policy file is read again.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(2);

/// A loaded policy file: the policy the bridge consults and where it came from.
pub(crate) struct GatewayPolicy {
    path: PathBuf,
    policy: Arc<RulesPolicy>,
    /// The text last read (applied or rejected), so an unchanged file is not re-applied
    /// and a bad one is logged once.
    last: tokio::sync::Mutex<Vec<u8>>,
    /// The `[prices]` the bridge was built with (recorded costs).
    started_prices: String,
    /// The actors' MCP headers the bridge asks (replaced on reload).
    mcp_headers: crate::mcp_headers::FileMcpHeaders,
}

/// The parts of a policy file the gateway needs.
pub(crate) struct Loaded {
    pub(crate) rules: Rules,
    pub(crate) prices: Prices,
    /// The raw `[prices]` section, to tell a price change on reload.
    prices_key: String,
    /// The actors' own MCP headers.
    pub(crate) mcp_headers: aibridge::mcp::ActorHeaders,
    text: Vec<u8>,
}

/// Reads, parses, converts and validates the policy file at `path`. The error is a message
/// for people that names the file and the line (or the field).
pub(crate) fn load(path: &Path) -> Result<Loaded, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))?;
    let file = policy_file::parse(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let (rules, prices) = convert(&file).map_err(|e| format!("{}: {e}", path.display()))?;
    let mcp_headers =
        crate::mcp_headers::from_file(&file).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Loaded {
        mcp_headers,
        rules,
        prices,
        prices_key: format!("{:?}", file.prices),
        text: bytes,
    })
}

/// The library's rules and prices of a parsed file. The prices are the built-in table
/// with the file's entries added (the file's win).
pub(crate) fn convert(file: &PolicyFile) -> Result<(Rules, Prices), String> {
    let mut prices = Prices::builtin();
    for (model, p) in &file.prices {
        let p = p.get_ref();
        prices = prices
            .with(
                model,
                Price::new(p.input, p.output, p.cache_read, p.cache_write),
            )
            .map_err(|e| e.to_string())?;
    }
    let mut rules = Rules {
        default: actor_rules(&file.default),
        prices: prices.clone(),
        ..Rules::default()
    };
    for (id, r) in &file.actors {
        rules.actors.insert(id.clone(), actor_rules(r));
    }
    rules.validate().map_err(|e| e.to_string())?;
    Ok((rules, prices))
}

fn actor_rules(r: &RulesFile) -> ActorRules {
    let mut out = ActorRules::default();
    out.models.clone_from(&r.models);
    out.deny_models.clone_from(&r.deny_models);
    out.budget = r.budget.as_ref().map(|b| budget(b.get_ref()));
    out.rate = r.rate.as_ref().map(|r| rate(r.get_ref()));
    out.mcp_tools = r.mcp_tools.as_ref().map(|t| t.get_ref().clone());
    out.unpriced = r.unpriced.map(|u| match u {
        UnpricedFile::Deny => Unpriced::Deny,
        UnpricedFile::Allow => Unpriced::Allow,
    });
    out
}

fn budget(b: &BudgetFile) -> Budget {
    let per = match b.per {
        WindowFile::Day => Window::Day,
        WindowFile::Week => Window::Week,
        WindowFile::Month => Window::Month,
    };
    // `policy_file::parse` checked that exactly one of the two is set.
    match (b.tokens, b.usd) {
        (Some(limit), _) => Budget::Tokens { limit, per },
        (None, usd) => Budget::Usd {
            limit: usd.unwrap_or(0.0),
            per,
        },
    }
}

fn rate(r: &RateFile) -> Rate {
    Rate::new(
        r.requests,
        match r.per {
            RatePerFile::Second => RatePer::Second,
            RatePerFile::Minute => RatePer::Minute,
        },
    )
}

// === impl GatewayPolicy ===

impl GatewayPolicy {
    /// Builds the `RulesPolicy` of a loaded file, reading every replica's spend from
    /// `spend` (the recorder).
    pub(crate) fn new(
        path: PathBuf,
        loaded: Loaded,
        spend: Option<Arc<dyn SpendSource>>,
    ) -> Result<Self, String> {
        let mut builder = RulesPolicy::builder().rules(loaded.rules);
        if let Some(s) = spend {
            builder = builder.spend_source(s);
        }
        let policy = builder
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path,
            policy: Arc::new(policy),
            last: tokio::sync::Mutex::new(loaded.text),
            started_prices: loaded.prices_key,
            mcp_headers: crate::mcp_headers::FileMcpHeaders::default(),
        })
    }

    /// Reloads also replace these MCP headers (the ones the bridge was built with).
    pub(crate) fn with_mcp_headers(mut self, headers: crate::mcp_headers::FileMcpHeaders) -> Self {
        self.mcp_headers = headers;
        self
    }

    /// The policy the bridge consults.
    pub(crate) fn policy(&self) -> Arc<RulesPolicy> {
        Arc::clone(&self.policy)
    }

    /// Reads the file again and applies it when it changed (`force`: even when it did not).
    /// Returns whether a new version was applied; a bad version is logged and ignored.
    pub(crate) async fn reload(&self, force: bool) -> bool {
        let mut last = self.last.lock().await;
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) => {
                if force || !last.is_empty() {
                    tracing::error!(path = %self.path.display(), error = %e, "policy file: cannot read it; the policy in force stays");
                }
                // Read again once it is back, even with the same text.
                last.clear();
                return false;
            }
        };
        if !force && *last == bytes {
            return false;
        }
        last.clone_from(&bytes);
        drop(last);
        let loaded = match load(&self.path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "policy file: the new version is invalid; the policy in force stays");
                return false;
            }
        };
        let prices_changed = loaded.prices_key != self.started_prices;
        let mcp_headers = loaded.mcp_headers;
        match self.policy.replace_rules(loaded.rules) {
            Ok(()) => {
                self.mcp_headers.replace(mcp_headers);
                tracing::info!(path = %self.path.display(), "policy file: reloaded");
                if prices_changed {
                    tracing::warn!(
                        "policy file: [prices] changed; dollar budgets use the new prices now, recorded costs after a restart"
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "policy file: the new version is invalid; the policy in force stays");
                false
            }
        }
    }

    /// Each actor's spend against its budget in the current window, for the usage page
    /// (`None` when no rule has a budget).
    pub(crate) fn budget_rows(&self) -> Option<Vec<BudgetRow>> {
        let rules = self.policy.rules();
        let any_budget =
            rules.default.budget.is_some() || rules.actors.values().any(|a| a.budget.is_some());
        if !any_budget {
            return None;
        }
        Some(
            self.policy
                .budget_status()
                .into_iter()
                .map(|s| {
                    let (limit, per) = match s.budget {
                        Budget::Tokens { limit, per } => (Limit::Tokens(limit), per),
                        Budget::Usd { limit, per } => (Limit::Usd(limit), per),
                        // A kind of budget this gateway does not know yet.
                        _ => (Limit::Tokens(0), Window::Day),
                    };
                    BudgetRow {
                        actor: s.actor,
                        limit,
                        per: per.as_str(),
                        spent_tokens: s.spent_tokens,
                        spent_usd: s.spent_usd,
                        resets_at: s.resets_at,
                    }
                })
                .collect(),
        )
    }
}

/// Reloads `policy` every [`POLL_EVERY`] when the file changed, and at once on SIGHUP,
/// until the process ends.
pub(crate) fn spawn_reloader(policy: Arc<GatewayPolicy>) {
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let force = tokio::select! {
                _ = poll.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            #[cfg(not(unix))]
            let force = {
                poll.tick().await;
                false
            };
            if force {
                tracing::info!("SIGHUP: reading the policy file again");
            }
            policy.reload(force).await;
        }
    });
}

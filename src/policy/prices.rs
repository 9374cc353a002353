//! [`Prices`]: US dollars per million tokens per model pattern, and the built-in table.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use globset::{Candidate, Glob, GlobSet, GlobSetBuilder};

use super::PolicyError;
use crate::recorder::TokenUsage;

/// A model's price in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    /// Uncached input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from the prompt cache.
    pub cache_read: f64,
    /// Input tokens written to the prompt cache.
    pub cache_write: f64,
}

impl Price {
    /// A price; arguments in the order of the fields.
    pub const fn new(input: f64, output: f64, cache_read: f64, cache_write: f64) -> Self {
        Self {
            input,
            output,
            cache_read,
            cache_write,
        }
    }

    /// What `usage` costs at this price.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^53")]
        let per = |tokens: u64, usd: f64| tokens as f64 * usd;
        (per(usage.input_tokens, self.input)
            + per(usage.output_tokens, self.output)
            + per(usage.cache_read_input_tokens, self.cache_read)
            + per(usage.cache_write_input_tokens, self.cache_write))
            / 1_000_000.0
    }
}

/// One entry: a glob on the model and its price.
#[derive(Clone)]
struct Entry {
    pattern: Arc<str>,
    glob: Glob,
    price: Price,
}

/// Entries and one compiled set of their globs: a lookup matches the model once against
/// the set (literal, prefix and suffix globs without a regex) instead of once per entry.
#[derive(Clone)]
struct Table {
    entries: Vec<Entry>,
    set: GlobSet,
}

impl Table {
    fn new(entries: Vec<Entry>) -> Result<Self, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for e in &entries {
            b.add(e.glob.clone());
        }
        Ok(Self {
            set: b.build()?,
            entries,
        })
    }

    /// The price of the longest matching pattern (the later of equally long ones).
    fn best(&self, model: &Candidate<'_>) -> Option<Price> {
        if self.entries.is_empty() {
            return None;
        }
        // Ascending indices, so that `max_by_key` (the last of equal maxima) picks the later
        // of equally long patterns. Made only for models `Prices` has not answered yet.
        let mut found = self.set.matches_candidate(model);
        found.sort_unstable();
        found
            .into_iter()
            .map(|i| &self.entries[i])
            .max_by_key(|e| e.pattern.len())
            .map(|e| e.price)
    }
}

/// A price table: globs on the model name to [`Price`]s. A host entry wins over every
/// built-in one; among entries of one kind the longest matching pattern wins (so
/// `gpt-4o-mini*` beats `gpt-4o*`).
///
/// ```
/// use aibridge::policy::{Price, Prices};
/// let prices = Prices::builtin().with("my-local-*", Price::new(0.0, 0.0, 0.0, 0.0)).unwrap();
/// assert_eq!(prices.price("my-local-7b"), Some(Price::new(0.0, 0.0, 0.0, 0.0)));
/// assert!(prices.price("claude-sonnet-4-5-20250929").is_some());
/// assert_eq!(prices.price("someone-elses-model"), None);
/// ```
#[derive(Clone)]
pub struct Prices {
    host: Table,
    builtin: Arc<Table>,
    /// Each model's answer once found: a bridge prices every token record, for a handful
    /// of models.
    known: Arc<Known>,
}

/// The lookups already made, model → price; at most [`Known::MAX`] models (the model is
/// client input: past the bound, lookups are made again rather than remembered).
#[derive(Default)]
struct Known(RwLock<HashMap<Box<str>, Option<Price>>>);

impl Known {
    const MAX: usize = 256;

    fn get(&self, model: &str) -> Option<Option<Price>> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(model).copied()
    }

    fn put(&self, model: &str, price: Option<Price>) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() < Self::MAX {
            map.insert(model.into(), price);
        }
    }
}

impl fmt::Debug for Prices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prices")
            .field(
                "host",
                &self
                    .host
                    .entries
                    .iter()
                    .map(|e| &*e.pattern)
                    .collect::<Vec<_>>(),
            )
            .field("builtin", &self.builtin.entries.len())
            .finish()
    }
}

impl Default for Prices {
    /// [`Prices::builtin`].
    fn default() -> Self {
        Self::builtin()
    }
}

impl Prices {
    /// The built-in table of current Anthropic and OpenAI models (see the source of this
    /// file for where each figure comes from and when it was read).
    pub fn builtin() -> Self {
        let builtin = BUILTIN
            .iter()
            .filter_map(|(pattern, price)| entry(pattern, *price).ok())
            .collect();
        Self {
            host: empty_table(),
            builtin: Arc::new(Table::new(builtin).unwrap_or_else(|_| empty_table())),
            known: Arc::default(),
        }
    }

    /// A table without any entry (every model unpriced).
    pub fn empty() -> Self {
        Self {
            host: empty_table(),
            builtin: Arc::new(empty_table()),
            known: Arc::default(),
        }
    }

    /// Adds a host entry (wins over the built-in ones).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`] when the glob does not parse or a figure is negative or
    /// not finite.
    pub fn with(mut self, pattern: &str, price: Price) -> Result<Self, PolicyError> {
        let field = format!("prices.{pattern:?}");
        for (name, v) in [
            ("input", price.input),
            ("output", price.output),
            ("cache_read", price.cache_read),
            ("cache_write", price.cache_write),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(PolicyError::invalid(
                    format!("{field}.{name}"),
                    format!("must be a finite number ≥ 0, not {v}"),
                ));
            }
        }
        let e = entry(pattern, price)
            .map_err(|e| PolicyError::invalid(field.clone(), e.to_string()))?;
        let mut entries = std::mem::take(&mut self.host.entries);
        entries.push(e);
        self.host = Table::new(entries).map_err(|e| PolicyError::invalid(field, e.to_string()))?;
        self.known = Arc::default();
        Ok(self)
    }

    /// The price of a model, if any entry matches it.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(known) = self.known.get(model) {
            return known;
        }
        let candidate = Candidate::new(model);
        let price = self
            .host
            .best(&candidate)
            .or_else(|| self.builtin.best(&candidate));
        self.known.put(model, price);
        price
    }

    /// What `usage` of `model` cost; `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &TokenUsage) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }
}

fn entry(pattern: &str, price: Price) -> Result<Entry, globset::Error> {
    Ok(Entry {
        pattern: Arc::from(pattern),
        glob: Glob::new(pattern)?,
        price,
    })
}

fn empty_table() -> Table {
    Table {
        entries: Vec::new(),
        set: GlobSet::empty(),
    }
}

/// The built-in prices, US dollars per million tokens: input, output, cache read, cache
/// write. Anthropic's cache write is the 5-minute rate. OpenAI bills no cache writes (the
/// bridge records none for it), so its cache-write figure is the input price.
///
/// Sources, read on 2026-12-07 (this crate's search copies of the pages):
/// - [A] <https://docs.anthropic.com/en/docs/about-claude/pricing> (Anthropic's price
///   table: Opus 4.1/4/3, Sonnet 4/3.7/3.5, Haiku 3.5/3 with cache rates).
/// - [B] <https://deploybase.ai/articles/claude-api-pricing> (as of 2026-03-21: Opus
///   4.6/4.5 $5/$25, Sonnet 4.6/4.5 $3/$15, Haiku 4.5 $1/$5); their cache rates follow
///   Anthropic's rule in [A] (write 1.25× input, read 0.1× input).
/// - [C] <https://platform.openai.com/docs/pricing> (OpenAI's price page; GPT-5, GPT-5 mini
///   and nano, GPT-4.1, GPT-4o, o3, o4-mini) as summarised in
///   <https://chatgptpricing-akr.pages.dev/api-pricing> and
///   <https://nicolalazzari.ai/articles/openai-api-pricing-explained-2026>.
/// - [D] <https://www.morphllm.com/openai-api-pricing> (as of June 2026: GPT-5.5, GPT-5.4
///   and its mini and nano).
///
/// Long-context surcharges (e.g. Sonnet 4.5 above 200K input tokens) are not modelled: a
/// host that needs them adds its own entries.
const BUILTIN: &[(&str, Price)] = &[
    // Anthropic [B]
    ("claude-opus-4-6*", Price::new(5.0, 25.0, 0.50, 6.25)),
    ("claude-opus-4-5*", Price::new(5.0, 25.0, 0.50, 6.25)),
    ("claude-sonnet-4-6*", Price::new(3.0, 15.0, 0.30, 3.75)),
    ("claude-sonnet-4-5*", Price::new(3.0, 15.0, 0.30, 3.75)),
    ("claude-haiku-4-5*", Price::new(1.0, 5.0, 0.10, 1.25)),
    // Anthropic [A]
    ("claude-opus-4-1*", Price::new(15.0, 75.0, 1.50, 18.75)),
    ("claude-opus-4-2*", Price::new(15.0, 75.0, 1.50, 18.75)),
    ("claude-opus-4-0*", Price::new(15.0, 75.0, 1.50, 18.75)),
    ("claude-sonnet-4-2*", Price::new(3.0, 15.0, 0.30, 3.75)),
    ("claude-sonnet-4-0*", Price::new(3.0, 15.0, 0.30, 3.75)),
    ("claude-3-7-sonnet*", Price::new(3.0, 15.0, 0.30, 3.75)),
    ("claude-3-5-sonnet*", Price::new(3.0, 15.0, 0.30, 3.75)),
    ("claude-3-5-haiku*", Price::new(0.80, 4.0, 0.08, 1.0)),
    ("claude-3-opus*", Price::new(15.0, 75.0, 1.50, 18.75)),
    ("claude-3-haiku*", Price::new(0.25, 1.25, 0.03, 0.30)),
    // OpenAI [D]
    ("gpt-5.5*", Price::new(5.0, 30.0, 0.50, 5.0)),
    ("gpt-5.4*", Price::new(2.50, 15.0, 0.25, 2.50)),
    ("gpt-5.4-mini*", Price::new(0.75, 4.50, 0.075, 0.75)),
    ("gpt-5.4-nano*", Price::new(0.20, 1.25, 0.02, 0.20)),
    // OpenAI [C]
    ("gpt-5.2*", Price::new(1.75, 14.0, 0.175, 1.75)),
    ("gpt-5", Price::new(1.25, 10.0, 0.125, 1.25)),
    ("gpt-5-2*", Price::new(1.25, 10.0, 0.125, 1.25)),
    ("gpt-5-codex*", Price::new(1.25, 10.0, 0.125, 1.25)),
    ("gpt-5.1*", Price::new(1.25, 10.0, 0.125, 1.25)),
    ("gpt-5-mini*", Price::new(0.25, 2.0, 0.025, 0.25)),
    ("gpt-5-nano*", Price::new(0.05, 0.40, 0.005, 0.05)),
    ("gpt-4.1*", Price::new(2.0, 8.0, 0.50, 2.0)),
    ("gpt-4.1-mini*", Price::new(0.40, 1.60, 0.10, 0.40)),
    ("gpt-4.1-nano*", Price::new(0.10, 0.40, 0.025, 0.10)),
    ("gpt-4o*", Price::new(2.50, 10.0, 1.25, 2.50)),
    ("gpt-4o-mini*", Price::new(0.15, 0.60, 0.075, 0.15)),
    ("o3", Price::new(2.0, 8.0, 0.50, 2.0)),
    ("o3-2*", Price::new(2.0, 8.0, 0.50, 2.0)),
    ("o4-mini*", Price::new(1.10, 4.40, 0.275, 1.10)),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::recorder::RecordId;

    fn usage(input: u64, output: u64, read: u64, write: u64) -> TokenUsage {
        TokenUsage {
            id: RecordId::new(),
            interception_id: RecordId::new(),
            provider_response_id: None,
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: read,
            cache_write_input_tokens: write,
            extra: BTreeMap::new(),
            cost_usd: None,
            created_at: SystemTime::now(),
        }
    }

    #[test]
    fn every_builtin_pattern_compiles() {
        assert_eq!(Prices::builtin().builtin.entries.len(), BUILTIN.len());
    }

    #[test]
    fn the_longest_matching_pattern_wins() {
        let p = Prices::builtin();
        assert_eq!(p.price("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(p.price("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(p.price("gpt-5").unwrap().input, 1.25);
        assert_eq!(p.price("gpt-5-mini").unwrap().input, 0.25);
        assert_eq!(p.price("gpt-5.4-mini").unwrap().input, 0.75);
        assert_eq!(p.price("claude-sonnet-4-5-20250929").unwrap().output, 15.0);
        assert_eq!(p.price("claude-3-5-haiku-latest").unwrap().input, 0.80);
        assert_eq!(p.price("mystery-model"), None);
        assert_eq!(Prices::empty().price("gpt-5"), None);
    }

    #[test]
    fn host_entries_win_and_costs_add_every_count() {
        let p = Prices::builtin()
            .with("claude-*", Price::new(1.0, 2.0, 0.5, 4.0))
            .unwrap();
        let cost = p
            .cost(
                "claude-sonnet-4-5",
                &usage(1_000_000, 500_000, 2_000_000, 250_000),
            )
            .unwrap();
        assert!((cost - (1.0 + 1.0 + 1.0 + 1.0)).abs() < 1e-9, "{cost}");
        assert_eq!(p.cost("unknown", &usage(1, 1, 1, 1)), None);
        // Exact figures of one built-in: Sonnet 4.5 at $3 / $15 / $0.30 / $3.75.
        let cost = Prices::builtin()
            .cost("claude-sonnet-4-5", &usage(1000, 2000, 10_000, 4000))
            .unwrap();
        assert!(
            (cost - (0.003 + 0.030 + 0.003 + 0.015)).abs() < 1e-12,
            "{cost}"
        );
    }

    #[test]
    fn remembered_answers_are_bounded_and_forgotten_when_an_entry_is_added() {
        let p = Prices::builtin();
        assert_eq!(p.price("gpt-4o-mini").unwrap().input, 0.15);
        assert_eq!(p.known.get("gpt-4o-mini"), Some(p.price("gpt-4o-mini")));
        // A later host entry is seen although the model's answer was remembered.
        let p = p
            .with("gpt-4o-mini", Price::new(9.0, 9.0, 9.0, 9.0))
            .unwrap();
        assert_eq!(p.price("gpt-4o-mini").unwrap().input, 9.0);
        // Client-chosen models do not grow the memory past its bound, and lookups past
        // it still answer.
        for i in 0..Known::MAX + 50 {
            assert_eq!(p.price(&format!("mystery-{i}")), None);
        }
        assert_eq!(p.known.0.read().unwrap().len(), Known::MAX);
        assert_eq!(p.price("gpt-5-nano-x").unwrap().input, 0.05);
        assert_eq!(p.known.get("gpt-5-nano-x"), None);
    }

    #[test]
    fn bad_host_entries_are_refused_with_the_field() {
        let e = Prices::empty()
            .with("a[", Price::new(1.0, 1.0, 1.0, 1.0))
            .unwrap_err();
        assert!(e.to_string().contains("prices.\"a[\""), "{e}");
        let e = Prices::empty()
            .with("m", Price::new(1.0, -1.0, 1.0, 1.0))
            .unwrap_err();
        assert!(e.to_string().contains("prices.\"m\".output"), "{e}");
    }
}

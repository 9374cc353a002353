//! The per-process spend ledger of [`RulesPolicy`](super::RulesPolicy): one per budget
//! window in use, fed at once by this process's own token-usage records and refreshed from
//! the store (every replica's records) in the background.
//!
//! An actor's spend is `max(store + own records since the last store read began, own
//! records in the window)`: the second term keeps one process exact even when a refresh
//! read the store before this process's last records were written; the first adds the
//! other replicas' records, late by at most one refresh period plus their write delay.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::rules::Window;
use super::spend::ActorSpend;

/// Tokens and dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Amount {
    pub(crate) tokens: u64,
    pub(crate) usd: f64,
}

impl Amount {
    fn add(&mut self, other: Self) {
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.usd += other.usd;
    }

    fn max(self, other: Self) -> Self {
        Self {
            tokens: self.tokens.max(other.tokens),
            usd: self.usd.max(other.usd),
        }
    }
}

#[derive(Debug, Default)]
struct WindowState {
    start: Option<SystemTime>,
    /// The end of the window starting at `start` (cached: no calendar arithmetic per
    /// request while `now` stays in the window).
    end: Option<SystemTime>,
    /// The store's sums at the last successful read.
    store: HashMap<String, Amount>,
    /// This process's records since that read began.
    since_read: HashMap<String, Amount>,
    /// This process's records in the window.
    own: HashMap<String, Amount>,
    /// Own records set aside while a read is running (restored if it fails).
    reading: Option<HashMap<String, Amount>>,
}

impl WindowState {
    /// Starts over when the window moved on.
    fn roll(&mut self, start: SystemTime) {
        if self.start != Some(start) {
            *self = Self {
                start: Some(start),
                ..Self::default()
            };
        }
    }

    /// Rolls to the window `now` is in, computing its bounds only when `now` is outside
    /// the cached ones.
    fn roll_to(&mut self, window: Window, now: SystemTime) {
        if let (Some(start), Some(end)) = (self.start, self.end)
            && start <= now
            && now < end
        {
            return;
        }
        self.roll(window.start(now));
        self.end = Some(window.end(now));
    }

    fn spent(&self, actor: &str) -> Amount {
        let mut merged = self.store.get(actor).copied().unwrap_or_default();
        if let Some(a) = self.since_read.get(actor) {
            merged.add(*a);
        }
        // A running read may miss records made before it began but written after.
        if let Some(a) = self.reading.as_ref().and_then(|r| r.get(actor)) {
            merged.add(*a);
        }
        merged.max(self.own.get(actor).copied().unwrap_or_default())
    }
}

/// The ledgers of every window.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    windows: Mutex<HashMap<Window, WindowState>>,
}

impl Ledger {
    /// Adds one of this process's records, made at `at`, to every window in use.
    pub(crate) fn add(&self, windows: &[Window], actor: &str, amount: Amount, at: SystemTime) {
        let mut all = lock(&self.windows);
        for w in windows {
            let state = all.entry(*w).or_default();
            state.roll_to(*w, at);
            for map in [&mut state.since_read, &mut state.own] {
                match map.get_mut(actor) {
                    Some(a) => a.add(amount),
                    None => {
                        map.insert(actor.to_owned(), amount);
                    }
                }
            }
        }
    }

    /// What `actor` spent in the window `now` is in.
    pub(crate) fn spent(&self, window: Window, actor: &str, now: SystemTime) -> Amount {
        let mut all = lock(&self.windows);
        let state = all.entry(window).or_default();
        state.roll_to(window, now);
        state.spent(actor)
    }

    /// The actors with any spend in the window.
    pub(crate) fn actors(&self, window: Window) -> Vec<String> {
        let all = lock(&self.windows);
        all.get(&window)
            .map(|s| {
                let mut v: Vec<String> = s.store.keys().chain(s.own.keys()).cloned().collect();
                v.sort();
                v.dedup();
                v
            })
            .unwrap_or_default()
    }

    /// A store read for the window starting at `start` begins; returns false if one is
    /// already running.
    pub(crate) fn read_begins(&self, window: Window, start: SystemTime) -> bool {
        let mut all = lock(&self.windows);
        let state = all.entry(window).or_default();
        state.roll(start);
        if state.reading.is_some() {
            return false;
        }
        state.reading = Some(std::mem::take(&mut state.since_read));
        true
    }

    /// The read for the window starting at `start` ended.
    pub(crate) fn read_ends(
        &self,
        window: Window,
        start: SystemTime,
        rows: Option<Vec<ActorSpend>>,
    ) {
        let mut all = lock(&self.windows);
        let state = all.entry(window).or_default();
        if state.start != Some(start) {
            // The window moved on while reading: the rows are of the old one.
            state.reading = None;
            return;
        }
        let set_aside = state.reading.take().unwrap_or_default();
        match rows {
            Some(rows) => {
                state.store = rows
                    .into_iter()
                    .map(|r| {
                        let amount = Amount {
                            tokens: r.tokens(),
                            usd: r.cost_usd,
                        };
                        (r.actor, amount)
                    })
                    .collect();
            }
            None => {
                for (actor, a) in set_aside {
                    state.since_read.entry(actor).or_default().add(a);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const W: Window = Window::Day;

    fn amount(tokens: u64) -> Amount {
        Amount { tokens, usd: 0.0 }
    }

    #[test]
    fn own_records_count_at_once_and_survive_a_stale_read() {
        let now = SystemTime::now();
        let start = W.start(now);
        let l = Ledger::default();
        l.add(&[W], "a", amount(10), now);
        assert_eq!(l.spent(W, "a", now).tokens, 10);
        // A read began and the store did not hold the record yet.
        assert!(l.read_begins(W, start));
        assert!(!l.read_begins(W, start), "one read at a time");
        l.add(&[W], "a", amount(5), now);
        assert_eq!(l.spent(W, "a", now).tokens, 15);
        l.read_ends(W, start, Some(vec![]));
        assert_eq!(
            l.spent(W, "a", now).tokens,
            15,
            "own records are never lost"
        );
    }

    #[test]
    fn other_replicas_records_add_to_own() {
        let now = SystemTime::now();
        let start = W.start(now);
        let l = Ledger::default();
        l.add(&[W], "a", amount(10), now);
        assert!(l.read_begins(W, start));
        // The store holds our 10 and another replica's 100.
        l.read_ends(
            W,
            start,
            Some(vec![ActorSpend::new("a", [60, 50, 0, 0], 0.0)]),
        );
        assert_eq!(l.spent(W, "a", now).tokens, 110);
        l.add(&[W], "a", amount(1), now);
        assert_eq!(l.spent(W, "a", now).tokens, 111);
        assert_eq!(l.actors(W), vec!["a".to_owned()]);
    }

    #[test]
    fn a_failed_read_keeps_the_records_it_set_aside() {
        let now = SystemTime::now();
        let start = W.start(now);
        let l = Ledger::default();
        assert!(l.read_begins(W, start));
        l.read_ends(
            W,
            start,
            Some(vec![ActorSpend::new("a", [100, 0, 0, 0], 1.0)]),
        );
        l.add(&[W], "a", amount(7), now);
        assert!(l.read_begins(W, start));
        l.read_ends(W, start, None);
        let s = l.spent(W, "a", now);
        assert_eq!(s.tokens, 107);
        assert!((s.usd - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_cached_bounds_follow_the_clock_both_ways() {
        let now = SystemTime::now();
        let l = Ledger::default();
        l.add(&[W], "a", amount(10), now);
        let tomorrow = now + Duration::from_secs(86_400);
        l.add(&[W], "a", amount(3), tomorrow);
        assert_eq!(l.spent(W, "a", tomorrow).tokens, 3);
        // Back to today (a test clock): its window starts over too.
        assert_eq!(l.spent(W, "a", now).tokens, 0);
        // The last instant of the window is in it; its end is not.
        let end = W.end(now);
        l.add(&[W], "a", amount(1), end - Duration::from_nanos(1));
        assert_eq!(l.spent(W, "a", end - Duration::from_nanos(1)).tokens, 1);
        assert_eq!(l.spent(W, "a", end).tokens, 0);
    }

    #[test]
    fn a_new_window_starts_from_zero() {
        let now = SystemTime::now();
        let l = Ledger::default();
        l.add(&[W], "a", amount(10), now);
        let tomorrow = now + Duration::from_secs(86_400);
        assert_eq!(l.spent(W, "a", tomorrow).tokens, 0);
    }
}

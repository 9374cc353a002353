//! Per-actor request rate limits: one GCRA limiter (`governor`) per actor and rate, in
//! this process only. With several replicas each enforces the rate on its own share.
//!
//! The map of limiters is pruned so that it stays bounded by the actors active within one
//! rate period: a limiter untouched for its whole period (1 s or 1 min) is full again,
//! the same as a new one, so dropping it changes no decision. Pruning runs when an insert
//! finds the map at a threshold that doubles with the live entries (amortised O(1) per new
//! actor, nothing on the path of a known actor). governor's keyed limiter (`retain_recent`)
//! would do the same but needs an owned key per check, one allocation per request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::rules::{Rate, RatePer};

/// The map size below which no pruning runs.
const PRUNE_FLOOR: usize = 1024;

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Entry<C: Clock> {
    rate: Rate,
    limiter: Direct<C>,
    /// The last check (any outcome).
    last: C::Instant,
}

struct Map<C: Clock> {
    by_actor: HashMap<String, Entry<C>>,
    /// Prune when an insert finds this many entries.
    prune_at: usize,
}

/// The limiters of every actor that sent a request under a rate.
pub(crate) struct Limiters<C: Clock = DefaultClock> {
    clock: C,
    map: Mutex<Map<C>>,
    floor: usize,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters").finish_non_exhaustive()
    }
}

impl Default for Limiters {
    fn default() -> Self {
        Self::with_clock(DefaultClock::default(), PRUNE_FLOOR)
    }
}

impl<C: Clock + Clone> Limiters<C> {
    fn with_clock(clock: C, floor: usize) -> Self {
        Self {
            clock,
            map: Mutex::new(Map {
                by_actor: HashMap::new(),
                prune_at: floor,
            }),
            floor,
        }
    }

    /// Counts one request of `actor`; `Err(wait)` when it is over its rate.
    pub(crate) fn check(&self, actor: &str, rate: Rate) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A known actor at the same rate as before (also across a hot reload) keeps its
        // state: one lookup by `&str`, no allocation.
        let entry = match map.by_actor.get_mut(actor) {
            Some(e) if e.rate == rate => e,
            _ => map.insert(actor, rate, &self.clock, now, self.floor),
        };
        entry.last = now;
        entry
            .limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(now))
    }

    /// The number of limiters kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_actor
            .len()
    }
}

impl<C: Clock + Clone> Map<C> {
    fn insert(
        &mut self,
        actor: &str,
        rate: Rate,
        clock: &C,
        now: C::Instant,
        floor: usize,
    ) -> &mut Entry<C> {
        if self.by_actor.len() >= self.prune_at && !self.by_actor.contains_key(actor) {
            self.by_actor
                .retain(|_, e| Duration::from(now.duration_since(e.last)) < full_after(e.rate));
            self.prune_at = (self.by_actor.len() * 2).max(floor);
        }
        let entry = Entry {
            rate,
            limiter: RateLimiter::direct_with_clock(quota(rate), clock.clone()),
            last: now,
        };
        match self.by_actor.entry(actor.to_owned()) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                o.insert(entry);
                o.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(v) => v.insert(entry),
        }
    }
}

/// After this long without a request, a limiter is full again (as new).
fn full_after(rate: Rate) -> Duration {
    match rate.per {
        RatePer::Second => Duration::from_secs(1),
        RatePer::Minute => Duration::from_secs(60),
    }
}

fn quota(rate: Rate) -> Quota {
    let n = NonZeroU32::new(rate.requests).unwrap_or(NonZeroU32::MIN);
    match rate.per {
        RatePer::Second => Quota::per_second(n),
        RatePer::Minute => Quota::per_minute(n),
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn a_burst_of_the_rate_passes_then_the_next_waits() {
        let l = Limiters::default();
        let rate = Rate::new(3, RatePer::Minute);
        for _ in 0..3 {
            assert!(l.check("a", rate).is_ok());
        }
        let wait = l.check("a", rate).unwrap_err();
        // One request per 20 s is replenished.
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another actor has its own bucket.
        assert!(l.check("b", rate).is_ok());
        // A changed rate starts a new bucket.
        assert!(l.check("a", Rate::new(4, RatePer::Minute)).is_ok());
    }

    /// Many actors over time: the map holds at most about twice the actors active within
    /// one period, and pruning never forgets an actor whose bucket is not full again.
    #[test]
    fn the_map_stays_bounded_and_pruning_keeps_live_buckets() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(clock.clone(), 8);
        let rate = Rate::new(2, RatePer::Minute);
        // An actor that used its whole burst just now.
        assert!(l.check("busy", rate).is_ok());
        assert!(l.check("busy", rate).is_ok());
        assert!(l.check("busy", rate).is_err());
        let mut max = 0;
        for n in 0..10_000 {
            // 100 new actors per simulated second: 6,000 per period.
            if n % 100 == 0 {
                clock.advance(Duration::from_secs(1));
            }
            assert!(l.check(&format!("actor-{n}"), rate).is_ok());
            max = max.max(l.len());
            if n == 3_500 {
                // 36 s after its burst: one request (30 s) replenished, not the whole bucket.
                assert!(l.check("busy", rate).is_ok());
                assert!(
                    l.check("busy", rate).is_err(),
                    "a bucket that is not full again survives pruning"
                );
            }
        }
        assert!(max <= 2 * 6_100 + 8, "the map grew to {max}");
        assert!(l.len() <= 2 * 6_100 + 8, "{}", l.len());
        // Without pruning every actor would still be there.
        assert!(max < 10_000, "pruned: {max}");
    }
}

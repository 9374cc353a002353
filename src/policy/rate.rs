//! Per-actor request rate limits: one GCRA limiter (`governor`) per actor and rate, in
//! this process only. With several replicas each enforces the rate on its own share.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::rules::{Rate, RatePer};

/// The limiters of every actor that sent a request under a rate.
#[derive(Debug, Default)]
pub(crate) struct Limiters {
    by_actor: Mutex<HashMap<String, (Rate, Arc<DefaultDirectRateLimiter>)>>,
}

impl Limiters {
    /// Counts one request of `actor`; `Err(wait)` when it is over its rate.
    pub(crate) fn check(&self, actor: &str, rate: Rate) -> Result<(), Duration> {
        let limiter = {
            let mut map = self
                .by_actor
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match map.get(actor) {
                // Same rate as before (also across a hot reload): keep its state.
                Some((r, l)) if *r == rate => l.clone(),
                _ => {
                    let l = Arc::new(RateLimiter::direct(quota(rate)));
                    map.insert(actor.to_owned(), (rate, l.clone()));
                    l
                }
            }
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
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
}

//! Circuit breakers, one per (provider, endpoint, model), created lazily (resilience.md).
//!
//! Written by hand: the well-kept breaker crates (`failsafe`, `circuitbreaker-rs`) manage a
//! single breaker with their own clocks; we need lazily created per-key breakers, an exact
//! half-open admission quota, Tokio's (pausable) clock for tests and a hook on every
//! transition for metrics and logs. The state machine is ~100 lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::provider::CircuitBreakerConfig;

/// Identifies one breaker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) provider: String,
    pub(crate) endpoint: String,
    pub(crate) model: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
        window_start: Instant,
    },
    Open {
        since: Instant,
    },
    HalfOpen {
        admitted: u32,
        successes: u32,
    },
}

impl State {
    fn gauge(self) -> f64 {
        match self {
            Self::Closed { .. } => 0.0,
            Self::HalfOpen { .. } => 0.5,
            Self::Open { .. } => 1.0,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::HalfOpen { .. } => "half-open",
            Self::Open { .. } => "open",
        }
    }
}

/// All breakers of a bridge.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    map: Mutex<HashMap<Key, Arc<Mutex<State>>>>,
}

/// What a call reports to its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    Success,
    Failure,
}

/// An admitted interception's handle on its breaker.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    key: Key,
    state: Arc<Mutex<State>>,
    config: CircuitBreakerConfig,
}

impl Breakers {
    /// Admission for one interception. `Err(seconds)` = rejected; retry after that long.
    pub(crate) fn admit(
        &self,
        key: Key,
        config: &CircuitBreakerConfig,
        metrics: Option<&Metrics>,
    ) -> Result<Admitted, u64> {
        let state = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone())
                .or_insert_with(|| {
                    if let Some(m) = metrics {
                        m.breaker_state(&key.provider, &key.endpoint, &key.model, 0.0);
                    }
                    Arc::new(Mutex::new(State::Closed {
                        failures: 0,
                        window_start: Instant::now(),
                    }))
                })
                .clone()
        };
        let now = Instant::now();
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let decision = match *s {
            State::Closed { .. } => Ok(()),
            State::Open { since } => {
                let until = since + config.open_timeout;
                if now >= until {
                    transition(
                        &mut s,
                        State::HalfOpen {
                            admitted: 1,
                            successes: 0,
                        },
                        &key,
                        metrics,
                    );
                    Ok(())
                } else {
                    Err((until - now).as_secs_f64().ceil().max(1.0) as u64)
                }
            }
            State::HalfOpen {
                admitted,
                successes,
            } => {
                if admitted < config.half_open_max_requests {
                    *s = State::HalfOpen {
                        admitted: admitted + 1,
                        successes,
                    };
                    Ok(())
                } else {
                    Err(1)
                }
            }
        };
        drop(s);
        match decision {
            Ok(()) => Ok(Admitted {
                key,
                state,
                config: config.clone(),
            }),
            Err(secs) => {
                if let Some(m) = metrics {
                    m.breaker_reject(&key.provider, &key.endpoint, &key.model);
                }
                Err(secs)
            }
        }
    }
}

impl Admitted {
    /// Reports the outcome of one upstream call.
    pub(crate) fn report(&self, report: Report, metrics: Option<&Metrics>) {
        let now = Instant::now();
        let cfg = &self.config;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (*s, report) {
            (
                State::Closed {
                    failures,
                    window_start,
                },
                r,
            ) => {
                let (failures, window_start) =
                    if !cfg.interval.is_zero() && now >= window_start + cfg.interval {
                        (0, now)
                    } else {
                        (failures, window_start)
                    };
                match r {
                    Report::Success => {
                        *s = State::Closed {
                            failures: 0,
                            window_start,
                        }
                    }
                    Report::Failure if failures + 1 >= cfg.failure_threshold => {
                        transition(&mut s, State::Open { since: now }, &self.key, metrics);
                    }
                    Report::Failure => {
                        *s = State::Closed {
                            failures: failures + 1,
                            window_start,
                        }
                    }
                }
            }
            (State::HalfOpen { .. }, Report::Failure) => {
                transition(&mut s, State::Open { since: now }, &self.key, metrics);
            }
            (
                State::HalfOpen {
                    admitted,
                    successes,
                },
                Report::Success,
            ) => {
                if successes + 1 >= cfg.half_open_max_requests {
                    transition(
                        &mut s,
                        State::Closed {
                            failures: 0,
                            window_start: now,
                        },
                        &self.key,
                        metrics,
                    );
                } else {
                    *s = State::HalfOpen {
                        admitted,
                        successes: successes + 1,
                    };
                }
            }
            // A call admitted before the circuit opened reports late: nothing changes.
            (State::Open { .. }, _) => {}
        }
    }
}

fn transition(s: &mut State, to: State, key: &Key, metrics: Option<&Metrics>) {
    let from = *s;
    *s = to;
    if matches!(to, State::Open { .. }) {
        tracing::warn!(provider = %key.provider, endpoint = %key.endpoint, model = %key.model, from = from.name(), to = to.name(), "circuit breaker opened");
    } else {
        tracing::info!(provider = %key.provider, endpoint = %key.endpoint, model = %key.model, from = from.name(), to = to.name(), "circuit breaker state changed");
    }
    if let Some(m) = metrics {
        m.breaker_state(&key.provider, &key.endpoint, &key.model, to.gauge());
        if matches!(to, State::Open { .. }) {
            m.breaker_trip(&key.provider, &key.endpoint, &key.model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(model: &str) -> Key {
        Key {
            provider: "anthropic".into(),
            endpoint: "/v1/messages".into(),
            model: model.into(),
        }
    }

    fn cfg(threshold: u32, half_open: u32) -> CircuitBreakerConfig {
        CircuitBreakerConfig::default()
            .with_failure_threshold(threshold)
            .with_open_timeout(Duration::from_millis(50))
            .with_half_open_max_requests(half_open)
    }

    #[tokio::test(start_paused = true)]
    async fn trips_rejects_then_recovers_through_half_open() {
        let b = Breakers::default();
        let c = cfg(2, 1);
        for _ in 0..2 {
            b.admit(key("m"), &c, None)
                .unwrap()
                .report(Report::Failure, None);
        }
        assert_eq!(b.admit(key("m"), &c, None).unwrap_err(), 1);
        tokio::time::advance(Duration::from_millis(50)).await;
        let probe = b.admit(key("m"), &c, None).unwrap();
        assert!(
            b.admit(key("m"), &c, None).is_err(),
            "half-open admits only the quota"
        );
        probe.report(Report::Success, None);
        assert!(b.admit(key("m"), &c, None).is_ok(), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_failure_reopens_and_models_are_isolated() {
        let b = Breakers::default();
        let c = cfg(2, 1);
        for _ in 0..2 {
            b.admit(key("a"), &c, None)
                .unwrap()
                .report(Report::Failure, None);
        }
        assert!(
            b.admit(key("b"), &c, None).is_ok(),
            "model b is independent"
        );
        tokio::time::advance(Duration::from_millis(60)).await;
        b.admit(key("a"), &c, None)
            .unwrap()
            .report(Report::Failure, None);
        assert!(b.admit(key("a"), &c, None).is_err(), "open again");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_the_quota_and_needs_that_many_successes() {
        let b = Breakers::default();
        let c = cfg(1, 2);
        b.admit(key("m"), &c, None)
            .unwrap()
            .report(Report::Failure, None);
        tokio::time::advance(Duration::from_millis(50)).await;
        let admitted: Vec<_> = (0..5)
            .filter_map(|_| b.admit(key("m"), &c, None).ok())
            .collect();
        assert_eq!(admitted.len(), 2);
        admitted[0].report(Report::Success, None);
        assert!(
            b.admit(key("m"), &c, None).is_err(),
            "one success is not enough"
        );
        admitted[1].report(Report::Success, None);
        assert!(b.admit(key("m"), &c, None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_and_the_interval_clears_old_failures() {
        let b = Breakers::default();
        let c = cfg(3, 1).with_interval(Duration::from_secs(10));
        let h = b.admit(key("m"), &c, None).unwrap();
        h.report(Report::Failure, None);
        h.report(Report::Failure, None);
        h.report(Report::Success, None);
        h.report(Report::Failure, None);
        h.report(Report::Failure, None);
        assert!(
            b.admit(key("m"), &c, None).is_ok(),
            "success reset the count"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        h.report(Report::Failure, None);
        assert!(
            b.admit(key("m"), &c, None).is_ok(),
            "the window reset the count"
        );
        h.report(Report::Failure, None);
        h.report(Report::Failure, None);
        assert!(b.admit(key("m"), &c, None).is_err());
    }
}

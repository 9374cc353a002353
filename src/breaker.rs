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
enum Phase {
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

impl Phase {
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

/// One breaker: its phase, and a generation counted up on every transition, so a report
/// from a call admitted in an earlier phase is recognised as late and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    phase: Phase,
    generation: u64,
}

/// Idle breakers (closed, no failure counted, no call in flight) kept before they are
/// forgotten: an idle breaker holds no state, and without a bound every model name a client
/// invents would stay in the map for the life of the process.
const MAX_IDLE_BREAKERS: usize = 4096;

/// All breakers of a bridge.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    map: Mutex<HashMap<Key, Arc<Mutex<State>>>>,
}

impl State {
    /// Closed with no failure counted: the state of a new breaker.
    fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Closed { failures: 0, .. })
    }
}

/// Forgets idle breakers nobody holds, when a new key finds the map past the bound (one pass
/// over the map; after it the map holds only breakers with state or in use).
fn sweep(map: &mut HashMap<Key, Arc<Mutex<State>>>) {
    if map.len() <= MAX_IDLE_BREAKERS {
        return;
    }
    map.retain(|_, s| {
        Arc::strong_count(s) > 1 || !s.lock().unwrap_or_else(|e| e.into_inner()).is_idle()
    });
}

/// What a call reports to its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    Success,
    Failure,
}

/// An admitted interception's handle on its breaker (resilience.md: every admission is
/// released exactly once on every path). [`report`](Self::report) consumes it; dropped
/// without a report (client gone, shutdown, panic) it only gives back its half-open slot,
/// counting neither as success nor as failure.
#[derive(Debug)]
pub(crate) struct Admitted {
    key: Key,
    state: Arc<Mutex<State>>,
    config: CircuitBreakerConfig,
    /// The breaker's generation at admission.
    generation: u64,
    /// Whether this admission holds one of the half-open quota's slots.
    half_open_slot: bool,
    /// Set once reported (or released).
    released: bool,
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
            if !map.contains_key(&key) {
                sweep(&mut map);
            }
            map.entry(key.clone())
                .or_insert_with(|| {
                    if let Some(m) = metrics {
                        m.breaker_state(&key.provider, &key.endpoint, &key.model, 0.0);
                    }
                    Arc::new(Mutex::new(State {
                        phase: Phase::Closed {
                            failures: 0,
                            window_start: Instant::now(),
                        },
                        generation: 0,
                    }))
                })
                .clone()
        };
        let now = Instant::now();
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let decision = match s.phase {
            Phase::Closed { .. } => Ok(false),
            Phase::Open { since } => {
                let until = since + config.open_timeout;
                if now >= until {
                    transition(
                        &mut s,
                        Phase::HalfOpen {
                            admitted: 1,
                            successes: 0,
                        },
                        &key,
                        metrics,
                    );
                    Ok(true)
                } else {
                    Err((until - now).as_secs_f64().ceil().max(1.0) as u64)
                }
            }
            Phase::HalfOpen {
                admitted,
                successes,
            } => {
                if admitted < config.half_open_max_requests {
                    s.phase = Phase::HalfOpen {
                        admitted: admitted + 1,
                        successes,
                    };
                    Ok(true)
                } else {
                    Err(1)
                }
            }
        };
        let generation = s.generation;
        drop(s);
        match decision {
            Ok(half_open_slot) => Ok(Admitted {
                key,
                state,
                config: config.clone(),
                generation,
                half_open_slot,
                released: false,
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
    /// Reports the outcome of the interception's upstream call and releases the admission.
    /// A report from an earlier generation (the breaker changed phase since this call was
    /// admitted) changes nothing.
    pub(crate) fn report(mut self, report: Report, metrics: Option<&Metrics>) {
        self.released = true;
        self.note(report, metrics);
    }

    /// Reports the outcome of one upstream call of an interception that goes on calling
    /// (a tool loop's earlier iterations; resilience.md: every upstream call of an admitted
    /// interception reports its outcome), keeping the admission. The same generation rule
    /// as [`report`](Self::report) applies.
    pub(crate) fn note(&self, report: Report, metrics: Option<&Metrics>) {
        let now = Instant::now();
        let cfg = &self.config;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation != self.generation {
            return;
        }
        match (s.phase, report) {
            (
                Phase::Closed {
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
                        s.phase = Phase::Closed {
                            failures: 0,
                            window_start,
                        };
                    }
                    Report::Failure if failures.saturating_add(1) >= cfg.failure_threshold => {
                        transition(&mut s, Phase::Open { since: now }, &self.key, metrics);
                    }
                    Report::Failure => {
                        s.phase = Phase::Closed {
                            failures: failures + 1,
                            window_start,
                        };
                    }
                }
            }
            (Phase::HalfOpen { .. }, Report::Failure) => {
                transition(&mut s, Phase::Open { since: now }, &self.key, metrics);
            }
            (
                Phase::HalfOpen {
                    admitted,
                    successes,
                },
                Report::Success,
            ) => {
                if successes + 1 >= cfg.half_open_max_requests {
                    transition(
                        &mut s,
                        Phase::Closed {
                            failures: 0,
                            window_start: now,
                        },
                        &self.key,
                        metrics,
                    );
                } else {
                    s.phase = Phase::HalfOpen {
                        admitted,
                        successes: successes + 1,
                    };
                }
            }
            // Unreachable with generations (opening is a transition); kept total.
            (Phase::Open { .. }, _) => {}
        }
    }
}

impl Drop for Admitted {
    /// An admission that ends without a report (client gone, shutdown, panic) gives back
    /// its half-open slot, if it still holds one of the current half-open period.
    fn drop(&mut self) {
        if self.released || !self.half_open_slot {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen {
            admitted,
            successes,
        } = s.phase
        {
            s.phase = Phase::HalfOpen {
                admitted: admitted.saturating_sub(1),
                successes,
            };
        }
    }
}

fn transition(s: &mut State, to: Phase, key: &Key, metrics: Option<&Metrics>) {
    let from = s.phase;
    s.phase = to;
    s.generation = s.generation.wrapping_add(1);
    if matches!(to, Phase::Open { .. }) {
        tracing::warn!(provider = %key.provider, endpoint = %key.endpoint, model = %key.model, from = from.name(), to = to.name(), "circuit breaker opened");
    } else {
        tracing::info!(provider = %key.provider, endpoint = %key.endpoint, model = %key.model, from = from.name(), to = to.name(), "circuit breaker state changed");
    }
    if let Some(m) = metrics {
        m.breaker_state(&key.provider, &key.endpoint, &key.model, to.gauge());
        if matches!(to, Phase::Open { .. }) {
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
        let mut admitted = admitted.into_iter();
        admitted.next().unwrap().report(Report::Success, None);
        assert!(
            b.admit(key("m"), &c, None).is_err(),
            "one success is not enough"
        );
        admitted.next().unwrap().report(Report::Success, None);
        assert!(b.admit(key("m"), &c, None).is_ok());
    }

    /// A tool loop's calls each report: notes count like reports, and the admission is
    /// released once, by the final report.
    #[tokio::test(start_paused = true)]
    async fn every_call_of_an_interception_reports() {
        let b = Breakers::default();
        let c = cfg(2, 2);
        let loop_call = b.admit(key("m"), &c, None).unwrap();
        loop_call.note(Report::Failure, None);
        loop_call.note(Report::Failure, None);
        assert!(
            b.admit(key("m"), &c, None).is_err(),
            "two failing calls of one interception trip it"
        );
        // A late final report of the earlier generation changes nothing.
        loop_call.report(Report::Success, None);
        assert!(b.admit(key("m"), &c, None).is_err());
        tokio::time::advance(Duration::from_millis(50)).await;
        let probe = b.admit(key("m"), &c, None).unwrap();
        probe.note(Report::Success, None);
        probe.report(Report::Success, None);
        assert!(
            b.admit(key("m"), &c, None).is_ok(),
            "two successful calls of one half-open probe close it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_and_the_interval_clears_old_failures() {
        let b = Breakers::default();
        let c = cfg(3, 1).with_interval(Duration::from_secs(10));
        let h = || b.admit(key("m"), &c, None).unwrap();
        h().report(Report::Failure, None);
        h().report(Report::Failure, None);
        h().report(Report::Success, None);
        h().report(Report::Failure, None);
        h().report(Report::Failure, None);
        assert!(
            b.admit(key("m"), &c, None).is_ok(),
            "success reset the count"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        h().report(Report::Failure, None);
        assert!(
            b.admit(key("m"), &c, None).is_ok(),
            "the window reset the count"
        );
        h().report(Report::Failure, None);
        h().report(Report::Failure, None);
        assert!(b.admit(key("m"), &c, None).is_err());
    }

    /// Issue 17, defect 1: with the default three probes, two successes and one probe whose
    /// client left used to leave `admitted = 3, successes = 2`: every later request was
    /// rejected until restart.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_half_open_probe_frees_its_slot() {
        let b = Breakers::default();
        let c = cfg(1, 3);
        b.admit(key("m"), &c, None)
            .unwrap()
            .report(Report::Failure, None);
        tokio::time::advance(Duration::from_millis(50)).await;
        let probes: Vec<_> = (0..3)
            .map(|_| b.admit(key("m"), &c, None).unwrap())
            .collect();
        assert!(b.admit(key("m"), &c, None).is_err(), "quota of three");
        let mut probes = probes.into_iter();
        probes.next().unwrap().report(Report::Success, None);
        probes.next().unwrap().report(Report::Success, None);
        drop(probes.next()); // the client went away: neither success nor failure
        let again = b
            .admit(key("m"), &c, None)
            .expect("the cancelled probe's slot is free again");
        again.report(Report::Success, None);
        for _ in 0..5 {
            b.admit(key("m"), &c, None)
                .expect("three successes closed the circuit")
                .report(Report::Success, None);
        }
    }

    /// Issue 17, defect 5: a long call admitted while the circuit was closed, finishing after
    /// it opened and went half-open, is not a probe result.
    #[tokio::test(start_paused = true)]
    async fn a_late_report_from_an_earlier_phase_changes_nothing() {
        let b = Breakers::default();
        let c = cfg(1, 1);
        let long_success = b.admit(key("m"), &c, None).unwrap();
        let long_failure = b.admit(key("m"), &c, None).unwrap();
        b.admit(key("m"), &c, None)
            .unwrap()
            .report(Report::Failure, None);
        tokio::time::advance(Duration::from_millis(50)).await;
        let probe = b.admit(key("m"), &c, None).unwrap();
        long_success.report(Report::Success, None);
        assert!(
            b.admit(key("m"), &c, None).is_err(),
            "a closed-period success does not close a half-open circuit"
        );
        long_failure.report(Report::Failure, None);
        drop(probe);
        let probe = b
            .admit(key("m"), &c, None)
            .expect("a closed-period failure does not reopen it either");
        probe.report(Report::Success, None);
        assert!(b.admit(key("m"), &c, None).is_ok(), "closed");
    }

    /// A dropped admission in the closed phase changes nothing (no slot to give back).
    #[tokio::test(start_paused = true)]
    async fn a_dropped_closed_admission_is_neither_success_nor_failure() {
        let b = Breakers::default();
        let c = cfg(2, 1);
        b.admit(key("m"), &c, None)
            .unwrap()
            .report(Report::Failure, None);
        drop(b.admit(key("m"), &c, None).unwrap());
        b.admit(key("m"), &c, None)
            .unwrap()
            .report(Report::Failure, None);
        assert!(
            b.admit(key("m"), &c, None).is_err(),
            "the drop did not reset the failure count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_breakers_are_forgotten_past_the_bound() {
        let b = Breakers::default();
        let c = cfg(1, 1);
        // One tripped breaker and one in use: both must survive every sweep.
        b.admit(key("tripped"), &c, None)
            .unwrap()
            .report(Report::Failure, None);
        let held = b.admit(key("held"), &c, None).unwrap();
        for i in 0..3 * MAX_IDLE_BREAKERS {
            b.admit(key(&format!("m{i}")), &c, None)
                .unwrap()
                .report(Report::Success, None);
        }
        let len = b.map.lock().unwrap().len();
        assert!(len <= MAX_IDLE_BREAKERS + 1, "{len} breakers kept");
        assert!(b.admit(key("tripped"), &c, None).is_err(), "still open");
        held.report(Report::Failure, None);
        assert!(
            b.admit(key("held"), &c, None).is_err(),
            "its state was kept"
        );
    }
}

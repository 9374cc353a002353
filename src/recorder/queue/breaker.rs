//! The recorder breaker: after a run of failed `record_interception` calls (the database is
//! down), new requests are refused at once instead of each waiting for the recorder to
//! fail; after a cooldown one call probes the recorder, and its success closes the breaker.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the breaker lets a new `record_interception` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Closed: call the recorder.
    Call,
    /// Open past its cooldown: this call probes the recorder (one at a time).
    Probe,
    /// Open: fail at once.
    Reject,
}

/// Lock-free on the path of every request: one atomic load while closed.
#[derive(Debug)]
pub(super) struct Breaker {
    /// Consecutive failures that open it; 0 never opens.
    threshold: u32,
    cooldown: Duration,
    /// Consecutive failed calls (`>= threshold`: open).
    failures: AtomicU32,
    /// Nanoseconds since `base` when the next probe may go.
    probe_at: AtomicU64,
    /// A probe is in flight.
    probing: AtomicBool,
    base: Instant,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            failures: AtomicU32::new(0),
            probe_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            base: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the breaker is open (new calls are refused or probe).
    pub(super) fn is_open(&self) -> bool {
        self.threshold > 0 && self.failures.load(Ordering::Acquire) >= self.threshold
    }

    pub(super) fn admit(&self) -> Admit {
        if !self.is_open() {
            return Admit::Call;
        }
        if self.now() >= self.probe_at.load(Ordering::Acquire)
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Admit::Probe;
        }
        Admit::Reject
    }

    /// The outcome of an admitted call. `failed` only for failures that say the recorder
    /// is unavailable (errors, timeouts, panics), not for a record it refused for good.
    pub(super) fn settle(&self, admitted: Admit, failed: bool) {
        if failed {
            let n = self
                .failures
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1);
            if self.threshold > 0 && (n == self.threshold || admitted == Admit::Probe) {
                let next = self
                    .now()
                    .saturating_add(u64::try_from(self.cooldown.as_nanos()).unwrap_or(u64::MAX));
                self.probe_at.store(next, Ordering::Release);
                if n == self.threshold {
                    tracing::error!(
                        failures = n,
                        cooldown = ?self.cooldown,
                        "recorder breaker open: new requests are refused until a probe succeeds"
                    );
                }
            }
        } else if self.failures.load(Ordering::Acquire) != 0 {
            if self.is_open() {
                tracing::info!("recorder breaker closed: the recorder answers again");
            }
            self.failures.store(0, Ordering::Release);
        }
        if admitted == Admit::Probe {
            self.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_after_the_cooldown_and_closes_on_success() {
        let b = Breaker::new(3, Duration::ZERO);
        for _ in 0..2 {
            assert_eq!(b.admit(), Admit::Call);
            b.settle(Admit::Call, true);
        }
        assert_eq!(b.admit(), Admit::Call);
        b.settle(Admit::Call, true);
        assert!(b.is_open());
        // Zero cooldown: the next call probes, others are refused while it is in flight.
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::Reject);
        b.settle(Admit::Probe, true);
        assert!(b.is_open());
        assert_eq!(b.admit(), Admit::Probe);
        b.settle(Admit::Probe, false);
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Call);
    }

    #[test]
    fn refuses_during_the_cooldown_and_a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(3600));
        b.settle(Admit::Call, true);
        b.settle(Admit::Call, false);
        b.settle(Admit::Call, true);
        assert!(!b.is_open(), "failures must be consecutive");
        b.settle(Admit::Call, true);
        assert!(b.is_open());
        assert_eq!(b.admit(), Admit::Reject);
        assert_eq!(b.admit(), Admit::Reject);
        let off = Breaker::new(0, Duration::ZERO);
        for _ in 0..10 {
            off.settle(Admit::Call, true);
        }
        assert_eq!(off.admit(), Admit::Call, "threshold 0: never opens");
    }
}

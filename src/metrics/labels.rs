//! The bound on label values that come from client input.
//!
//! A Prometheus series exists for every distinct combination of label values, and the
//! registry keeps each one until the process ends. Some values are chosen by whoever sends
//! the request (the `model` of the body, the names of the tools the model selects, a
//! passthrough request's HTTP method) or by the host or the upstream (the actor id, the keys
//! of a usage object). Without a bound, one authenticated client sending 5,000 distinct model
//! names grew a scrape from 10 KB to 12 MB and its time from 3 ms to over a second.
//!
//! A [`LabelSet`] admits the first `max` distinct values of one label, each at most
//! [`MAX_LABEL_VALUE_BYTES`] long; every other value is reported as [`OTHER`] and counted in
//! `metric_label_overflow_total{label, reason}`. Admitted values are never evicted, so a
//! value is reported the same way for the life of the process: a gauge raised under a name
//! is lowered under the same name.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use prometheus::{IntCounter, IntCounterVec};

/// The value reported in place of a label value beyond the bound.
pub const OTHER: &str = "other";

/// The longest label value reported as is, in bytes; longer values are reported as
/// [`OTHER`] (reason `length`). Real model names, Bedrock ARNs included, stay well below.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;

/// The default of [`MetricsBuilder::max_label_values`](super::MetricsBuilder::max_label_values):
/// distinct values admitted per bounded label.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 1_000;

/// The HTTP methods `passthrough_total{method}` reports by name (RFC 9110 and PATCH).
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Why a value is reported as [`OTHER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// The set holds its maximum of distinct values already.
    Limit,
    /// The value is longer than [`MAX_LABEL_VALUE_BYTES`].
    Length,
}

impl Overflow {
    const ALL: [Self; 2] = [Self::Limit, Self::Length];

    fn as_str(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Length => "length",
        }
    }
}

/// The admitted values of one label and its overflow counters.
///
/// The lookup of an admitted value takes a read lock and one hash; the write lock is taken
/// only for a value seen for the first time while there is room. Once the set is full, an
/// unknown value costs a read lock and one hash, and is never stored.
pub(crate) struct LabelSet {
    max: usize,
    seen: RwLock<HashSet<Box<str>>>,
    /// Set once `seen` holds `max` values (it never shrinks): unseen values skip the
    /// write lock.
    full: AtomicBool,
    limit: IntCounter,
    length: IntCounter,
}

// === impl LabelSet ===

impl LabelSet {
    /// A set admitting the first `max` distinct values of the label `label`, counting
    /// overflows in `overflow` (labels `label`, `reason`).
    pub(crate) fn new(label: &str, max: usize, overflow: &IntCounterVec) -> Self {
        Self::with_values(label, max, HashSet::new(), overflow)
    }

    /// The HTTP methods: the standard ones by name, any other as [`OTHER`].
    pub(crate) fn methods(overflow: &IntCounterVec) -> Self {
        let seen = STANDARD_METHODS.iter().map(|m| Box::from(*m)).collect();
        Self::with_values("method", STANDARD_METHODS.len(), seen, overflow)
    }

    fn with_values(
        label: &str,
        max: usize,
        seen: HashSet<Box<str>>,
        overflow: &IntCounterVec,
    ) -> Self {
        // Created up front so the series exist (at 0) before the first overflow: an alert
        // on `increase(...) > 0` then sees the first one.
        let [limit, length] =
            Overflow::ALL.map(|r| overflow.with_label_values(&[label, r.as_str()]));
        Self {
            max,
            full: AtomicBool::new(seen.len() >= max),
            seen: RwLock::new(seen),
            limit,
            length,
        }
    }

    /// The value to report for `value`: itself if admitted (admitting it if there is
    /// room), else [`OTHER`]. Counts nothing: for the calls that report a value already
    /// counted elsewhere.
    pub(crate) fn get<'a>(&self, value: &'a str) -> &'a str {
        match self.check(value) {
            Ok(()) => value,
            Err(_) => OTHER,
        }
    }

    /// As [`get`](Self::get), and counts the overflow.
    pub(crate) fn counted<'a>(&self, value: &'a str) -> &'a str {
        match self.check(value) {
            Ok(()) => value,
            Err(why) => {
                match why {
                    Overflow::Limit => self.limit.inc(),
                    Overflow::Length => self.length.inc(),
                }
                OTHER
            }
        }
    }

    fn check(&self, value: &str) -> Result<(), Overflow> {
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(Overflow::Length);
        }
        if self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(value)
        {
            return Ok(());
        }
        if self.full.load(Ordering::Relaxed) {
            return Err(Overflow::Limit);
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(value) {
            return Ok(());
        }
        if seen.len() >= self.max {
            self.full.store(true, Ordering::Relaxed);
            return Err(Overflow::Limit);
        }
        seen.insert(Box::from(value));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    fn overflow() -> IntCounterVec {
        IntCounterVec::new(Opts::new("o", "o"), &["label", "reason"]).unwrap()
    }

    fn count(c: &IntCounterVec, label: &str, reason: &str) -> u64 {
        c.with_label_values(&[label, reason]).get()
    }

    #[test]
    fn admits_the_first_max_values_and_reports_the_rest_as_other() {
        let o = overflow();
        let set = LabelSet::new("model", 2, &o);
        assert_eq!(set.counted("a"), "a");
        assert_eq!(set.counted("b"), "b");
        assert_eq!(set.counted("c"), OTHER);
        assert_eq!(set.counted("a"), "a", "an admitted value stays admitted");
        assert_eq!(set.counted("d"), OTHER);
        assert_eq!(set.counted("c"), OTHER, "a refused value stays refused");
        assert_eq!(count(&o, "model", "limit"), 3);
        assert_eq!(count(&o, "model", "length"), 0);
    }

    #[test]
    fn get_reports_like_counted_but_counts_nothing() {
        let o = overflow();
        let set = LabelSet::new("model", 1, &o);
        assert_eq!(set.get("a"), "a");
        assert_eq!(set.get("b"), OTHER);
        assert_eq!(set.counted("a"), "a");
        assert_eq!(count(&o, "model", "limit"), 0);
    }

    #[test]
    fn over_long_values_are_other_and_take_no_slot() {
        let o = overflow();
        let set = LabelSet::new("name", 1, &o);
        let long = "x".repeat(MAX_LABEL_VALUE_BYTES + 1);
        let edge = "y".repeat(MAX_LABEL_VALUE_BYTES);
        assert_eq!(set.counted(&long), OTHER);
        assert_eq!(set.counted(&edge), edge, "the slot is still free");
        assert_eq!(count(&o, "name", "length"), 1);
        assert_eq!(count(&o, "name", "limit"), 0);
    }

    #[test]
    fn zero_admits_nothing() {
        let o = overflow();
        let set = LabelSet::new("model", 0, &o);
        assert_eq!(set.counted("a"), OTHER);
        assert_eq!(count(&o, "model", "limit"), 1);
    }

    #[test]
    fn methods_are_the_standard_ones_by_name() {
        let o = overflow();
        let set = LabelSet::methods(&o);
        for m in STANDARD_METHODS {
            assert_eq!(set.counted(m), m);
        }
        assert_eq!(set.counted("FOO"), OTHER);
        assert_eq!(set.counted("get"), OTHER, "methods are case-sensitive");
        assert_eq!(count(&o, "method", "limit"), 2);
    }

    #[test]
    fn concurrent_first_sights_admit_exactly_max() {
        let o = overflow();
        let set = std::sync::Arc::new(LabelSet::new("model", 100, &o));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let set = set.clone();
                std::thread::spawn(move || {
                    (0..1_000)
                        .filter(|i| set.counted(&format!("m-{t}-{i}")) != OTHER)
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 100);
        assert_eq!(count(&o, "model", "limit"), 3_900);
    }
}

//! Per-provider retry and circuit-breaker settings.

use std::time::Duration;

use http::StatusCode;

/// Retries of upstream calls, made only before any byte of the call was relayed.
///
/// ```
/// use std::time::Duration;
/// use aibridge::provider::RetryConfig;
/// let r = RetryConfig::default().with_max_retries(0);
/// assert_eq!(r.max_retries, 0);
/// assert_eq!(RetryConfig::default().initial_backoff, Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt; default 2 (3 attempts); 0 disables.
    pub max_retries: u32,
    /// First backoff; default 500 ms, doubled per retry.
    pub initial_backoff: Duration,
    /// Largest backoff; default 8 s.
    pub max_backoff: Duration,
    /// Server `retry-after` hints at or above this are ignored; default 60 s.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryConfig {
    /// Sets [`max_retries`](Self::max_retries).
    #[must_use]
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }
    /// Sets [`initial_backoff`](Self::initial_backoff).
    #[must_use]
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }
    /// Sets [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }
    /// Sets [`max_retry_after`](Self::max_retry_after).
    #[must_use]
    pub fn with_max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }
}

/// A circuit breaker per (provider, endpoint, model).
///
/// ```
/// use aibridge::provider::CircuitBreakerConfig;
/// let c = CircuitBreakerConfig::default().with_failure_threshold(2);
/// assert_eq!(c.failure_threshold, 2);
/// assert_eq!(c.half_open_max_requests, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit; default 5.
    pub failure_threshold: u32,
    /// Closed-state counter reset interval; default 10 s; zero means never.
    pub interval: Duration,
    /// How long the circuit stays open; default 30 s.
    pub open_timeout: Duration,
    /// Interceptions admitted while half-open; default 3.
    pub half_open_max_requests: u32,
    /// Statuses that count as failures; default 429, 503, 504, 529.
    pub failure_statuses: Vec<StatusCode>,
    /// When true, 429s and rate-limit errors answered to BYOK requests do not count.
    pub ignore_byok_rate_limits: bool,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            interval: Duration::from_secs(10),
            open_timeout: Duration::from_secs(30),
            half_open_max_requests: 3,
            failure_statuses: [429, 503, 504, 529]
                .into_iter()
                .filter_map(|s| StatusCode::from_u16(s).ok())
                .collect(),
            ignore_byok_rate_limits: false,
        }
    }
}

impl CircuitBreakerConfig {
    /// Sets [`failure_threshold`](Self::failure_threshold).
    #[must_use]
    pub fn with_failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }
    /// Sets [`interval`](Self::interval).
    #[must_use]
    pub fn with_interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }
    /// Sets [`open_timeout`](Self::open_timeout).
    #[must_use]
    pub fn with_open_timeout(mut self, d: Duration) -> Self {
        self.open_timeout = d;
        self
    }
    /// Sets [`half_open_max_requests`](Self::half_open_max_requests).
    #[must_use]
    pub fn with_half_open_max_requests(mut self, n: u32) -> Self {
        self.half_open_max_requests = n;
        self
    }
    /// Sets [`failure_statuses`](Self::failure_statuses).
    #[must_use]
    pub fn with_failure_statuses(mut self, statuses: Vec<StatusCode>) -> Self {
        self.failure_statuses = statuses;
        self
    }
    /// Sets [`ignore_byok_rate_limits`](Self::ignore_byok_rate_limits).
    #[must_use]
    pub fn with_ignore_byok_rate_limits(mut self, on: bool) -> Self {
        self.ignore_byok_rate_limits = on;
        self
    }
}

//! Prometheus metrics (metrics.md): the eleven reference metrics plus the bridge's own
//! overhead and recorder health, among it `record_interception_seconds`: the latency of the
//! awaited `record_interception` on its own (a histogram without labels, buckets from
//! 25 µs), the part of the overhead the recorder adds before the upstream call.
//!
//! # Why `prometheus` types are in this API
//!
//! [`Metrics::new`] and [`MetricsBuilder::register`] take a [`prometheus::Registry`] and
//! fail with a [`prometheus::Error`], on purpose: the bridge's series belong in the
//! registry the host already serves on `/metrics`, next to the host's own. A registry
//! type of the bridge's own would be a second registry, which the host would have to
//! gather and merge into its `/metrics` output by hand. So `prometheus` is a public
//! dependency of this crate: the host passes its registry, of the `prometheus` version
//! this crate names in `Cargo.toml` (0.14).
//!
//! ```
//! let registry = prometheus::Registry::new();
//! let metrics = aibridge::metrics::Metrics::builder()
//!     .initiator_id_label(false) // large deployments: no per-user series
//!     .max_label_values(200) // at most 200 distinct models, tool names … each
//!     .register(&registry)
//!     .unwrap();
//! # drop(metrics);
//! ```
//!
//! # Bounded labels
//!
//! Every series stays in the registry until the process ends, so a label whose values come
//! from client input would let any client grow the scrape and the memory without limit.
//! These labels are bounded: each admits the first
//! [`max_label_values`](MetricsBuilder::max_label_values) distinct values it sees (default
//! [`DEFAULT_MAX_LABEL_VALUES`], 1,000), each at most [`MAX_LABEL_VALUE_BYTES`] (256) bytes
//! long, and reports every other value as [`OTHER`] (`"other"`):
//!
//! | label | where | value from | overflow counted |
//! | --- | --- | --- | --- |
//! | `model` | every family that has it (interceptions, prompts, tokens, tools, circuit breakers) | the request body | once per interception, when it ends |
//! | `initiator_id` | `interceptions_total`, `prompts_total`, `tokens_total` | the host's [`Actor`](crate::Actor) | once per interception, when it ends |
//! | `name` | `non_injected_tool_selections_total` | the tools the client declares and the model picks | once per tool selection |
//! | `type` | `tokens_total` | the keys of the upstream's usage object | once per token usage and key |
//! | `reason` | `policy_denials_total` | the host's [`DenyKind::Other`](crate::policy::DenyKind::Other) reasons (the built-in ones are `model`, `budget`, `rate_limit`) | once per denial |
//! | `method` | `passthrough_total` | the request line | once per passthrough request; only `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `CONNECT`, `OPTIONS`, `TRACE` and `PATCH` are reported by name |
//!
//! Each value reported as `other` is counted in
//! `metric_label_overflow_total{label, reason}` (`reason` = `limit`: the label holds its
//! maximum of distinct values; `length`: the value is too long). Its series exist from
//! registration on, at 0, so an alert on its increase fires at the first overflow.
//!
//! Admission is first come, first served and never evicted, so a value is reported the same
//! way for the life of the process (the in-flight gauge is lowered under the label it was
//! raised under), and a client that fills the set first pushes later, legitimate values into
//! `other`: the overflow counter shows it, and a larger bound or a model allow-list in the
//! host is the remedy. The `circuit_breaker_state` gauge of `model="other"` holds the last
//! state set by any of the breakers folded into it. The other labels (`provider`, `route`,
//! `endpoint`, `status`, `client`, `server`, `kind`, `outcome`, and the injected tools'
//! `name`) take their values from the configuration or from fixed sets.

mod labels;
#[cfg(feature = "mcp")]
mod mcp;
mod observe;

pub(crate) use observe::Labels;

pub use labels::{DEFAULT_MAX_LABEL_VALUES, MAX_LABEL_VALUE_BYTES, OTHER};

use std::fmt;
use std::sync::Arc;

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use self::labels::LabelSet;

const DURATION_BUCKETS: [f64; 7] = [0.5, 2.0, 5.0, 15.0, 30.0, 60.0, 120.0];
/// From 25 µs: fine enough to tell 50 µs from 100 µs.
const OVERHEAD_BUCKETS: [f64; 13] = [
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

/// The bridge's metrics, registered in a host-provided registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    max_label_values: usize,
    /// The bounded labels (see the module docs); `initiator_id` is `None` when the label
    /// is off.
    model: LabelSet,
    initiator_id: Option<LabelSet>,
    tool_name: LabelSet,
    usage_type: LabelSet,
    method: LabelSet,
    reason: LabelSet,
    policy_denials_total: IntCounterVec,
    interceptions_total: IntCounterVec,
    interceptions_inflight: IntGaugeVec,
    interceptions_duration: HistogramVec,
    passthrough_total: IntCounterVec,
    prompts_total: IntCounterVec,
    tokens_total: IntCounterVec,
    injected_tool_invocations_total: IntCounterVec,
    #[cfg(feature = "mcp")]
    mcp_actor_unavailable_total: IntCounterVec,
    non_injected_tool_selections_total: IntCounterVec,
    circuit_breaker_state: GaugeVec,
    circuit_breaker_trips_total: IntCounterVec,
    circuit_breaker_rejects_total: IntCounterVec,
    interception_overhead: HistogramVec,
    records_total: IntCounterVec,
    record_queue_depth: IntGauge,
    record_interception_seconds: Histogram,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("initiator_id_label", &self.inner.initiator_id.is_some())
            .field("max_label_values", &self.inner.max_label_values)
            .finish_non_exhaustive()
    }
}

/// Configures [`Metrics`] before registering them.
#[must_use]
#[derive(Debug, Clone)]
pub struct MetricsBuilder {
    initiator: bool,
    max_label_values: usize,
}

impl MetricsBuilder {
    /// `false` removes the `initiator_id` label from every metric that has it (one series
    /// set per user is a cardinality risk in large deployments). Default `true`.
    pub fn initiator_id_label(mut self, on: bool) -> Self {
        self.initiator = on;
        self
    }

    /// How many distinct values each label that comes from client input may take
    /// (`model`, `initiator_id`, the tool selections' `name`, the token `type`); further
    /// values are reported as [`OTHER`] and counted in `metric_label_overflow_total` (see
    /// [Bounded labels](self#bounded-labels)). Default [`DEFAULT_MAX_LABEL_VALUES`] (1,000).
    /// `0` reports every such value as `other`.
    ///
    /// ```
    /// let registry = prometheus::Registry::new();
    /// let metrics = aibridge::metrics::Metrics::builder()
    ///     .max_label_values(50)
    ///     .register(&registry)
    ///     .unwrap();
    /// # drop(metrics);
    /// ```
    pub fn max_label_values(mut self, n: usize) -> Self {
        self.max_label_values = n;
        self
    }

    /// Registers every metric in `registry`.
    ///
    /// # Errors
    ///
    /// A `prometheus::Error` when a metric of the same name is already registered.
    pub fn register(self, registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let who = |labels: &[&'static str]| -> Vec<&'static str> {
            labels
                .iter()
                .copied()
                .filter(|l| self.initiator || *l != "initiator_id")
                .collect()
        };
        fn counter(
            r: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        fn histogram(
            r: &Registry,
            name: &str,
            help: &str,
            buckets: &[f64],
            labels: &[&str],
        ) -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            r.register(Box::new(h.clone()))?;
            Ok(h)
        }
        let r = registry;
        let inflight = IntGaugeVec::new(
            Opts::new("interceptions_inflight", "Interceptions in flight."),
            &["provider", "model", "route"],
        )?;
        r.register(Box::new(inflight.clone()))?;
        let state = GaugeVec::new(
            Opts::new(
                "circuit_breaker_state",
                "Circuit breaker state: 0 closed, 0.5 half-open, 1 open.",
            ),
            &["provider", "endpoint", "model"],
        )?;
        r.register(Box::new(state.clone()))?;
        let depth = IntGauge::new("record_queue_depth", "Records queued or being written.")?;
        r.register(Box::new(depth.clone()))?;
        let record_interception_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "record_interception_seconds",
                "Time the awaited record_interception took (the request waits for it before the upstream call), failures and timeouts included.",
            )
            .buckets(OVERHEAD_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(record_interception_seconds.clone()))?;
        let overflow = counter(
            r,
            "metric_label_overflow_total",
            "Label values reported as \"other\": the label held its maximum of distinct values (reason limit) or the value was too long (reason length).",
            &["label", "reason"],
        )?;
        let max = self.max_label_values;
        // Without the label there is nothing to bound, and no overflow series for it.
        let initiator_id = self
            .initiator
            .then(|| LabelSet::new("initiator_id", max, &overflow));
        let inner = Inner {
            max_label_values: max,
            model: LabelSet::new("model", max, &overflow),
            initiator_id,
            tool_name: LabelSet::new("name", max, &overflow),
            usage_type: LabelSet::new("type", max, &overflow),
            method: LabelSet::methods(&overflow),
            reason: LabelSet::new("reason", max, &overflow),
            policy_denials_total: counter(
                r,
                "policy_denials_total",
                "Requests the policy refused before anything was sent upstream.",
                &["provider", "model", "reason"],
            )?,
            interceptions_total: counter(
                r,
                "interceptions_total",
                "Interceptions that ended.",
                &who(&[
                    "provider",
                    "model",
                    "status",
                    "route",
                    "method",
                    "initiator_id",
                    "client",
                ]),
            )?,
            interceptions_inflight: inflight,
            interceptions_duration: histogram(
                r,
                "interceptions_duration_seconds",
                "Interception wall time.",
                &DURATION_BUCKETS,
                &["provider", "model"],
            )?,
            passthrough_total: counter(
                r,
                "passthrough_total",
                "Passthrough requests.",
                &["provider", "route", "method"],
            )?,
            prompts_total: counter(
                r,
                "prompts_total",
                "User prompts recorded.",
                &who(&["provider", "model", "initiator_id", "client"]),
            )?,
            tokens_total: counter(
                r,
                "tokens_total",
                "Tokens by type.",
                &who(&["provider", "model", "type", "initiator_id", "client"]),
            )?,
            injected_tool_invocations_total: counter(
                r,
                "injected_tool_invocations_total",
                "Injected MCP tool calls executed by the bridge.",
                &["provider", "model", "server", "name"],
            )?,
            #[cfg(feature = "mcp")]
            mcp_actor_unavailable_total: mcp::register(r)?,
            non_injected_tool_selections_total: counter(
                r,
                "non_injected_tool_selections_total",
                "Client and provider-executed tool calls the model made.",
                &["provider", "model", "name"],
            )?,
            circuit_breaker_state: state,
            circuit_breaker_trips_total: counter(
                r,
                "circuit_breaker_trips_total",
                "Transitions of a circuit breaker to open.",
                &["provider", "endpoint", "model"],
            )?,
            circuit_breaker_rejects_total: counter(
                r,
                "circuit_breaker_rejects_total",
                "Requests rejected by an open circuit breaker.",
                &["provider", "endpoint", "model"],
            )?,
            interception_overhead: histogram(
                r,
                "interception_overhead_seconds",
                "Time the bridge itself added to an interception: its duration minus the time spent waiting on upstream (the awaited record_interception included).",
                &OVERHEAD_BUCKETS,
                &["provider", "route"],
            )?,
            records_total: counter(
                r,
                "records_total",
                "Records by final delivery outcome.",
                &["kind", "outcome"],
            )?,
            record_queue_depth: depth,
            record_interception_seconds,
        };
        Ok(Metrics {
            inner: Arc::new(inner),
        })
    }
}

impl Metrics {
    /// Registers every metric in `registry`, `initiator_id` labels on.
    ///
    /// # Errors
    ///
    /// A `prometheus::Error` when a metric of the same name is already registered.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        Self::builder().register(registry)
    }

    /// A builder.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder {
            initiator: true,
            max_label_values: DEFAULT_MAX_LABEL_VALUES,
        }
    }
}

//! What the bridge reports: one method per event (an interception started or ended, a
//! denial, a prompt, tokens, a tool call, a record, the breaker), each turning its values
//! into label values and updating its series.

use std::time::Duration;

use super::Metrics;
use crate::recorder::{Delivery, RecordKind, TokenUsage};

impl Metrics {
    /// Label values, dropping `initiator_id` when the label is off.
    fn who<'a>(&self, values: &[(&'static str, &'a str)]) -> Vec<&'a str> {
        let on = self.inner.initiator_id.is_some();
        values
            .iter()
            .filter(|(k, _)| on || *k != "initiator_id")
            .map(|(_, v)| *v)
            .collect()
    }

    /// The label values of one interception, resolved once: the model and the actor id
    /// as reported (the value itself, or [`OTHER`] beyond the bound; the actor id `""`
    /// when its label is off, which [`who`](Self::who) drops). The one place an
    /// interception's label overflows are counted.
    pub(crate) fn labels(
        &self,
        provider: &str,
        model: &str,
        initiator: &str,
        client: String,
    ) -> Labels {
        let m = &self.inner;
        Labels {
            provider: provider.to_owned(),
            model: m.model.counted(model).to_owned(),
            initiator: m
                .initiator_id
                .as_ref()
                .map_or("", |set| set.counted(initiator))
                .to_owned(),
            client,
        }
    }

    pub(crate) fn interception_started(&self, l: &Labels, route: &str) {
        if let Ok(g) = self
            .inner
            .interceptions_inflight
            .get_metric_with_label_values(&[&l.provider, &l.model, route])
        {
            g.inc();
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the labels are the spec's"
    )]
    pub(crate) fn interception_ended(
        &self,
        l: &Labels,
        status: &str,
        inflight: bool,
        duration: Duration,
        overhead: Duration,
        route: &str,
        method: &str,
    ) {
        let m = &self.inner;
        let model = l.model.as_str();
        let values = self.who(&[
            ("provider", &l.provider),
            ("model", model),
            ("status", status),
            ("route", route),
            ("method", method),
            ("initiator_id", &l.initiator),
            ("client", &l.client),
        ]);
        if let Ok(c) = m.interceptions_total.get_metric_with_label_values(&values) {
            c.inc();
        }
        if inflight
            && let Ok(g) =
                m.interceptions_inflight
                    .get_metric_with_label_values(&[&l.provider, model, route])
        {
            g.dec();
        }
        if let Ok(h) = m
            .interceptions_duration
            .get_metric_with_label_values(&[&l.provider, model])
        {
            h.observe(duration.as_secs_f64());
        }
        if let Ok(h) = m
            .interception_overhead
            .get_metric_with_label_values(&[&l.provider, route])
        {
            h.observe(overhead.as_secs_f64());
        }
    }

    /// A request the policy refused: `policy_denials_total` and `interceptions_total`
    /// with status `denied` (`l` from [`labels`](Self::labels): already bounded).
    pub(crate) fn denied(&self, l: &Labels, reason: &str, route: &str) {
        let m = &self.inner;
        let model = l.model.as_str();
        let reason = m.reason.counted(reason);
        if let Ok(c) =
            m.policy_denials_total
                .get_metric_with_label_values(&[&l.provider, model, reason])
        {
            c.inc();
        }
        let values = self.who(&[
            ("provider", &l.provider),
            ("model", model),
            ("status", "denied"),
            ("route", route),
            ("method", "POST"),
            ("initiator_id", &l.initiator),
            ("client", &l.client),
        ]);
        if let Ok(c) = m.interceptions_total.get_metric_with_label_values(&values) {
            c.inc();
        }
    }

    pub(crate) fn passthrough(&self, provider: &str, route: &str, method: &str) {
        let method = self.inner.method.counted(method);
        if let Ok(c) = self
            .inner
            .passthrough_total
            .get_metric_with_label_values(&[provider, route, method])
        {
            c.inc();
        }
    }

    pub(crate) fn prompt(&self, l: &Labels) {
        let values = self.who(&[
            ("provider", &l.provider),
            ("model", &l.model),
            ("initiator_id", &l.initiator),
            ("client", &l.client),
        ]);
        if let Ok(c) = self
            .inner
            .prompts_total
            .get_metric_with_label_values(&values)
        {
            c.inc();
        }
    }

    pub(crate) fn tokens(&self, l: &Labels, usage: &TokenUsage) {
        let model = l.model.as_str();
        let initiator = l.initiator.as_str();
        let main = [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read_input_tokens", usage.cache_read_input_tokens),
            ("cache_write_input_tokens", usage.cache_write_input_tokens),
        ];
        let extras = usage.extra.iter().map(|(k, v)| (k.as_str(), *v));
        for (kind, n) in main.into_iter().chain(extras) {
            let values = self.who(&[
                ("provider", &l.provider),
                ("model", model),
                ("type", self.inner.usage_type.counted(kind)),
                ("initiator_id", initiator),
                ("client", &l.client),
            ]);
            if let Ok(c) = self
                .inner
                .tokens_total
                .get_metric_with_label_values(&values)
            {
                c.inc_by(n);
            }
        }
    }

    pub(crate) fn injected_tool(&self, l: &Labels, server: &str, name: &str) {
        if let Ok(c) = self
            .inner
            .injected_tool_invocations_total
            .get_metric_with_label_values(&[&l.provider, &l.model, server, name])
        {
            c.inc();
        }
    }

    #[cfg(feature = "mcp")]
    pub(crate) fn mcp_actor_unavailable(&self, server: &str, reason: &str) {
        super::mcp::inc(&self.inner.mcp_actor_unavailable_total, server, reason);
    }

    pub(crate) fn tool_selection(&self, l: &Labels, name: &str) {
        let name = self.inner.tool_name.counted(name);
        if let Ok(c) = self
            .inner
            .non_injected_tool_selections_total
            .get_metric_with_label_values(&[&l.provider, &l.model, name])
        {
            c.inc();
        }
    }

    pub(crate) fn record(&self, kind: RecordKind, outcome: Delivery) {
        if let Ok(c) = self
            .inner
            .records_total
            .get_metric_with_label_values(&[kind.as_str(), outcome.as_str()])
        {
            c.inc();
        }
    }

    /// How long one awaited `record_interception` took.
    pub(crate) fn record_interception_time(&self, took: Duration) {
        self.inner
            .record_interception_seconds
            .observe(took.as_secs_f64());
    }

    pub(crate) fn queue_depth(&self, depth: usize) {
        self.inner
            .record_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// The breaker gauges, trips and rejects (the model's overflow is counted by its
    /// interception).
    pub(crate) fn breaker_state(&self, provider: &str, endpoint: &str, model: &str, value: f64) {
        let model = self.inner.model.get(model);
        if let Ok(g) = self
            .inner
            .circuit_breaker_state
            .get_metric_with_label_values(&[provider, endpoint, model])
        {
            g.set(value);
        }
    }

    pub(crate) fn breaker_trip(&self, provider: &str, endpoint: &str, model: &str) {
        let model = self.inner.model.get(model);
        if let Ok(c) = self
            .inner
            .circuit_breaker_trips_total
            .get_metric_with_label_values(&[provider, endpoint, model])
        {
            c.inc();
        }
    }

    pub(crate) fn breaker_reject(&self, provider: &str, endpoint: &str, model: &str) {
        let model = self.inner.model.get(model);
        if let Ok(c) = self
            .inner
            .circuit_breaker_rejects_total
            .get_metric_with_label_values(&[provider, endpoint, model])
        {
            c.inc();
        }
    }
}

/// The label values every interception metric shares, as reported (made by
/// [`Metrics::labels`]: the model and actor id already bounded).
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) initiator: String,
    pub(crate) client: String,
}

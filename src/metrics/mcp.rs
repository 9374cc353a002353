//! The per-actor MCP metric (feature `mcp`): `mcp_actor_unavailable_total{server, reason}`.

use prometheus::{IntCounterVec, Opts, Registry};

/// Registers the counter.
pub(super) fn register(r: &Registry) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(
        Opts::new(
            "mcp_actor_unavailable_total",
            "Per-actor MCP credential refusals and failed per-actor sessions (that server's tools left out for the actor).",
        ),
        &["server", "reason"],
    )?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Counts one actor that got no tools from `server` (configured name): `reason` is
/// `refused` (the host's credential stage) or `failed` (its session could not be used).
pub(super) fn inc(c: &IntCounterVec, server: &str, reason: &str) {
    if let Ok(c) = c.get_metric_with_label_values(&[server, reason]) {
        c.inc();
    }
}

//! One `tools/call` on a live session, within the tool timeout.

use std::time::Duration;

use rmcp::{Peer, RoleClient, ServiceError, model::CallToolRequestParams};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::{
    connection,
    result::{ToolOutcome, ToolResult},
    tools::InjectedTool,
};

/// Calls `tool` (by its original name) on `peer` within `timeout`. Never panics; dropping
/// the future (or the timeout) cancels the request with `notifications/cancelled`.
/// `on_broken` runs when the transport failed (the session may be gone); `redact` cleans
/// error texts (URL userinfo).
pub(super) async fn call_tool(
    peer: Peer<RoleClient>,
    tool: &InjectedTool,
    arguments: Map<String, Value>,
    timeout: Duration,
    on_broken: impl FnOnce(),
    redact: impl FnOnce(String) -> String,
) -> ToolOutcome {
    let params = CallToolRequestParams::new(tool.name.clone()).with_arguments(arguments);
    let span = tracing::debug_span!("mcp_tool_call", server = %tool.server, tool = %tool.name);
    let answer = tokio::time::timeout(timeout, peer.call_tool(params))
        .instrument(span)
        .await;
    match answer {
        Ok(Ok(result)) => ToolOutcome::answered(ToolResult::from(result)),
        Ok(Err(e)) => {
            let reason = connection::service_error(&e);
            if matches!(
                e,
                ServiceError::TransportSend(_) | ServiceError::TransportClosed
            ) {
                on_broken();
            }
            let reason = redact(reason);
            tracing::debug!(server = %tool.server, tool = %tool.name, error = %reason, "MCP tool call failed");
            ToolOutcome::failed(reason)
        }
        Err(_) => ToolOutcome::failed(format!("timed out after {}", seconds(timeout))),
    }
}

/// `60s`, `1.5s`, `0.25s`.
pub(super) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_formatted_compactly() {
        assert_eq!(seconds(Duration::from_secs(60)), "60s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25s");
    }
}

//! TEMPORARY stand-in for the MCP client module (replaced at merge): only the types the
//! tool loop uses.
#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]

use std::sync::Arc;

use serde_json::value::RawValue;

#[derive(Debug, Clone)]
pub(crate) struct InjectedTool {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) server: String,
    pub(crate) server_url: String,
    pub(crate) description: Option<String>,
    pub(crate) input_schema: Box<RawValue>,
}

#[derive(Debug, Default)]
pub(crate) struct ToolSet {
    tools: Vec<InjectedTool>,
}

impl ToolSet {
    pub(crate) fn new(mut tools: Vec<InjectedTool>) -> Self {
        tools.sort_by(|a, b| a.id.cmp(&b.id));
        Self { tools }
    }
    pub(crate) fn tools(&self) -> &[InjectedTool] {
        &self.tools
    }
    pub(crate) fn get(&self, id: &str) -> Option<&InjectedTool> {
        self.tools.iter().find(|t| t.id == id)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ToolResult {
    pub(crate) text: String,
    pub(crate) is_error: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ToolOutcome {
    pub(crate) result: Result<ToolResult, String>,
}

impl ToolOutcome {
    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        Self {
            result: Err(reason.into()),
        }
    }
    pub(crate) fn invocation_error(&self) -> Option<String> {
        match &self.result {
            Err(e) => Some(e.clone()),
            Ok(r) if r.is_error => Some(r.text.clone()),
            Ok(_) => None,
        }
    }
    pub(crate) fn is_error(&self) -> bool {
        !matches!(&self.result, Ok(r) if !r.is_error)
    }
    pub(crate) fn anthropic_content(&self, _max: usize) -> serde_json::Value {
        match &self.result {
            Ok(r) => serde_json::json!([{"type":"text","text": r.text}]),
            Err(e) => {
                serde_json::json!([{"type":"text","text": format!("aibridge: tool call failed: {e}")}])
            }
        }
    }
    pub(crate) fn text(&self, _max: usize) -> String {
        match &self.result {
            Ok(r) if r.is_error => format!("Error: {}", r.text),
            Ok(r) => r.text.clone(),
            Err(e) => format!("aibridge: tool call failed: {e}"),
        }
    }
}

pub(crate) type Snapshot = Arc<ToolSet>;

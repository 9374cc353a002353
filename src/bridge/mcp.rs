//! The bridge's MCP side: the registry as the tool loop's tool source.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::BoxFuture;
use crate::intercept::{LoopConfig, ToolExecutor, ToolSource};
use crate::mcp::{InjectedTool, McpConfig, McpRegistry, ToolOutcome};
use crate::provider::Api;

/// The MCP registry plus the configuration it was started with.
#[derive(Debug)]
pub(crate) struct McpSource {
    pub(crate) registry: Arc<McpRegistry>,
    pub(crate) config: McpConfig,
}

impl ToolExecutor for McpSource {
    fn call<'a>(
        &'a self,
        tool: &'a InjectedTool,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(self.registry.call(tool, arguments))
    }
}

impl ToolSource for McpSource {
    fn snapshot(&self) -> Vec<InjectedTool> {
        self.registry.snapshot().tools().to_vec()
    }

    fn should_inject(&self, api: Api, model: &str) -> bool {
        self.config.should_inject(api, model)
    }

    fn loop_config(&self) -> LoopConfig {
        LoopConfig {
            max_iterations: self.config.iterations(),
            max_result_bytes: self.config.result_limit(),
            keep_alive: self.config.keep_alive(),
        }
    }
}

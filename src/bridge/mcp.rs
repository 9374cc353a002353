//! The bridge's MCP side: the registry as the tool loop's tool source.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::intercept::{LoopConfig, Offer, ToolExecutor, ToolSource};
use crate::mcp::{ActorTools, AllowTool, InjectedTool, McpConfig, McpRegistry, ToolOutcome};
use crate::provider::Api;
use crate::{Actor, BoxFuture};

/// The MCP registry plus the configuration it was started with.
#[derive(Debug)]
pub(crate) struct McpSource {
    pub(crate) registry: Arc<McpRegistry>,
    pub(crate) config: McpConfig,
}

impl ToolExecutor for ActorTools {
    fn call<'a>(
        &'a self,
        tool: &'a InjectedTool,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(ActorTools::call(self, tool, arguments))
    }
}

impl ToolSource for McpSource {
    fn tools_for<'a>(&'a self, actor: &'a Actor, allow: Option<AllowTool>) -> BoxFuture<'a, Offer> {
        Box::pin(async move {
            let tools = self.registry.tools_for(actor, allow.as_ref()).await;
            Offer {
                tools: tools.tools().to_vec(),
                executor: Arc::new(tools),
            }
        })
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

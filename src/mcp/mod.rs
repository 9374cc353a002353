//! MCP tool injection: the servers the bridge connects to and the tools it offers.
//!
//! The bridge connects to each configured MCP server over the streamable HTTP transport in
//! the background (building never waits for a server), lists its tools, and offers them to
//! the model as `bmcp_{server}_{tool}` on bridged requests. When the model calls one, the
//! bridge executes the call on the server and feeds the result back; the client never
//! sees those tools.
//!
//! ```
//! use aibridge::mcp::{McpConfig, McpServer};
//!
//! let config = McpConfig::new().server(
//!     McpServer::new("coder", "http://127.0.0.1:3000/mcp".parse().unwrap()).with_allow("^list_"),
//! );
//! # let _ = config;
//! ```

mod call;
mod config;
mod connection;
mod credentials;
#[cfg(feature = "mcp-server")]
mod endpoint;
mod per_actor;
mod pool;
mod registry;
mod result;
mod tools;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

pub use self::config::{McpConfig, McpConfigError, McpServer};
pub use self::credentials::{ActorHeaders, McpCredential, McpCredentials};
#[cfg(feature = "mcp-server")]
pub use self::endpoint::McpEndpoint;
pub(crate) use self::{
    per_actor::{ActorTools, AllowTool},
    registry::McpRegistry,
    result::ToolOutcome,
    tools::InjectedTool,
};

/// A tool the bridge currently injects (see `RequestBridge::mcp_tools`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct McpToolInfo {
    /// The id the model sees: `bmcp_{server}_{name}`.
    pub id: String,
    /// The configured server name.
    pub server: String,
    /// The original MCP tool name.
    pub name: String,
    /// The MCP description (empty if the server gave none).
    pub description: String,
}

//! An actor's tool set: per server, the shared session (static headers), the actor's own
//! session (its credential, from the host's [`McpCredentials`](super::McpCredentials)), or
//! nothing (refused, or unavailable with that credential).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    call,
    credentials::McpCredential,
    pool::Entry,
    registry::McpRegistry,
    result::ToolOutcome,
    tools::{InjectedTool, ToolSet},
};
use crate::Actor;

/// Says whether an actor may use a tool, by its original MCP name (the policy stage's
/// per-actor tool filter). A tool it refuses is neither offered nor executed.
pub(crate) type AllowTool = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The tools one actor gets right now, and where each server's calls go.
pub(crate) struct ActorTools {
    tools: Vec<InjectedTool>,
    /// Per server name with tools: the session its calls use.
    routes: Vec<(String, Route)>,
    registry: Arc<McpRegistry>,
}

enum Route {
    /// The bridge's shared session (the server's static headers).
    Shared,
    /// The actor's own (server, credential) session.
    Own(Arc<Entry>),
}

/// Why an actor gets no tools from a server (the metric's `reason`).
#[derive(Debug, Clone, Copy)]
enum Unavailable {
    Refused,
    Failed,
}

// === impl McpRegistry ===

impl McpRegistry {
    /// The tools `actor` gets (sorted by id, ids as for everyone), filtered by `allow`.
    /// Without per-actor credentials this is the shared snapshot. A refusal or a failed
    /// connection for this actor removes that server's tools for this actor only, with a
    /// log line and `mcp_actor_unavailable_total`; it is never an error.
    pub(crate) async fn tools_for(
        self: &Arc<Self>,
        actor: &Actor,
        allow: Option<&AllowTool>,
    ) -> ActorTools {
        let (Some(credentials), Some(pool)) = (self.config().actor_credentials(), &self.pool)
        else {
            let mut tools = self.snapshot().tools().to_vec();
            if let Some(allow) = allow {
                tools.retain(|t| allow(&t.name));
            }
            return ActorTools {
                tools,
                routes: Vec::new(),
                registry: self.clone(),
            };
        };
        let mut lists = Vec::new();
        let mut routes = Vec::new();
        for (index, (server, filter, shared_tools)) in self.servers().enumerate() {
            let Some(filter) = filter else { continue };
            let (route, tools) = match credentials.credential(actor, server.name()).await {
                McpCredential::Static => (Route::Shared, shared_tools),
                McpCredential::Headers(headers) => {
                    match pool.session(index, server, filter, &headers).await {
                        Ok((entry, tools)) => (Route::Own(entry), tools),
                        Err(reason) => {
                            self.unavailable(actor, server.name(), Unavailable::Failed, &reason);
                            continue;
                        }
                    }
                }
                McpCredential::Refused(reason) => {
                    self.unavailable(actor, server.name(), Unavailable::Refused, &reason);
                    continue;
                }
            };
            routes.push((server.name().to_owned(), route));
            lists.push(tools);
        }
        let mut tools = ToolSet::merge(lists.iter().map(Vec::as_slice))
            .tools()
            .to_vec();
        if let Some(allow) = allow {
            tools.retain(|t| allow(&t.name));
        }
        ActorTools {
            tools,
            routes,
            registry: self.clone(),
        }
    }

    fn unavailable(&self, actor: &Actor, server: &str, why: Unavailable, reason: &str) {
        let label = match why {
            Unavailable::Refused => "refused",
            Unavailable::Failed => "failed",
        };
        tracing::info!(
            server,
            initiator_id = actor.id(),
            reason = label,
            error = %reason,
            "MCP server not available to this actor; its tools are left out"
        );
        if let Some(m) = &self.metrics {
            m.mcp_actor_unavailable(server, label);
        }
    }
}

// === impl ActorTools ===

impl ActorTools {
    /// The tools, sorted by id.
    pub(crate) fn tools(&self) -> &[InjectedTool] {
        &self.tools
    }

    /// The tool with this injected id.
    #[cfg(feature = "mcp-server")]
    pub(crate) fn get(&self, id: &str) -> Option<&InjectedTool> {
        self.tools
            .binary_search_by(|t| t.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.tools[i])
    }

    /// Executes `tool` on the session this actor uses for its server, within the tool
    /// timeout. Never panics; failures are in the outcome.
    pub(crate) async fn call(
        &self,
        tool: &InjectedTool,
        arguments: Map<String, Value>,
    ) -> ToolOutcome {
        let route = self
            .routes
            .iter()
            .find(|(server, _)| *server == tool.server)
            .map(|(_, r)| r);
        match route {
            None | Some(Route::Shared) => self.registry.call(tool, arguments).await,
            Some(Route::Own(entry)) => {
                let Some(peer) = entry.peer() else {
                    return ToolOutcome::failed("server unavailable");
                };
                let server = entry.server();
                let userinfo = server
                    .url()
                    .authority()
                    .is_some_and(|a| a.as_str().contains('@'));
                call::call_tool(
                    peer,
                    tool,
                    arguments,
                    self.registry.config().call_timeout(),
                    || entry.mark_stale(),
                    |text| {
                        if userinfo {
                            text.replace(&server.url().to_string(), &server.display_url())
                        } else {
                            text
                        }
                    },
                )
                .await
            }
        }
    }
}

impl std::fmt::Debug for ActorTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorTools")
            .field("tools", &self.tools.len())
            .finish_non_exhaustive()
    }
}

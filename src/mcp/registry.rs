//! The MCP registry: one background task per server keeps a session and its tool list;
//! the merged, filtered tool set is published as an immutable snapshot.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use rmcp::{Peer, RoleClient};
use serde_json::{Map, Value};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::Instrument;

use super::{
    McpToolInfo, call,
    config::{McpConfig, McpServer},
    connection::{self, Handler, Session, backoff},
    pool::Pool,
    result::ToolOutcome,
    tools::{InjectedTool, ToolFilter, ToolSet, injectable},
};

/// The MCP servers, their sessions and the current injectable tool set.
pub(crate) struct McpRegistry {
    shared: Arc<Shared>,
    /// The per-credential sessions (only with per-actor credentials configured).
    pub(super) pool: Option<Arc<Pool>>,
    /// Counts failures of the per-actor credential stage, when the host registered metrics.
    pub(super) metrics: Option<crate::metrics::Metrics>,
    /// `None` until the tasks are spawned (deferred when `start` ran outside a runtime).
    tasks: Mutex<Option<Vec<JoinHandle<()>>>>,
    started: AtomicBool,
}

/// State shared by the registry and the server tasks.
struct Shared {
    config: McpConfig,
    servers: Vec<ServerState>,
    snapshot: watch::Sender<Arc<ToolSet>>,
    /// Servers that have not finished their first attempt.
    pending: watch::Sender<usize>,
    /// Connection attempts finished so far, all servers (observable by tests).
    attempts: watch::Sender<u64>,
    /// Bumped whenever a tool list may have changed (shared snapshot or a per-credential
    /// session's `list_changed`): the MCP endpoint re-lists its sessions' tools.
    changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

/// One server as the tasks and the calls see it.
struct ServerState {
    server: McpServer,
    /// `None` when the patterns do not compile (`validate` was skipped): never connected.
    filter: Option<ToolFilter>,
    /// The live session's peer, for calls.
    peer: Mutex<Option<Peer<RoleClient>>>,
    /// The server's injectable tools; empty until listed or after withdrawal.
    tools: Mutex<Vec<InjectedTool>>,
    /// `notifications/tools/list_changed` from the server.
    list_changed: Arc<Notify>,
    /// A call hit a transport error: check the session now.
    check: Notify,
}

/// How a session ended.
enum SessionEnd {
    Shutdown,
    Lost,
}

// === impl McpRegistry ===

impl McpRegistry {
    /// Spawns one background task per server (connect, list, refresh, reconnect with
    /// backoff 1 s·2ⁿ ≤ 60 s) and returns at once. Outside a Tokio runtime the tasks are
    /// spawned by the first later call made inside one.
    pub(crate) fn start(config: McpConfig, metrics: Option<crate::metrics::Metrics>) -> Arc<Self> {
        let servers: Vec<ServerState> = config
            .servers()
            .iter()
            .map(|server| ServerState {
                filter: match ToolFilter::new(server) {
                    Ok(filter) => Some(filter),
                    Err(e) => {
                        tracing::error!(server = server.name(), error = %e, "invalid MCP tool filter; server ignored");
                        None
                    }
                },
                server: server.clone(),
                peer: Mutex::new(None),
                tools: Mutex::new(Vec::new()),
                list_changed: Arc::new(Notify::new()),
                check: Notify::new(),
            })
            .collect();
        let pending = servers.iter().filter(|s| s.filter.is_some()).count();
        let changed = watch::Sender::new(0);
        let pool = config.actor_credentials().and_then(|_| {
            match Pool::new(
                config.refresh_period(),
                config.idle_timeout(),
                config.session_limit(),
                changed.clone(),
            ) {
                Ok(pool) => Some(Arc::new(pool)),
                Err(e) => {
                    tracing::error!(error = %e, "per-actor MCP sessions disabled");
                    None
                }
            }
        });
        let registry = Arc::new(Self {
            pool,
            metrics,
            shared: Arc::new(Shared {
                config,
                servers,
                snapshot: watch::Sender::new(Arc::new(ToolSet::default())),
                pending: watch::Sender::new(pending),
                attempts: watch::Sender::new(0),
                changed,
                shutdown: watch::Sender::new(false),
            }),
            tasks: Mutex::new(None),
            started: AtomicBool::new(false),
        });
        registry.ensure_started();
        registry
    }

    /// Resolves once every server finished its first attempt (success or failure).
    pub(crate) async fn ready(&self) {
        self.ensure_started();
        let mut pending = self.shared.pending.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` lives.
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// The current injectable tool set: immutable, sorted by id, deduplicated, filtered.
    pub(crate) fn snapshot(&self) -> Arc<ToolSet> {
        self.ensure_started();
        self.shared.snapshot.borrow().clone()
    }

    /// The public view of the current tool set.
    pub(crate) fn tools(&self) -> Vec<McpToolInfo> {
        self.snapshot()
            .tools()
            .iter()
            .map(InjectedTool::info)
            .collect()
    }

    /// A receiver that sees every new snapshot (for waiting on tool-list changes).
    #[cfg(test)]
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<ToolSet>> {
        self.ensure_started();
        self.shared.snapshot.subscribe()
    }

    /// Counts finished connection attempts (successful or not) of all servers.
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> watch::Receiver<u64> {
        self.shared.attempts.subscribe()
    }

    /// Executes one `tools/call` (with the original tool name) on the tool's server, within
    /// the tool timeout. Never panics. Dropping the future (or the timeout) cancels the
    /// request with `notifications/cancelled`.
    pub(crate) async fn call(
        &self,
        tool: &InjectedTool,
        arguments: Map<String, Value>,
    ) -> ToolOutcome {
        self.ensure_started();
        let Some(state) = self
            .shared
            .servers
            .iter()
            .find(|s| s.server.name() == tool.server)
        else {
            return ToolOutcome::failed("server unavailable");
        };
        let Some(peer) = state.peer() else {
            return ToolOutcome::failed("server unavailable");
        };
        // On a transport error, let the server's task check the session now rather than
        // at the next refresh.
        call::call_tool(
            peer,
            tool,
            arguments,
            self.shared.config.call_timeout(),
            || state.check.notify_one(),
            |reason| state.redact(reason),
        )
        .await
    }

    /// The configuration the registry was started with.
    pub(super) fn config(&self) -> &McpConfig {
        &self.shared.config
    }

    /// Per configured server (configuration order): the server, its compiled filter
    /// (`None`: never connected) and its current tools in the shared session.
    pub(super) fn servers(
        &self,
    ) -> impl Iterator<Item = (&McpServer, Option<&ToolFilter>, Vec<InjectedTool>)> {
        self.ensure_started();
        self.shared
            .servers
            .iter()
            .map(|s| (&s.server, s.filter.as_ref(), s.tools()))
    }

    /// A receiver that wakes whenever some tool list may have changed.
    #[cfg(feature = "mcp-server")]
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Closes every session (DELETE where the server issued one) and stops the tasks.
    /// Idempotent. Afterwards the tool set is empty.
    pub(crate) async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
        let handles = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        for handle in handles {
            if let Err(e) = handle.await {
                tracing::warn!(error = %e, "MCP server task ended abnormally");
            }
        }
        for state in &self.shared.servers {
            state.set_peer(None);
            state.set_tools(Vec::new());
        }
        self.shared.publish();
        self.shared.pending.send_replace(0);
    }

    /// Spawns the server tasks once, when a runtime is available.
    fn ensure_started(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if self.started.swap(true, Ordering::AcqRel) || *self.shared.shutdown.borrow() {
            return;
        }
        let handles = (0..self.shared.servers.len())
            .filter(|&i| self.shared.servers[i].filter.is_some())
            .map(|index| {
                let shared = self.shared.clone();
                let state = &self.shared.servers[index];
                let span = tracing::info_span!(
                    "mcp_server",
                    server = state.server.name(),
                    url = %state.server.display_url()
                );
                runtime.spawn(run_server(shared, index).instrument(span))
            })
            .collect();
        *tasks = Some(handles);
    }
}

impl std::fmt::Debug for McpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpRegistry")
            .field("config", &self.shared.config)
            .field("tools", &self.shared.snapshot.borrow().tools().len())
            .finish_non_exhaustive()
    }
}

impl Drop for McpRegistry {
    fn drop(&mut self) {
        // The tasks notice and close their sessions on their own.
        self.shared.shutdown.send_replace(true);
    }
}

// === impl Shared ===

impl Shared {
    /// Rebuilds the tool set from every server's list (configuration order decides
    /// duplicate ids) and publishes it if it changed.
    fn publish(&self) {
        self.snapshot.send_if_modified(|current| {
            let lists: Vec<Vec<InjectedTool>> =
                self.servers.iter().map(ServerState::tools).collect();
            let next = ToolSet::merge(lists.iter().map(Vec::as_slice));
            if next.same_as(current) {
                return false;
            }
            tracing::debug!(tools = next.tools().len(), "MCP tool set updated");
            *current = Arc::new(next);
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
            true
        });
    }

    fn first_attempt_done(&self, first: &mut bool) {
        if std::mem::take(first) {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

// === impl ServerState ===

impl ServerState {
    fn peer(&self) -> Option<Peer<RoleClient>> {
        self.peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_peer(&self, peer: Option<Peer<RoleClient>>) {
        *self.peer.lock().unwrap_or_else(PoisonError::into_inner) = peer;
    }

    fn tools(&self) -> Vec<InjectedTool> {
        self.tools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn has_tools(&self) -> bool {
        !self
            .tools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    fn set_tools(&self, tools: Vec<InjectedTool>) {
        *self.tools.lock().unwrap_or_else(PoisonError::into_inner) = tools;
    }

    /// Removes the URL's userinfo from an error text (reqwest errors quote the URL).
    fn redact(&self, text: String) -> String {
        let raw = self.server.url().to_string();
        if self
            .server
            .url()
            .authority()
            .is_some_and(|a| a.as_str().contains('@'))
        {
            text.replace(&raw, &self.server.display_url())
        } else {
            text
        }
    }

    /// Lists the server's tools and converts them.
    async fn list(&self, session: &Session) -> Result<Vec<InjectedTool>, String> {
        let listed = connection::list_tools(session, self.server.name()).await?;
        let filter = self.filter.clone().unwrap_or_default();
        Ok(injectable(&self.server, &filter, listed))
    }
}

// === the server task ===

/// Connects, lists, refreshes and reconnects one server until shutdown.
async fn run_server(shared: Arc<Shared>, index: usize) {
    let state = &shared.servers[index];
    let mut shutdown = shared.shutdown.subscribe();
    let http = match connection::http_client() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "MCP server disabled");
            shared.first_attempt_done(&mut true);
            return;
        }
    };
    let refresh = shared.config.refresh_period();
    let mut first = true;
    let mut failures: u32 = 0;
    // Since when the server has been unreachable (None while connected).
    let mut down_since: Option<Instant> = None;
    loop {
        let attempt = async {
            let handler = Handler::new(state.list_changed.clone());
            let session = connection::connect(&state.server, http.clone(), handler).await?;
            match state.list(&session).await {
                Ok(tools) => Ok((session, tools)),
                Err(e) => {
                    connection::close(session).await;
                    Err(e)
                }
            }
        };
        // D17: one span per connection attempt, a root (no request is waiting for it).
        let span = tracing::info_span!(
            parent: None,
            "aibridge.mcp.connect",
            mcp_server = state.server.name(),
            mcp_server_url = %state.server.display_url(),
            tool_count = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let outcome = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            outcome = attempt.instrument(span.clone()) => outcome,
        };
        match &outcome {
            Ok((_, tools)) => {
                span.record("tool_count", i64::try_from(tools.len()).unwrap_or(i64::MAX))
            }
            Err(e) => span.record("error", e.as_str()),
        };
        shared.attempts.send_modify(|n| *n += 1);
        match outcome {
            Ok((session, tools)) => {
                if failures > 0 || down_since.is_some() {
                    tracing::info!(tools = tools.len(), "MCP server connected again");
                } else {
                    tracing::debug!(tools = tools.len(), "MCP server connected");
                }
                failures = 0;
                state.set_tools(tools);
                state.set_peer(Some(session.peer().clone()));
                shared.publish();
                shared.first_attempt_done(&mut first);
                let end = serve_session(&shared, state, &session, &mut shutdown).await;
                state.set_peer(None);
                connection::close(session).await;
                if let SessionEnd::Shutdown = end {
                    return;
                }
                down_since = Some(Instant::now());
                // Reconnect at once; backoff applies to failed attempts.
                continue;
            }
            Err(e) => {
                let e = state.redact(e);
                if failures == 0 {
                    tracing::warn!(error = %e, "MCP server unreachable; retrying in the background");
                } else {
                    tracing::debug!(error = %e, failures, "MCP server still unreachable");
                }
                shared.first_attempt_done(&mut first);
                down_since.get_or_insert_with(Instant::now);
            }
        }
        failures = failures.saturating_add(1);
        let wake = Instant::now() + backoff(failures);
        // Wait for the next attempt; withdraw the tools once the server has been down for
        // longer than one refresh interval.
        loop {
            let withdraw_at = down_since.map(|since| since + refresh);
            let withdraw_due = state.has_tools() && withdraw_at.is_some_and(|at| at < wake);
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep_until(withdraw_at.unwrap_or(wake)), if withdraw_due => {
                    tracing::warn!("MCP server unreachable for longer than the refresh interval; its tools are withdrawn");
                    state.set_tools(Vec::new());
                    shared.publish();
                }
                () = tokio::time::sleep_until(wake) => break,
            }
        }
        if state.has_tools() && down_since.is_some_and(|since| since.elapsed() > refresh) {
            tracing::warn!(
                "MCP server unreachable for longer than the refresh interval; its tools are withdrawn"
            );
            state.set_tools(Vec::new());
            shared.publish();
        }
    }
}

/// Keeps the tool list fresh (on `list_changed`, a failed call, and every refresh
/// interval) until a refresh fails or shutdown.
async fn serve_session(
    shared: &Shared,
    state: &ServerState,
    session: &Session,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let refresh = shared.config.refresh_period();
    loop {
        let next_refresh = Instant::now() + refresh;
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return SessionEnd::Shutdown,
            () = state.list_changed.notified() => {}
            () = state.check.notified() => {}
            () = tokio::time::sleep_until(next_refresh) => {}
        }
        let listed = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return SessionEnd::Shutdown,
            listed = state.list(session) => listed,
        };
        match listed {
            Ok(tools) => {
                state.set_tools(tools);
                shared.publish();
            }
            Err(e) => {
                let e = state.redact(e);
                tracing::warn!(error = %e, "MCP tool refresh failed; keeping the previous tools and reconnecting");
                return SessionEnd::Lost;
            }
        }
    }
}

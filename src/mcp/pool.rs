//! Per-credential MCP sessions: one session per (server, credential), never shared between
//! two credentials, each with its own cached tool list; idle sessions are closed, and the
//! number of live sessions is bounded (least recently used out).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderName;
use rmcp::{Peer, RoleClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::McpServer;
use super::connection::{self, Handler, Session};
use super::tools::{InjectedTool, ToolFilter, injectable};

/// The per-credential sessions of one registry.
pub(super) struct Pool {
    refresh: Duration,
    idle: Duration,
    max: usize,
    http: reqwest::Client,
    /// Bumped when a pooled session's server announces a tool list change.
    changed: watch::Sender<u64>,
    epoch: Instant,
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

/// What identifies a session: the server (configuration index) and the exact header values
/// sent (kept in memory only; never logged).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    server: usize,
    headers: Vec<(HeaderName, String)>,
}

/// One (server, credential) session.
pub(super) struct Entry {
    server: McpServer,
    epoch: Instant,
    filter: ToolFilter,
    /// Milliseconds since the pool's epoch of the last use (LRU and idle eviction).
    last_used: AtomicU64,
    /// The server announced a tool list change: list again before the next use.
    stale: Arc<AtomicBool>,
    /// Evicted: the session is (being) closed; never connect again.
    closed: AtomicBool,
    peer: Mutex<Option<Peer<RoleClient>>>,
    state: tokio::sync::Mutex<State>,
}

enum State {
    Empty,
    Live {
        session: Session,
        tools: Vec<InjectedTool>,
        listed_at: Instant,
    },
    Failed {
        reason: String,
        until: Instant,
        failures: u32,
    },
    Closed,
}

// === impl Pool ===

impl Pool {
    pub(super) fn new(
        refresh: Duration,
        idle: Duration,
        max: usize,
        changed: watch::Sender<u64>,
    ) -> Result<Self, String> {
        Ok(Self {
            refresh,
            idle,
            max,
            http: connection::http_client()?,
            changed,
            epoch: Instant::now(),
            entries: Mutex::new(HashMap::new()),
            sweeper: Mutex::new(None),
        })
    }

    /// The session of (`index`, `server` with `credential`), connected and listed if
    /// needed, and its tools. `Err` = the server cannot be used with this credential now
    /// (rejected, unreachable; retried after a backoff).
    pub(super) async fn session(
        self: &Arc<Self>,
        index: usize,
        server: &McpServer,
        filter: &ToolFilter,
        credential: &[(HeaderName, crate::provider::Secret)],
    ) -> Result<(Arc<Entry>, Vec<InjectedTool>), String> {
        let server = server.with_credential(credential)?;
        let mut headers: Vec<(HeaderName, String)> = server
            .headers()
            .iter()
            .map(|(n, v)| (n.clone(), v.expose().to_owned()))
            .collect();
        headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()).then(a.1.cmp(&b.1)));
        let key = Key {
            server: index,
            headers,
        };
        let (entry, evicted) = self.entry(key, server, filter);
        for victim in evicted {
            tracing::debug!(
                server = victim.server.name(),
                "MCP session limit reached; closing the least recently used session"
            );
            self.close(&victim).await;
        }
        let tools = self.ready(&entry).await?;
        Ok((entry, tools))
    }

    /// Closes every session; afterwards the pool is empty.
    pub(super) async fn shutdown(&self) {
        if let Some(task) = self.lock_sweeper().take() {
            task.abort();
        }
        let entries: Vec<Arc<Entry>> = self.lock().drain().map(|(_, e)| e).collect();
        for entry in entries {
            self.close(&entry).await;
        }
    }

    /// Finds or adds the entry (touching it); evicts the least recently used entries
    /// beyond the bound.
    fn entry(
        self: &Arc<Self>,
        key: Key,
        server: McpServer,
        filter: &ToolFilter,
    ) -> (Arc<Entry>, Vec<Arc<Entry>>) {
        let now = self.now();
        let mut entries = self.lock();
        if let Some(entry) = entries.get(&key) {
            entry.last_used.store(now, Ordering::Release);
            return (entry.clone(), Vec::new());
        }
        let mut evicted = Vec::new();
        while entries.len() >= self.max {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Acquire))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(victim) = entries.remove(&oldest) {
                victim.closed.store(true, Ordering::Release);
                evicted.push(victim);
            }
        }
        let entry = Arc::new(Entry {
            server,
            epoch: self.epoch,
            filter: filter.clone(),
            last_used: AtomicU64::new(now),
            stale: Arc::new(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
            peer: Mutex::new(None),
            state: tokio::sync::Mutex::new(State::Empty),
        });
        entries.insert(key, entry.clone());
        drop(entries);
        self.ensure_sweeper();
        (entry, evicted)
    }

    /// Connects or refreshes the entry's session as needed and returns its tools.
    async fn ready(&self, entry: &Entry) -> Result<Vec<InjectedTool>, String> {
        let mut state = entry.state.lock().await;
        if entry.closed.load(Ordering::Acquire) {
            return Err("the session was closed (session limit)".to_owned());
        }
        let failures = match &mut *state {
            State::Live {
                session,
                tools,
                listed_at,
            } => {
                let stale = entry.stale.swap(false, Ordering::AcqRel);
                if !stale && listed_at.elapsed() < self.refresh {
                    return Ok(tools.clone());
                }
                match self.list(entry, session).await {
                    Ok(fresh) => {
                        *tools = fresh.clone();
                        *listed_at = Instant::now();
                        return Ok(fresh);
                    }
                    Err(e) => {
                        tracing::warn!(server = entry.server.name(), error = %e, "MCP tool refresh failed for a per-actor session; reconnecting");
                        0
                    }
                }
            }
            State::Failed {
                reason,
                until,
                failures,
            } => {
                if Instant::now() < *until {
                    return Err(reason.clone());
                }
                *failures
            }
            State::Empty => 0,
            State::Closed => return Err("the session was closed".to_owned()),
        };
        if let State::Live { session, .. } = std::mem::replace(&mut *state, State::Empty) {
            entry.set_peer(None);
            self.close_session(session).await;
        }
        match self.connect(entry).await {
            Ok((session, tools)) => {
                entry.set_peer(Some(session.peer().clone()));
                *state = State::Live {
                    session,
                    tools: tools.clone(),
                    listed_at: Instant::now(),
                };
                Ok(tools)
            }
            Err(reason) => {
                let failures = failures.saturating_add(1);
                *state = State::Failed {
                    reason: reason.clone(),
                    until: Instant::now() + connection::backoff(failures),
                    failures,
                };
                Err(reason)
            }
        }
    }

    async fn connect(&self, entry: &Entry) -> Result<(Session, Vec<InjectedTool>), String> {
        let stale = entry.stale.clone();
        let changed = self.changed.clone();
        let handler = Handler::with(move || {
            stale.store(true, Ordering::Release);
            changed.send_modify(|n| *n = n.wrapping_add(1));
        });
        let session = connection::connect(&entry.server, self.http.clone(), handler).await?;
        match self.list(entry, &session).await {
            Ok(tools) => Ok((session, tools)),
            Err(e) => {
                self.close_session(session).await;
                Err(e)
            }
        }
    }

    async fn list(&self, entry: &Entry, session: &Session) -> Result<Vec<InjectedTool>, String> {
        let listed = connection::list_tools(session, entry.server.name()).await?;
        Ok(injectable(&entry.server, &entry.filter, listed))
    }

    /// Closes an evicted entry's session (DELETE where the server issued one).
    async fn close(&self, entry: &Entry) {
        entry.closed.store(true, Ordering::Release);
        entry.set_peer(None);
        let mut state = entry.state.lock().await;
        if let State::Live { session, .. } = std::mem::replace(&mut *state, State::Closed) {
            self.close_session(session).await;
        }
    }

    async fn close_session(&self, session: Session) {
        connection::close(session).await;
    }

    /// Starts the idle sweeper once: every quarter of the idle time it closes the sessions
    /// unused for longer than the idle time.
    fn ensure_sweeper(self: &Arc<Self>) {
        let mut sweeper = self.lock_sweeper();
        if sweeper.is_some() {
            return;
        }
        let pool = Arc::downgrade(self);
        let period = (self.idle / 4).max(Duration::from_millis(10));
        *sweeper = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep().await;
            }
        }));
    }

    async fn sweep(&self) {
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now();
        let idle: Vec<Arc<Entry>> = {
            let mut entries = self.lock();
            let keys: Vec<Key> = entries
                .iter()
                .filter(|(_, e)| now.saturating_sub(e.last_used.load(Ordering::Acquire)) >= idle_ms)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| entries.remove(k)).collect()
        };
        for entry in idle {
            tracing::debug!(
                server = entry.server.name(),
                "closing an idle per-actor MCP session"
            );
            self.close(&entry).await;
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_sweeper(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.sweeper.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(task) = self.lock_sweeper().take() {
            task.abort();
        }
    }
}

// === impl Entry ===

impl Entry {
    /// The live session's peer, for calls; touches the entry.
    pub(super) fn peer(&self) -> Option<Peer<RoleClient>> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_used.fetch_max(now, Ordering::AcqRel);
        self.peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the session for a check (list again) before its next use.
    pub(super) fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// The server as connected (URL without userinfo in errors).
    pub(super) fn server(&self) -> &McpServer {
        &self.server
    }

    fn set_peer(&self, peer: Option<Peer<RoleClient>>) {
        *self.peer.lock().unwrap_or_else(PoisonError::into_inner) = peer;
    }
}

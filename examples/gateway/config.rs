//! The gateway's settings, read from the environment (README, "The example gateway").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::server::Limits;

/// Default `AIBRIDGE_HEADER_READ_TIMEOUT`: a request head normally arrives in one packet;
/// ten seconds leave room for a slow link and free a slowloris connection quickly.
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `AIBRIDGE_IDLE_TIMEOUT`: longer than the 60 s idle timeout of the usual proxies
/// and load balancers in front (nginx upstream keep-alive, AWS ALB), so they close an idle
/// connection first and never send a request into one the gateway is closing.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper end of the default `AIBRIDGE_MAX_CONNECTIONS`.
const MAX_CONNECTIONS_CEILING: usize = 4_096;
/// File descriptors kept out of the connection budget: the listener, stdio, the database
/// pool, MCP clients and the upstream DNS/TLS work.
const FD_RESERVE: u64 = 64;
/// The smallest default `AIBRIDGE_MAX_CONNECTIONS`, whatever the file descriptor limit.
const MIN_CONNECTIONS: usize = 16;

/// Gateway settings read from the environment.
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) database_url: String,
    pub(crate) tokens: Option<HashMap<String, String>>,
    /// The bearer token `/metrics` requires (`None`: open).
    pub(crate) metrics_token: Option<String>,
    pub(crate) anthropic_key: Option<String>,
    pub(crate) anthropic_base: http::Uri,
    pub(crate) openai_key: Option<String>,
    pub(crate) openai_base: http::Uri,
    pub(crate) copilot_base: http::Uri,
    /// MCP servers (`name`, URL) with the shared allow/deny patterns.
    pub(crate) mcp_servers: Vec<(String, http::Uri)>,
    pub(crate) mcp_allow: Option<String>,
    pub(crate) mcp_deny: Option<String>,
    /// Idle time after which a per-actor MCP session closes.
    pub(crate) mcp_session_idle: Duration,
    /// Per-actor MCP sessions open at once.
    pub(crate) mcp_max_sessions: usize,
    /// Header-read and idle timeouts, connection limit.
    pub(crate) limits: Limits,
    /// `AIBRIDGE_RECORD_INTERCEPTION=queued`: the interception record is queued ahead of
    /// its children instead of awaited before the upstream call.
    pub(crate) queue_interceptions: bool,
    /// The `bedrock` provider, when configured.
    pub(crate) bedrock: Option<crate::cloud::BedrockEnv>,
    /// The `vertex` provider, when configured.
    pub(crate) vertex: Option<crate::cloud::VertexEnv>,
    /// The policy file (`AIBRIDGE_POLICY`), if any.
    pub(crate) policy: Option<PathBuf>,
}

// === impl Config ===

impl Config {
    pub(crate) fn from_env() -> Result<Self, String> {
        Self::from_lookup(&env)
    }

    /// The settings from `get` (a variable's value; `None` or empty = unset).
    pub(crate) fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let uri = |name: &str, default: &str| -> Result<http::Uri, String> {
            let v = get(name).unwrap_or_else(|| default.to_owned());
            v.parse()
                .map_err(|e| format!("{name}: invalid URL {v:?}: {e}"))
        };
        let listen = get("AIBRIDGE_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = listen
            .parse()
            .map_err(|e| format!("AIBRIDGE_LISTEN: invalid address {listen:?}: {e}"))?;
        let database_url = get("AIBRIDGE_DATABASE_URL")
            .unwrap_or_else(|| "sqlite://aibridge.db?mode=rwc".to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(
                "AIBRIDGE_DATABASE_URL: must start with sqlite:, postgres:// or postgresql://"
                    .to_owned(),
            );
        }
        let tokens = get("AIBRIDGE_TOKENS")
            .map(|v| parse_tokens(&v))
            .transpose()?;
        let mcp_servers = get("AIBRIDGE_MCP_SERVERS")
            .map(|v| parse_mcp_servers(&v))
            .transpose()?
            .unwrap_or_default();
        let metrics_token = get("AIBRIDGE_METRICS_TOKEN");
        if metrics_token
            .as_deref()
            .is_some_and(|t| t.bytes().any(|b| !b.is_ascii_graphic()))
        {
            return Err("AIBRIDGE_METRICS_TOKEN: only printable ASCII without spaces".to_owned());
        }
        let duration = |name: &str, default: Duration| -> Result<Duration, String> {
            get(name).map_or(Ok(default), |v| {
                parse_duration(&v).map_err(|e| format!("{name}: {e}"))
            })
        };
        let max_connections = match get("AIBRIDGE_MAX_CONNECTIONS") {
            None => default_max_connections(),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("AIBRIDGE_MAX_CONNECTIONS: {v:?} is not a positive integer")
            })?,
        };
        let queue_interceptions = match get("AIBRIDGE_RECORD_INTERCEPTION").as_deref() {
            None | Some("awaited") => false,
            Some("queued") => true,
            Some(v) => {
                return Err(format!(
                    "AIBRIDGE_RECORD_INTERCEPTION: {v:?} is neither awaited nor queued"
                ));
            }
        };
        let (bedrock, vertex) = crate::cloud::from_lookup(&get)?;
        let mcp_max_sessions = match get("AIBRIDGE_MCP_MAX_SESSIONS") {
            None => 256,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("AIBRIDGE_MCP_MAX_SESSIONS: {v:?} is not a positive integer")
            })?,
        };
        Ok(Self {
            queue_interceptions,
            bedrock,
            vertex,
            mcp_session_idle: duration("AIBRIDGE_MCP_SESSION_IDLE", Duration::from_secs(600))?,
            mcp_max_sessions,
            listen,
            database_url,
            tokens,
            metrics_token,
            anthropic_key: get("ANTHROPIC_API_KEY"),
            anthropic_base: uri("ANTHROPIC_BASE_URL", "https://api.anthropic.com")?,
            openai_key: get("OPENAI_API_KEY"),
            openai_base: uri("OPENAI_BASE_URL", "https://api.openai.com/v1")?,
            copilot_base: uri(
                "COPILOT_BASE_URL",
                "https://api.individual.githubcopilot.com",
            )?,
            mcp_servers,
            mcp_allow: get("AIBRIDGE_MCP_ALLOW"),
            mcp_deny: get("AIBRIDGE_MCP_DENY"),
            limits: Limits {
                header_read_timeout: duration(
                    "AIBRIDGE_HEADER_READ_TIMEOUT",
                    DEFAULT_HEADER_READ_TIMEOUT,
                )?,
                idle_timeout: duration("AIBRIDGE_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)?,
                max_connections,
            },
            policy: get("AIBRIDGE_POLICY").map(PathBuf::from),
        })
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the example host is configured by its environment"
)]
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `token:actor-id` pairs, comma separated.
fn parse_tokens(v: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (token, actor) = entry
            .split_once(':')
            .ok_or_else(|| "AIBRIDGE_TOKENS: each entry must be token:actor-id".to_owned())?;
        let (token, actor) = (token.trim(), actor.trim());
        if token.is_empty() || actor.is_empty() {
            return Err("AIBRIDGE_TOKENS: token and actor id must be non-empty".to_owned());
        }
        if out.insert(token.to_owned(), actor.to_owned()).is_some() {
            return Err("AIBRIDGE_TOKENS: duplicate token".to_owned());
        }
    }
    if out.is_empty() {
        return Err("AIBRIDGE_TOKENS: no tokens".to_owned());
    }
    Ok(out)
}

/// `name=url` pairs, comma separated.
fn parse_mcp_servers(v: &str) -> Result<Vec<(String, http::Uri)>, String> {
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| "AIBRIDGE_MCP_SERVERS: each entry must be name=url".to_owned())?;
        let url = url
            .trim()
            .parse()
            .map_err(|e| format!("AIBRIDGE_MCP_SERVERS: invalid URL for {}: {e}", name.trim()))?;
        out.push((name.trim().to_owned(), url));
    }
    Ok(out)
}

/// A positive duration: `500ms`, `10s`, `2m`, or a bare number of seconds.
fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (digits, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map_or((v, ""), |i| v.split_at(i));
    let bad = || format!("{v:?} is not a duration (e.g. 500ms, 10s, 2m)");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{v:?} must be more than zero"));
    }
    Ok(d)
}

/// Half of the file descriptors left after a reserve (a busy connection holds one to the
/// client and one to the upstream), between 16 and 4,096.
fn default_max_connections() -> usize {
    #[cfg(unix)]
    let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    #[cfg(not(unix))]
    let fds: Option<u64> = None;
    connections_for_fds(fds)
}

fn connections_for_fds(fds: Option<u64>) -> usize {
    match fds {
        None => MAX_CONNECTIONS_CEILING,
        Some(n) => usize::try_from(n.saturating_sub(FD_RESERVE) / 2)
            .unwrap_or(usize::MAX)
            .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS_CEILING),
    }
}

/// A URL for logs: scheme, host, port and path, never user info.
pub(crate) fn without_userinfo(url: &http::Uri) -> String {
    let host = url.host().unwrap_or("");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        url.scheme_str().unwrap_or("http"),
        url.path()
    )
}

/// Redacts the password of a database URL for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&|k| vars.get(k).cloned())
    }

    #[test]
    fn durations_take_a_unit_or_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "0", "0s", "-1s", "1h", "s", "1.5s", "10 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_limits_have_defaults_and_can_be_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.limits.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(c.limits.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(c.limits.max_connections, default_max_connections());
        assert!(c.metrics_token.is_none());
        let c = config(&[
            ("AIBRIDGE_HEADER_READ_TIMEOUT", "250ms"),
            ("AIBRIDGE_IDLE_TIMEOUT", "3s"),
            ("AIBRIDGE_MAX_CONNECTIONS", "7"),
            ("AIBRIDGE_METRICS_TOKEN", "scrape-me"),
        ])
        .unwrap();
        assert_eq!(c.limits.header_read_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(3));
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.metrics_token.as_deref(), Some("scrape-me"));
    }

    #[test]
    fn the_interception_record_is_awaited_unless_queued_is_asked_for() {
        assert!(!config(&[]).unwrap().queue_interceptions);
        let awaited = config(&[("AIBRIDGE_RECORD_INTERCEPTION", "awaited")]).unwrap();
        assert!(!awaited.queue_interceptions);
        let queued = config(&[("AIBRIDGE_RECORD_INTERCEPTION", "queued")]).unwrap();
        assert!(queued.queue_interceptions);
        let err = config(&[("AIBRIDGE_RECORD_INTERCEPTION", "later")])
            .err()
            .unwrap();
        assert!(err.contains("neither awaited nor queued"), "{err}");
    }

    #[test]
    fn invalid_server_limits_are_startup_errors() {
        for (name, value) in [
            ("AIBRIDGE_HEADER_READ_TIMEOUT", "0"),
            ("AIBRIDGE_IDLE_TIMEOUT", "soon"),
            ("AIBRIDGE_MAX_CONNECTIONS", "0"),
            ("AIBRIDGE_MAX_CONNECTIONS", "-3"),
            ("AIBRIDGE_METRICS_TOKEN", "two words"),
        ] {
            let e = config(&[(name, value)]).err().unwrap_or_default();
            assert!(e.starts_with(name), "{name}={value}: {e:?}");
        }
    }

    #[test]
    fn default_connection_limit_follows_the_fd_limit() {
        assert_eq!(connections_for_fds(None), 4_096);
        assert_eq!(connections_for_fds(Some(512)), 224);
        assert_eq!(connections_for_fds(Some(1_024)), 480);
        assert_eq!(connections_for_fds(Some(1_048_576)), 4_096);
        assert_eq!(connections_for_fds(Some(20)), 16);
    }
}

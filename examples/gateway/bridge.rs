//! The bridge the gateway serves: three providers, the recorder of
//! `AIBRIDGE_DATABASE_URL`, metrics, the MCP servers and the policy of `AIBRIDGE_POLICY`.

use std::process::ExitCode;
use std::sync::Arc;

use aibridge::RequestBridge;
use aibridge::provider::{Anthropic, Copilot, CredentialPolicy, OpenAi, Secret};

use aibridge::policy::SpendSource;

use crate::config::{Config, redact, without_userinfo};
use crate::policy::{GatewayPolicy, Loaded};

pub(crate) fn policy(key: Option<&String>) -> CredentialPolicy {
    if key.is_some() {
        CredentialPolicy::Centralized
    } else {
        CredentialPolicy::ClientFirst
    }
}

/// The bridge, and the policy it consults when `AIBRIDGE_POLICY` names a file (`policy`,
/// already read and checked).
pub(crate) async fn build_bridge(
    cfg: &Config,
    registry: &prometheus::Registry,
    policy: Option<Loaded>,
) -> Result<(RequestBridge, Option<Arc<GatewayPolicy>>), ExitCode> {
    let mut anthropic = match &cfg.anthropic_key {
        Some(k) => Anthropic::new(Secret::new(k.clone())),
        None => Anthropic::without_key(),
    };
    anthropic = anthropic.with_base_url(cfg.anthropic_base.clone());
    let mut openai = match &cfg.openai_key {
        Some(k) => OpenAi::new(Secret::new(k.clone())),
        None => OpenAi::without_key(),
    };
    openai = openai.with_base_url(cfg.openai_base.clone());
    let copilot = Copilot::new().with_base_url(cfg.copilot_base.clone());
    let metrics = aibridge::metrics::Metrics::new(registry).map_err(|e| {
        eprintln!("aibridge gateway: metrics: {e}");
        ExitCode::from(1)
    })?;
    let mut queue = aibridge::recorder::RecordQueueConfig::default();
    if cfg.queue_interceptions {
        queue = queue.with_interception(aibridge::recorder::InterceptionRecord::Queued);
    }
    let mut builder = RequestBridge::builder()
        .record_queue(queue)
        .metrics(metrics)
        .provider(anthropic)
        .provider(openai)
        .provider(copilot);
    builder =
        crate::cloud::add(builder, cfg.bedrock.as_ref(), cfg.vertex.as_ref()).map_err(|e| {
            eprintln!("aibridge gateway: {e}");
            ExitCode::from(2)
        })?;
    // Per-actor MCP headers come from the policy file; reloads replace them.
    let mcp_headers = crate::mcp_headers::FileMcpHeaders::default();
    if let Some(loaded) = &policy {
        mcp_headers.replace(loaded.mcp_headers.clone());
    }
    if !cfg.mcp_servers.is_empty() {
        let mut mcp = aibridge::mcp::McpConfig::new()
            .session_idle_timeout(cfg.mcp_session_idle)
            .max_sessions(cfg.mcp_max_sessions);
        if policy.is_some() {
            mcp = mcp.credentials(mcp_headers.clone());
        }
        for (name, url) in &cfg.mcp_servers {
            let mut server = aibridge::mcp::McpServer::new(name.clone(), url.clone());
            if let Some(a) = &cfg.mcp_allow {
                server = server.with_allow(a.clone());
            }
            if let Some(d) = &cfg.mcp_deny {
                server = server.with_deny(d.clone());
            }
            mcp = mcp.server(server);
            tracing::info!(mcp_server = %name, mcp_server_url = %without_userinfo(url), "mcp server");
        }
        builder = builder.mcp(mcp);
    }
    // The recorder is also the policy's spend source: every replica's records.
    let (builder, spend): (_, Arc<dyn SpendSource>) = if cfg.database_url.starts_with("sqlite:") {
        match aibridge::recorder::SqliteRecorder::connect(&cfg.database_url).await {
            Ok(r) => {
                // The recorder also resolves presented Responses ids (S20) from its rows.
                let r = Arc::new(r);
                (
                    builder
                        .recorder(Arc::clone(&r))
                        .response_ids(Arc::clone(&r)),
                    r,
                )
            }
            Err(e) => {
                eprintln!(
                    "aibridge gateway: database {}: {e}",
                    redact(&cfg.database_url)
                );
                return Err(ExitCode::from(1));
            }
        }
    } else {
        connect_postgres(builder, &cfg.database_url).await?
    };
    let (builder, policy) = match (policy, &cfg.policy) {
        (Some(loaded), Some(path)) => {
            let prices = loaded.prices.clone();
            let p = GatewayPolicy::new(path.clone(), loaded, Some(spend)).map_err(|e| {
                eprintln!("aibridge gateway: AIBRIDGE_POLICY={e}");
                ExitCode::from(2)
            })?;
            tracing::info!(path = %path.display(), "policy loaded");
            let p = Arc::new(p.with_mcp_headers(mcp_headers));
            (builder.policy_arc(p.policy()).prices(prices), Some(p))
        }
        _ => (builder, None),
    };
    let bridge = builder.build().map_err(|e| {
        eprintln!("aibridge gateway: {e}");
        ExitCode::from(2)
    })?;
    Ok((bridge, policy))
}

#[cfg(feature = "postgres")]
async fn connect_postgres(
    builder: aibridge::bridge::Builder,
    url: &str,
) -> Result<(aibridge::bridge::Builder, Arc<dyn SpendSource>), ExitCode> {
    match aibridge::recorder::PostgresRecorder::connect(url).await {
        Ok(r) => {
            // Replicas sharing the database resolve each other's presented Responses ids.
            let r = Arc::new(r);
            Ok((
                builder
                    .recorder(Arc::clone(&r))
                    .response_ids(Arc::clone(&r)),
                r,
            ))
        }
        Err(e) => {
            eprintln!("aibridge gateway: database {}: {e}", redact(url));
            Err(ExitCode::from(1))
        }
    }
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(
    _: aibridge::bridge::Builder,
    url: &str,
) -> Result<(aibridge::bridge::Builder, Arc<dyn SpendSource>), ExitCode> {
    eprintln!(
        "aibridge gateway: database {}: built without the postgres feature",
        redact(url)
    );
    Err(ExitCode::from(1))
}

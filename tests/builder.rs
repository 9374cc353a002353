//! `Builder::build` validates everything once and names the first problem.

use aibridge::RequestBridge;
use aibridge::bridge::BuildError;
use aibridge::provider::{Anthropic, CredentialPolicy, OpenAi, Secret};
use aibridge::recorder::{NoopRecorder, RecordQueueConfig};

fn key() -> Secret {
    Secret::new("sk-test-key-0123456789")
}

#[tokio::test]
async fn build_errors_name_the_problem() {
    let base = || RequestBridge::builder().recorder(NoopRecorder);
    assert!(matches!(base().build(), Err(BuildError::NoProviders)));
    assert!(matches!(
        RequestBridge::builder()
            .provider(Anthropic::new(key()))
            .build(),
        Err(BuildError::MissingRecorder)
    ));
    for bad in ["Anthropic", "a_b", "-x", "x-", "a--b", ""] {
        let r = base()
            .provider(Anthropic::new(key()).with_name(bad))
            .build();
        assert!(
            matches!(r, Err(BuildError::InvalidProviderName { ref name }) if name == bad),
            "{bad}: {r:?}"
        );
    }
    let r = base()
        .provider(Anthropic::new(key()))
        .provider(OpenAi::new(key()).with_name("anthropic"))
        .build();
    assert!(
        matches!(r, Err(BuildError::DuplicateProviderName { ref name }) if name == "anthropic")
    );
    for url in ["ftp://h", "http://h/x?q=1"] {
        let r = base()
            .provider(Anthropic::new(key()).with_base_url(url.parse().unwrap()))
            .build();
        assert!(
            matches!(r, Err(BuildError::InvalidBaseUrl { .. })),
            "{url}: {r:?}"
        );
    }
    let r = base()
        .provider(Anthropic::without_key().with_credential_policy(CredentialPolicy::Centralized))
        .build();
    assert!(matches!(r, Err(BuildError::MissingKey { ref provider }) if provider == "anthropic"));
    assert!(
        base().provider(Anthropic::without_key()).build().is_ok(),
        "ClientFirst needs no key"
    );
    for prefix in ["api", "/api/"] {
        let r = base()
            .provider(Anthropic::new(key()))
            .path_prefix(prefix)
            .build();
        assert!(
            matches!(r, Err(BuildError::InvalidPathPrefix { .. })),
            "{prefix}"
        );
    }
    let r = base()
        .provider(Anthropic::new(key()))
        .max_request_body(0)
        .build();
    assert!(matches!(
        r,
        Err(BuildError::InvalidLimit {
            what: "max_request_body"
        })
    ));
    let r = base()
        .provider(Anthropic::new(key()))
        .record_queue(RecordQueueConfig::default().with_capacity(0))
        .build();
    assert!(matches!(r, Err(BuildError::InvalidLimit { .. })));
    let err = base()
        .provider(Anthropic::new(key()).with_name("Bad"))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid provider name \"Bad\": must match ^[a-z0-9]+(-[a-z0-9]+)*$"
    );
}

#[tokio::test]
async fn debug_output_never_shows_keys() {
    let builder = RequestBridge::builder()
        .provider(Anthropic::new(key()))
        .recorder(NoopRecorder);
    assert!(!format!("{builder:?}").contains("0123456789"));
    let bridge = builder.build().unwrap();
    assert!(!format!("{bridge:?}").contains("0123456789"));
    assert!(format!("{bridge:?}").contains("anthropic"));
}

/// An invalid MCP configuration comes back as the MCP module's own error, wrapped, with
/// its message unchanged and the bridge's limits kept apart from the MCP ones.
#[cfg(feature = "mcp")]
#[tokio::test]
async fn mcp_config_errors_are_wrapped_not_copied() {
    use aibridge::mcp::{McpConfig, McpConfigError, McpServer};
    let base = || {
        RequestBridge::builder()
            .provider(Anthropic::new(key()))
            .recorder(NoopRecorder)
    };
    let server = || McpServer::new("coder", "http://127.0.0.1:9/mcp".parse().unwrap());
    let err = base()
        .mcp(McpConfig::new().server(server().with_deny("(")))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            BuildError::Mcp(McpConfigError::InvalidRegex { server, pattern, .. })
                if server == "coder" && pattern == "("
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(r#"invalid regex "(" for MCP server "coder""#),
        "{err}"
    );
    let err = base()
        .mcp(McpConfig::new().server(server()).max_iterations(0))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Mcp(McpConfigError::InvalidLimit {
                what: "max_iterations"
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "invalid MCP setting max_iterations: must be greater than zero"
    );
    let err = base()
        .mcp(McpConfig::new().server(server()).server(server()))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Mcp(McpConfigError::InvalidServer { .. })),
        "{err:?}"
    );
}

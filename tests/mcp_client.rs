//! The public MCP configuration API: builders, `Debug` redaction, errors, auto traits.

use std::time::Duration;

use aibridge::mcp::{McpConfig, McpConfigError, McpServer, McpToolInfo};
use aibridge::provider::Secret;
use http::{HeaderName, header};

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn mcp_config_types_are_send_sync_and_clone() {
    assert_send_sync::<McpConfig>();
    assert_send_sync::<McpServer>();
    assert_send_sync::<McpToolInfo>();
    assert_send_sync::<McpConfigError>();
    let config = McpConfig::new().server(McpServer::new(
        "a",
        "http://127.0.0.1:1/mcp".parse().unwrap(),
    ));
    let copy = config.clone();
    assert_eq!(format!("{config:?}"), format!("{copy:?}"));
}

#[test]
fn mcp_server_debug_redacts_header_values_and_userinfo() {
    let server = McpServer::new(
        "coder",
        "https://admin:hunter2@coder.example.com/mcp"
            .parse()
            .unwrap(),
    )
    .with_header(header::AUTHORIZATION, Secret::new("Bearer sk-very-secret"))
    .with_header(HeaderName::from_static("x-api-key"), Secret::new("key-123"))
    .with_allow("^list_")
    .with_deny("^delete_");
    let debug = format!("{server:?}");
    for secret in ["sk-very-secret", "key-123", "hunter2", "admin:"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    for shown in [
        "coder",
        "https://coder.example.com/mcp",
        "authorization",
        "x-api-key",
        "^list_",
        "^delete_",
    ] {
        assert!(debug.contains(shown), "{shown} missing: {debug}");
    }
}

#[test]
fn mcp_config_debug_shows_bounds_and_hides_secrets() {
    let config = McpConfig::new()
        .server(
            McpServer::new("s", "http://127.0.0.1:1/mcp".parse().unwrap())
                .with_header(header::AUTHORIZATION, Secret::new("Bearer tok")),
        )
        .refresh_interval(Duration::from_secs(30))
        .max_iterations(3)
        .tool_timeout(Duration::from_secs(5))
        .max_result_bytes(1024)
        .keep_alive_interval(Duration::from_secs(2))
        .skip_injection_when(|model| model.contains("mini"));
    let debug = format!("{config:?}");
    assert!(!debug.contains("tok"), "{debug}");
    for shown in [
        "max_iterations: 3",
        "max_result_bytes: 1024",
        "refresh_interval: 30s",
        "tool_timeout: 5s",
    ] {
        assert!(debug.contains(shown), "{shown} missing: {debug}");
    }
}

#[test]
fn mcp_config_errors_name_the_server_and_the_problem() {
    let err = McpConfigError::InvalidServer {
        server: "a".to_owned(),
        reason: "the URL must be http or https".to_owned(),
    };
    assert_eq!(
        err.to_string(),
        r#"invalid MCP server "a": the URL must be http or https"#
    );
    let err = McpConfigError::InvalidRegex {
        server: "a".to_owned(),
        pattern: "(".to_owned(),
        reason: "unclosed group".to_owned(),
    };
    assert!(
        err.to_string()
            .starts_with(r#"invalid regex "(" for MCP server "a""#)
    );
    let err = McpConfigError::InvalidLimit {
        what: "max_iterations",
    };
    assert_eq!(
        err.to_string(),
        "invalid MCP setting max_iterations: must be greater than zero"
    );
}

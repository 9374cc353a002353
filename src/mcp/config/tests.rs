//! The configuration's validation and redaction.
use http::header;

use super::*;

fn server(name: &str, url: &str) -> McpServer {
    McpServer::new(name, url.parse().unwrap())
}

#[test]
fn valid_config_passes() {
    let config = McpConfig::new()
        .server(server("a", "http://127.0.0.1:1/mcp"))
        .server(
            server("B-2_x", "https://example.com/mcp")
                .with_header(header::AUTHORIZATION, Secret::new("Bearer t")),
        );
    config.validate().unwrap();
}

#[test]
fn invalid_names_are_rejected() {
    for name in ["", "_a", "-a", "a.b", "a b", "ä"] {
        let err = McpConfig::new()
            .server(server(name, "http://h/mcp"))
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, McpConfigError::InvalidServer { .. }),
            "{name}"
        );
    }
}

#[test]
fn duplicate_names_are_rejected() {
    let err = McpConfig::new()
        .server(server("a", "http://h/mcp"))
        .server(server("a", "http://i/mcp"))
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("used by another server"), "{err}");
}

#[test]
fn non_http_urls_are_rejected() {
    for url in ["ftp://h/mcp", "/mcp", "ws://h/mcp"] {
        let err = McpConfig::new()
            .server(server("a", url))
            .validate()
            .unwrap_err();
        assert!(matches!(err, McpConfigError::InvalidServer { .. }), "{url}");
    }
}

#[test]
fn reserved_and_invalid_headers_are_rejected() {
    let reserved = server("a", "http://h/mcp")
        .with_header(HeaderName::from_static("mcp-session-id"), Secret::new("x"));
    let invalid =
        server("a", "http://h/mcp").with_header(header::AUTHORIZATION, Secret::new("bad\nvalue"));
    for s in [reserved, invalid] {
        let err = McpConfig::new().server(s).validate().unwrap_err();
        assert!(matches!(err, McpConfigError::InvalidServer { .. }));
        assert!(!err.to_string().contains("bad\nvalue"));
    }
}

#[test]
fn invalid_regex_is_rejected() {
    let err = McpConfig::new()
        .server(server("a", "http://h/mcp").with_allow("ok").with_deny("("))
        .validate()
        .unwrap_err();
    let McpConfigError::InvalidRegex {
        server, pattern, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((server.as_str(), pattern.as_str()), ("a", "("));
}

#[test]
fn zero_limits_are_rejected() {
    let cases = [
        (McpConfig::new().max_iterations(0), "max_iterations"),
        (McpConfig::new().max_result_bytes(0), "max_result_bytes"),
        (
            McpConfig::new().tool_timeout(Duration::ZERO),
            "tool_timeout",
        ),
        (
            McpConfig::new().refresh_interval(Duration::ZERO),
            "refresh_interval",
        ),
    ];
    for (config, name) in cases {
        let err = config.validate().unwrap_err();
        assert!(matches!(err, McpConfigError::InvalidLimit { what } if what == name));
    }
}

#[test]
fn default_predicate_skips_haiku() {
    let config = McpConfig::new();
    assert!(!config.should_inject(Api::Messages, "claude-3-5-haiku-20241022"));
    assert!(config.should_inject(Api::Messages, "claude-sonnet-4-5"));
    let config = config.skip_injection_when(|_| false);
    assert!(config.should_inject(Api::Messages, "claude-3-5-haiku-20241022"));
}

#[test]
fn default_predicate_skips_haiku_on_messages_only() {
    let config = McpConfig::new();
    assert!(config.should_inject(Api::ChatCompletions, "claude-haiku-4.5"));
    assert!(config.should_inject(Api::Responses, "claude-haiku-4.5"));
    assert!(!config.should_inject(Api::Messages, "claude-haiku-4-5-20251001"));
    // A model-only predicate applies to every API; an API-aware one sees the API.
    let config = McpConfig::new().skip_injection_when(|m| m.contains("haiku"));
    assert!(!config.should_inject(Api::Responses, "claude-haiku-4.5"));
    let config = McpConfig::new().skip_injection_for(|api, _| api == Api::Responses);
    assert!(!config.should_inject(Api::Responses, "gpt-4.1"));
    assert!(config.should_inject(Api::Messages, "claude-3-5-haiku-20241022"));
}

#[test]
fn defaults() {
    let c = McpConfig::new();
    assert_eq!(c.iterations(), 10);
    assert_eq!(c.call_timeout(), Duration::from_secs(60));
    assert_eq!(c.result_limit(), 262_144);
    assert_eq!(c.keep_alive(), Duration::from_secs(10));
    assert_eq!(c.refresh_period(), Duration::from_secs(300));
}

#[test]
fn display_url_strips_userinfo() {
    let s = server("a", "https://user:pw@example.com:8443/mcp?api_key=k3y");
    assert_eq!(s.display_url(), "https://example.com:8443/mcp");
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("pw") && !dbg.contains("k3y"), "{dbg}");
}

#[test]
fn debug_redacts_header_values() {
    let s = server("a", "http://h/mcp")
        .with_header(header::AUTHORIZATION, Secret::new("Bearer top-secret"));
    let dbg = format!("{:?}", McpConfig::new().server(s));
    assert!(!dbg.contains("top-secret"), "{dbg}");
    assert!(dbg.contains("authorization"), "{dbg}");
}

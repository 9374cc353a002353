//! Client detection and session ids (clients.md).

use http::HeaderMap;

/// A detected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    Mux,
    ClaudeCode,
    Codex,
    Zed,
    CopilotVsCode,
    CopilotCli,
    KiloCode,
    RooCode,
    CoderAgents,
    CharmCrush,
    Cursor,
    Unknown,
}

impl Client {
    /// The record label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Mux => "Mux",
            Self::ClaudeCode => "Claude Code",
            Self::Codex => "Codex",
            Self::Zed => "Zed",
            Self::CopilotVsCode => "GitHub Copilot (VS Code)",
            Self::CopilotCli => "GitHub Copilot (CLI)",
            Self::KiloCode => "Kilo Code",
            Self::RooCode => "Roo Code",
            Self::CoderAgents => "Coder Agents",
            Self::CharmCrush => "Charm Crush",
            Self::Cursor => "Cursor",
            Self::Unknown => "Unknown",
        }
    }

    /// Detects the client from the request headers; first match wins.
    pub(crate) fn detect(headers: &HeaderMap) -> Self {
        let ua = header_str(headers, "user-agent")
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let originator = header_str(headers, "originator");
        let prefixes: [(&str, Self); 6] = [
            ("mux/", Self::Mux),
            ("claude", Self::ClaudeCode),
            ("codex", Self::Codex),
            ("zed/", Self::Zed),
            ("githubcopilotchat/", Self::CopilotVsCode),
            ("copilot/", Self::CopilotCli),
        ];
        if let Some((_, c)) = prefixes.iter().find(|(p, _)| ua.starts_with(p)) {
            return *c;
        }
        if ua.starts_with("kilo-code/") || originator == Some("kilo-code") {
            return Self::KiloCode;
        }
        if ua.starts_with("roo-code/") || originator == Some("roo-code") {
            return Self::RooCode;
        }
        if ua.starts_with("coder-agents/") {
            return Self::CoderAgents;
        }
        if ua.starts_with("charm crush/") {
            return Self::CharmCrush;
        }
        if header_str(headers, "x-cursor-client-version").is_some_and(|v| !v.is_empty()) {
            return Self::Cursor;
        }
        Self::Unknown
    }

    /// The session id under this client's rule. `metadata_user_id` is the request body's
    /// `metadata.user_id` when it is a JSON string (Claude Code only).
    pub(crate) fn session_id(
        self,
        headers: &HeaderMap,
        metadata_user_id: Option<&str>,
    ) -> Option<String> {
        let from = |name: &str| {
            header_str(headers, name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        match self {
            Self::ClaudeCode => from("x-claude-code-session-id")
                .or_else(|| metadata_user_id.and_then(claude_user_id_session)),
            Self::Codex => from("session-id").or_else(|| from("session_id")),
            Self::Mux => from("x-mux-workspace-id"),
            Self::CopilotVsCode => from("x-interaction-id"),
            Self::CopilotCli => from("x-client-session-id"),
            Self::KiloCode => from("x-kilocode-taskid"),
            Self::CoderAgents => from("x-coder-chat-id"),
            Self::Zed | Self::RooCode | Self::Cursor | Self::CharmCrush | Self::Unknown => None,
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Claude Code's `metadata.user_id`: a JSON object string with `session_id`, or the legacy
/// `user_{hash}_account_{id}_session_{uuid}` form.
fn claude_user_id_session(user_id: &str) -> Option<String> {
    let trimmed = user_id.trim_start();
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(map)) =
            serde_json::from_str::<serde_json::Value>(trimmed)
    {
        return match map.get("session_id") {
            Some(serde_json::Value::String(s)) => {
                Some(s.trim().to_owned()).filter(|s| !s.is_empty())
            }
            _ => None,
        };
    }
    let (_, rest) = user_id.split_once("_session_")?;
    Some(rest.trim().to_owned()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ua(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn detects_clients_by_user_agent_prefix() {
        for (agent, label) in [
            ("claude-cli/2.1.332 (external, sdk-cli)", "Claude Code"),
            (
                "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)",
                "Codex",
            ),
            ("ccclaude-cli/1.0", "Unknown"),
            ("Anthropic/Python 2.14.0", "Unknown"),
            ("OpenAI/JS 6.49.0", "Unknown"),
            ("mux/1.0", "Mux"),
            ("Zed/0.200", "Zed"),
            ("GitHubCopilotChat/0.30", "GitHub Copilot (VS Code)"),
            ("copilot/1.0", "GitHub Copilot (CLI)"),
            ("Kilo-Code/4", "Kilo Code"),
            ("roo-code/3", "Roo Code"),
            ("coder-agents/1", "Coder Agents"),
            ("Charm Crush/0.1", "Charm Crush"),
        ] {
            assert_eq!(Client::detect(&ua(agent)).label(), label, "{agent}");
        }
        assert_eq!(Client::detect(&HeaderMap::new()), Client::Unknown);
    }

    #[test]
    fn originator_and_cursor_headers_detect_clients() {
        let mut h = HeaderMap::new();
        h.insert("originator", HeaderValue::from_static("roo-code"));
        assert_eq!(Client::detect(&h), Client::RooCode);
        let mut h = HeaderMap::new();
        h.insert("x-cursor-client-version", HeaderValue::from_static("1.2"));
        assert_eq!(Client::detect(&h), Client::Cursor);
        h.insert("x-cursor-client-version", HeaderValue::from_static(""));
        assert_eq!(Client::detect(&h), Client::Unknown);
    }

    #[test]
    fn claude_code_session_from_header_then_metadata() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-claude-code-session-id",
            HeaderValue::from_static(" abc "),
        );
        assert_eq!(
            Client::ClaudeCode
                .session_id(&h, Some("{\"session_id\":\"x\"}"))
                .as_deref(),
            Some("abc")
        );
        let none = HeaderMap::new();
        let json = r#"{"device_id":"d","account_uuid":"","session_id":"093442a6-5546-47f3-b3d4-81c700743216"}"#;
        assert_eq!(
            Client::ClaudeCode.session_id(&none, Some(json)).as_deref(),
            Some("093442a6-5546-47f3-b3d4-81c700743216")
        );
        assert_eq!(
            Client::ClaudeCode.session_id(&none, Some(r#"{"session_id":""}"#)),
            None
        );
        assert_eq!(
            Client::ClaudeCode
                .session_id(&none, Some("user_ab_account_12_session_u-u-i-d"))
                .as_deref(),
            Some("u-u-i-d")
        );
        assert_eq!(
            Client::ClaudeCode.session_id(&none, Some("not json {")),
            None
        );
    }

    #[test]
    fn codex_accepts_both_session_header_spellings_and_others_ignore_them() {
        let mut h = HeaderMap::new();
        h.insert("session_id", HeaderValue::from_static("old"));
        assert_eq!(Client::Codex.session_id(&h, None).as_deref(), Some("old"));
        h.insert("session-id", HeaderValue::from_static("new"));
        assert_eq!(Client::Codex.session_id(&h, None).as_deref(), Some("new"));
        assert_eq!(Client::Zed.session_id(&h, None), None);
    }
}

//! Tool identity and filtering: from an MCP `tools/list` answer to the injectable set.

use std::{collections::BTreeMap, collections::btree_map::Entry};

use regex::Regex;
use serde_json::value::RawValue;

use super::{McpToolInfo, config::McpServer};

/// Prefix of every injected tool id.
const ID_PREFIX: &str = "bmcp_";
/// Longest tool name both providers accept.
const MAX_ID_LEN: usize = 64;

/// A tool the bridge offers to the model under its id and executes itself.
#[derive(Debug, Clone)]
pub(crate) struct InjectedTool {
    /// `bmcp_{server}_{name}`; matches `^[A-Za-z0-9_-]{1,64}$`.
    pub(crate) id: String,
    /// The original MCP tool name (sent in `tools/call`).
    pub(crate) name: String,
    /// The configured server name.
    pub(crate) server: String,
    /// The server URL without userinfo (for records and metrics).
    pub(crate) server_url: String,
    /// The MCP description, if the server gave one.
    pub(crate) description: Option<String>,
    /// The MCP `inputSchema` as received: a JSON object with `"type": "object"`, compact,
    /// with deterministic bytes for the same server answer.
    pub(crate) input_schema: Box<RawValue>,
}

/// An immutable set of injectable tools, sorted by id (byte order), ids unique.
#[derive(Debug, Default)]
pub(crate) struct ToolSet {
    tools: Vec<InjectedTool>,
}

/// The allow and deny patterns of one server, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolFilter {
    allow: Vec<Regex>,
    deny: Vec<Regex>,
}

// === impl InjectedTool ===

impl InjectedTool {
    /// The public view of the tool.
    pub(crate) fn info(&self) -> McpToolInfo {
        McpToolInfo {
            id: self.id.clone(),
            server: self.server.clone(),
            name: self.name.clone(),
            description: self.description.clone().unwrap_or_default(),
        }
    }

    fn same_as(&self, other: &Self) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.server == other.server
            && self.server_url == other.server_url
            && self.description == other.description
            && self.input_schema.get() == other.input_schema.get()
    }
}

// === impl ToolSet ===

impl ToolSet {
    /// Merges the tool lists of the servers, given in configuration order: the first server
    /// wins when two tools share an id; the result is sorted by id.
    pub(crate) fn merge<'a>(lists: impl IntoIterator<Item = &'a [InjectedTool]>) -> Self {
        let mut by_id = BTreeMap::new();
        for tool in lists.into_iter().flatten() {
            match by_id.entry(tool.id.as_str()) {
                Entry::Vacant(slot) => {
                    slot.insert(tool);
                }
                Entry::Occupied(kept) => {
                    let kept: &InjectedTool = kept.get();
                    tracing::warn!(
                        id = %tool.id,
                        server = %tool.server,
                        tool = %tool.name,
                        kept_server = %kept.server,
                        kept_tool = %kept.name,
                        "MCP tool id already taken by an earlier server; tool not injected"
                    );
                }
            }
        }
        Self {
            tools: by_id.into_values().cloned().collect(),
        }
    }

    /// The tools, sorted by id.
    pub(crate) fn tools(&self) -> &[InjectedTool] {
        &self.tools
    }

    /// The tool with this id.
    #[cfg(test)]
    pub(crate) fn get(&self, id: &str) -> Option<&InjectedTool> {
        self.tools
            .binary_search_by(|t| t.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.tools[i])
    }

    /// Whether there is nothing to inject.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Whether both sets hold the same tools with the same bytes.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.tools.len() == other.tools.len()
            && self
                .tools
                .iter()
                .zip(&other.tools)
                .all(|(a, b)| a.same_as(b))
    }
}

// === impl ToolFilter ===

impl ToolFilter {
    /// Compiles the server's patterns (already checked by `McpConfig::validate`).
    pub(crate) fn new(server: &McpServer) -> Result<Self, regex::Error> {
        let compile = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            allow: compile(server.allow())?,
            deny: compile(server.deny())?,
        })
    }

    /// Whether the tool with this original name is injected: deny wins over allow; with
    /// allow patterns, one of them must match.
    pub(crate) fn admits(&self, server: &str, name: &str) -> bool {
        if self.deny.iter().any(|r| r.is_match(name)) {
            if self.allow.iter().any(|r| r.is_match(name)) {
                tracing::debug!(
                    server,
                    tool = name,
                    "MCP tool matches allow and deny; denied"
                );
            }
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|r| r.is_match(name))
    }
}

/// Turns one server's `tools/list` answer into its injectable tools: invalid ids and
/// schemas are skipped with a warning, the filter applies to the original names, and a
/// name listed twice keeps its first entry.
pub(crate) fn injectable(
    server: &McpServer,
    filter: &ToolFilter,
    listed: Vec<rmcp::model::Tool>,
) -> Vec<InjectedTool> {
    let server_name = server.name();
    let server_url = server.display_url();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(listed.len());
    for tool in listed {
        let name = tool.name.as_ref();
        let id = format!("{ID_PREFIX}{server_name}_{name}");
        if !is_valid_id(&id) {
            tracing::warn!(
                server = server_name,
                tool = name,
                "MCP tool skipped: its id {id:?} does not match ^[A-Za-z0-9_-]{{1,64}}$"
            );
            continue;
        }
        if tool.input_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            tracing::warn!(
                server = server_name,
                tool = name,
                "MCP tool skipped: its inputSchema is not an object schema"
            );
            continue;
        }
        if !filter.admits(server_name, name) {
            continue;
        }
        if !seen.insert(id.clone()) {
            tracing::warn!(server = server_name, tool = name, "MCP tool listed twice");
            continue;
        }
        let input_schema = match serde_json::value::to_raw_value(&*tool.input_schema) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(server = server_name, tool = name, error = %e, "MCP tool skipped");
                continue;
            }
        };
        out.push(InjectedTool {
            id,
            name: name.to_owned(),
            server: server_name.to_owned(),
            server_url: server_url.clone(),
            description: tool.description.map(|d| d.into_owned()),
            input_schema,
        });
    }
    out
}

fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rmcp::model::Tool;
    use serde_json::json;

    use super::*;

    fn tool(name: &str, schema: serde_json::Value) -> Tool {
        let schema: rmcp::model::JsonObject = serde_json::from_value(schema).unwrap();
        Tool::new(name.to_owned(), format!("{name} tool"), Arc::new(schema))
    }

    fn object_tool(name: &str) -> Tool {
        tool(name, json!({"type": "object", "properties": {}}))
    }

    fn server(name: &str) -> McpServer {
        McpServer::new(name, "http://user:pw@127.0.0.1:9/mcp".parse().unwrap())
    }

    fn ids(tools: &[InjectedTool]) -> Vec<&str> {
        tools.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn ids_are_prefixed_and_urls_lose_userinfo() {
        let s = server("coder");
        let tools = injectable(
            &s,
            &ToolFilter::default(),
            vec![object_tool("list_workspaces")],
        );
        assert_eq!(ids(&tools), ["bmcp_coder_list_workspaces"]);
        assert_eq!(tools[0].name, "list_workspaces");
        assert_eq!(tools[0].server, "coder");
        assert_eq!(tools[0].server_url, "http://127.0.0.1:9/mcp");
        assert_eq!(
            tools[0].description.as_deref(),
            Some("list_workspaces tool")
        );
    }

    #[test]
    fn invalid_ids_are_skipped() {
        let s = server("srv");
        let long = "x".repeat(64 - "bmcp_srv_".len() + 1);
        let exact = "y".repeat(64 - "bmcp_srv_".len());
        let listed = vec![
            object_tool("a.b"),
            object_tool("a/b"),
            object_tool("a b"),
            object_tool(&long),
            object_tool(&exact),
            object_tool("ok-1"),
        ];
        let tools = injectable(&s, &ToolFilter::default(), listed);
        assert_eq!(
            ids(&tools),
            [format!("bmcp_srv_{exact}").as_str(), "bmcp_srv_ok-1"]
        );
    }

    #[test]
    fn non_object_schemas_are_skipped() {
        let s = server("srv");
        let listed = vec![
            tool("no_type", json!({"properties": {}})),
            tool("string", json!({"type": "string"})),
            tool("good", json!({"type": "object"})),
        ];
        let tools = injectable(&s, &ToolFilter::default(), listed);
        assert_eq!(ids(&tools), ["bmcp_srv_good"]);
    }

    #[test]
    fn schema_bytes_are_compact_and_deterministic() {
        let s = server("srv");
        let schema =
            json!({"type": "object", "required": ["b"], "properties": {"b": {"type": "string"}}});
        let a = injectable(&s, &ToolFilter::default(), vec![tool("t", schema.clone())]);
        let b = injectable(&s, &ToolFilter::default(), vec![tool("t", schema.clone())]);
        assert_eq!(a[0].input_schema.get(), b[0].input_schema.get());
        assert!(!a[0].input_schema.get().contains(' '));
        let parsed: serde_json::Value = serde_json::from_str(a[0].input_schema.get()).unwrap();
        assert_eq!(parsed, schema);
    }

    #[test]
    fn deny_wins_over_allow() {
        let s = server("srv")
            .with_allow("^list_")
            .with_allow("^get_")
            .with_deny("secret");
        let filter = ToolFilter::new(&s).unwrap();
        let listed = ["list_a", "list_secret", "get_b", "delete_c"]
            .map(object_tool)
            .to_vec();
        assert_eq!(
            ids(&injectable(&s, &filter, listed)),
            ["bmcp_srv_list_a", "bmcp_srv_get_b"]
        );
    }

    #[test]
    fn filters_are_case_sensitive_unanchored_searches() {
        let s = server("srv").with_deny("Admin");
        let filter = ToolFilter::new(&s).unwrap();
        assert!(!filter.admits("srv", "get_Admin_users"));
        assert!(filter.admits("srv", "get_admin_users"));
    }

    #[test]
    fn merge_sorts_dedupes_and_first_server_wins() {
        // server `a_b` with tool `c` and server `a` with tool `b_c` both give `bmcp_a_b_c`.
        let first = injectable(
            &server("a_b"),
            &ToolFilter::default(),
            vec![object_tool("c")],
        );
        let second = injectable(
            &server("a"),
            &ToolFilter::default(),
            vec![object_tool("b_c"), object_tool("z"), object_tool("B")],
        );
        let set = ToolSet::merge([first.as_slice(), second.as_slice()]);
        assert_eq!(ids(set.tools()), ["bmcp_a_B", "bmcp_a_b_c", "bmcp_a_z"]);
        assert_eq!(set.get("bmcp_a_b_c").unwrap().server, "a_b");
        assert!(set.get("bmcp_a_q").is_none());
        assert!(!set.is_empty());
        assert!(set.same_as(&ToolSet::merge([first.as_slice(), second.as_slice()])));
        assert!(!set.same_as(&ToolSet::merge([second.as_slice()])));
    }

    #[test]
    fn duplicate_names_in_one_list_keep_the_first() {
        let s = server("srv");
        let listed = vec![
            tool("t", json!({"type": "object", "title": "first"})),
            tool("t", json!({"type": "object", "title": "second"})),
        ];
        let tools = injectable(&s, &ToolFilter::default(), listed);
        assert_eq!(tools.len(), 1);
        assert!(tools[0].input_schema.get().contains("first"));
    }
}

//! Per-actor MCP headers from the policy file (`[actors."<id>".mcp_headers.<server>]`):
//! the gateway's `McpCredentials`, replaced on every policy reload.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use aibridge::Actor;
use aibridge::mcp::{ActorHeaders, McpCredential, McpCredentials};
use aibridge::provider::Secret;

use crate::policy_file::PolicyFile;

/// The headers in force; cheap to clone (one `Arc`).
#[derive(Clone, Default)]
pub(crate) struct FileMcpHeaders(Arc<RwLock<Arc<ActorHeaders>>>);

impl FileMcpHeaders {
    /// Replaces the table (a policy reload).
    pub(crate) fn replace(&self, headers: ActorHeaders) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(headers);
    }

    fn current(&self) -> Arc<ActorHeaders> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait::async_trait]
impl McpCredentials for FileMcpHeaders {
    async fn credential(&self, actor: &Actor, server: &str) -> McpCredential {
        let table = self.current();
        table.credential(actor, server).await
    }
}

/// The `mcp_headers` of every `[actors."<id>"]` table; the error names the actor, the
/// server and the header (never the value).
pub(crate) fn from_file(file: &PolicyFile) -> Result<ActorHeaders, String> {
    let mut out = ActorHeaders::new();
    for (actor, rules) in &file.actors {
        let servers: &BTreeMap<String, BTreeMap<String, String>> = match &rules.mcp_headers {
            Some(s) => s,
            None => continue,
        };
        for (server, headers) in servers {
            for (name, value) in headers {
                let where_ = || format!("[actors.{actor:?}.mcp_headers.{server}] {name}");
                let header = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{}: not a header name", where_()))?;
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(format!("{}: not a valid header value", where_()));
                }
                out = out.with(
                    actor.clone(),
                    server.clone(),
                    header,
                    Secret::new(value.clone()),
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_file::parse;

    #[tokio::test]
    async fn actors_get_their_headers_from_the_policy_file() {
        let file = parse(
            "[actors.\"alice\".mcp_headers.coder]\nAuthorization = \"Bearer alice-coder-token\"\n\n[actors.bob]\nmodels = [\"*\"]\n",
        )
        .unwrap();
        let creds = FileMcpHeaders::default();
        creds.replace(from_file(&file).unwrap());
        match creds.credential(&Actor::new("alice"), "coder").await {
            McpCredential::Headers(h) => {
                assert_eq!(h[0].0, http::header::AUTHORIZATION);
                assert_eq!(h[0].1.expose(), "Bearer alice-coder-token");
            }
            other => panic!("{other:?}"),
        }
        for (actor, server) in [("bob", "coder"), ("alice", "github"), ("carol", "coder")] {
            assert!(
                matches!(
                    creds.credential(&Actor::new(actor), server).await,
                    McpCredential::Static
                ),
                "{actor}/{server}"
            );
        }
        // A reload replaces the table.
        creds.replace(ActorHeaders::new());
        assert!(matches!(
            creds.credential(&Actor::new("alice"), "coder").await,
            McpCredential::Static
        ));
    }

    #[test]
    fn a_bad_header_is_named_without_its_value() {
        let file =
            parse("[actors.\"alice\".mcp_headers.coder]\n\"bad header\" = \"s3cret\"\n").unwrap();
        let err = from_file(&file).err().unwrap();
        assert!(
            err.contains("[actors.\"alice\".mcp_headers.coder] bad header"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let file =
            parse("[actors.\"alice\".mcp_headers.coder]\nx-key = \"line\\nbreak\"\n").unwrap();
        assert!(
            from_file(&file)
                .err()
                .unwrap()
                .contains("not a valid header value")
        );
    }
}

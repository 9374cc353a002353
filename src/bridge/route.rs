//! Routing: request path → (provider, route).

use std::collections::HashMap;
use std::sync::Arc;

use crate::provider::{Provider, Route};

/// The route table of a bridge.
#[derive(Debug)]
pub(crate) struct Table {
    by_name: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    provider: Arc<dyn Provider>,
    prefix: String,
}

/// Where a path goes.
#[derive(Debug)]
pub(crate) enum Resolved<'a> {
    /// No provider owns the path's first segment.
    NoProvider,
    /// A provider owns it, but no route matches.
    Unknown(&'a Arc<dyn Provider>),
    /// A route matched. `rest` is the path after the provider prefix (starts with `/`).
    Matched {
        provider: &'a Arc<dyn Provider>,
        route: &'a Route,
        rest: &'a str,
    },
}

impl Table {
    pub(crate) fn new(providers: &[Arc<dyn Provider>]) -> Self {
        let by_name = providers
            .iter()
            .map(|p| {
                (
                    p.name().to_owned(),
                    Entry {
                        provider: p.clone(),
                        prefix: p.route_prefix(),
                    },
                )
            })
            .collect();
        Self { by_name }
    }

    /// Resolves a raw path (no percent-decoding, no normalisation, case-sensitive).
    pub(crate) fn resolve<'a>(&'a self, path: &'a str) -> Resolved<'a> {
        let Some(after_slash) = path.strip_prefix('/') else {
            return Resolved::NoProvider;
        };
        let name = after_slash.split('/').next().unwrap_or_default();
        let Some(entry) = self.by_name.get(name) else {
            return Resolved::NoProvider;
        };
        let Some(rest) = path
            .strip_prefix(entry.prefix.as_str())
            .filter(|r| r.starts_with('/'))
        else {
            return Resolved::Unknown(&entry.provider);
        };
        if !is_plain_path(rest) {
            // The upstream URL parser (or the upstream) would resolve it elsewhere.
            return Resolved::Unknown(&entry.provider);
        }
        match entry.provider.routes().iter().find(|r| r.matches(rest)) {
            Some(route) => Resolved::Matched {
                provider: &entry.provider,
                route,
                rest,
            },
            None => Resolved::Unknown(&entry.provider),
        }
    }

    pub(crate) fn providers(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.by_name.values().map(|e| &e.provider)
    }
}

/// Whether a route path (starting with `/`) means the same to every URL parser and server,
/// so the allowlist decision holds upstream too. Refused:
///
/// - `.` and `..` segments, literal or percent-encoded (`%2e`): URL parsers resolve them;
/// - a backslash, literal or encoded (`%5c`): the WHATWG URL parser (reqwest's) treats `\`
///   as `/` in http(s) URLs, so `/v1/models/..\..\admin` would become `/admin`;
/// - an encoded slash (`%2f`): servers that decode before routing see extra segments;
/// - empty segments (`//`) except a trailing `/`: servers that merge slashes see another path.
fn is_plain_path(path: &str) -> bool {
    if path.contains('\\') {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return false;
    }
    let segments: Vec<&str> = lower.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    segments.iter().enumerate().all(|(i, seg)| {
        let decoded = seg.replace("%2e", ".");
        decoded != "." && decoded != ".." && (i == last || !seg.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Anthropic, Copilot, OpenAi, RouteKind, Secret};

    fn table() -> Table {
        let providers: Vec<Arc<dyn Provider>> = vec![
            Arc::new(Anthropic::new(Secret::new("k"))),
            Arc::new(OpenAi::new(Secret::new("k"))),
            Arc::new(Copilot::new()),
            Arc::new(Copilot::new().with_name("copilot-business")),
        ];
        Table::new(&providers)
    }

    fn kind(t: &Table, path: &str) -> Option<(String, RouteKind)> {
        match t.resolve(path) {
            Resolved::Matched {
                provider, route, ..
            } => Some((provider.name().to_owned(), route.kind)),
            _ => None,
        }
    }

    #[test]
    fn resolves_the_route_tables() {
        let t = table();
        use crate::provider::Api::*;
        assert_eq!(
            kind(&t, "/anthropic/v1/messages"),
            Some(("anthropic".into(), RouteKind::Bridged(Messages)))
        );
        assert_eq!(
            kind(&t, "/anthropic/v1/messages/count_tokens").unwrap().1,
            RouteKind::Passthrough
        );
        assert_eq!(
            kind(&t, "/anthropic/api/event_logging/batch").unwrap().1,
            RouteKind::Passthrough
        );
        assert_eq!(
            kind(&t, "/openai/v1/responses"),
            Some(("openai".into(), RouteKind::Bridged(Responses)))
        );
        assert_eq!(
            kind(&t, "/openai/v1/responses/resp_1/input_items")
                .unwrap()
                .1,
            RouteKind::Passthrough
        );
        assert_eq!(
            kind(&t, "/copilot-business/models"),
            Some(("copilot-business".into(), RouteKind::Passthrough))
        );
        assert_eq!(
            kind(&t, "/copilot/chat/completions").unwrap().1,
            RouteKind::Bridged(ChatCompletions)
        );
    }

    #[test]
    fn unknown_routes_stay_unknown() {
        let t = table();
        for p in [
            "/anthropic/v1/messages/batches",
            "/anthropic/api/hello",
            "/openai/v1/completions",
            "/openai/chat/completions",
            "/anthropic",
            "/anthropic/V1/messages",
            "/anthropic/v1//messages",
            "/anthropic/v1/models/../../admin",
            "/anthropic/v1/models/%2E%2e/x",
            "/openai/v1/responses/./x",
            "/anthropic/v1/models/..\\..\\admin",
            "/anthropic/v1/models/x%5Cy",
            "/anthropic/v1/models/..%2F..%2Fadmin",
            "/anthropic/v1/models/a%2fb",
            "/anthropic/v1/models//x",
            "/anthropic/v1/models//",
            "/openai/v1/conversations/.%2E/x",
        ] {
            let r = t.resolve(p);
            assert!(matches!(r, Resolved::Unknown(_)), "{p}: {r:?}");
        }
        for p in [
            "/anthropic/v1/models/",
            "/anthropic/v1/models/claude-sonnet-4-5",
            "/anthropic/v1/models/a.b..c",
            "/openai/v1/models/ft:gpt-4o-mini:org:custom:abc%20x",
            "/copilot/.well-known/openid-configuration",
            "/openai/v1/responses/resp_1/input_items",
        ] {
            let r = t.resolve(p);
            assert!(matches!(r, Resolved::Matched { .. }), "{p}: {r:?}");
        }
        assert!(matches!(
            t.resolve("/nope/v1/messages"),
            Resolved::NoProvider
        ));
        assert!(matches!(t.resolve("/"), Resolved::NoProvider));
        assert!(matches!(t.resolve(""), Resolved::NoProvider));
    }
}

//! The model mapping of a cloud provider, and the `/v1/models` list made from it.

use bytes::Bytes;

/// Client model → cloud model: an ordered table of client-model globs (`*` any run of
/// characters, `?` one character; first match wins), then, for Bedrock, the reference's
/// pair (a model containing `haiku` → the small fast model, any other → the main model).
/// A model nothing maps goes to the cloud as the client named it.
///
/// ```
/// use aibridge::provider::ModelMap;
/// let map = ModelMap::new()
///     .with_glob("claude-opus-*", "us.anthropic.claude-opus-4-5-20251101-v1:0")
///     .with_pair("anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0");
/// assert_eq!(map.map("claude-opus-4-5"), "us.anthropic.claude-opus-4-5-20251101-v1:0");
/// assert_eq!(map.map("claude-3-5-haiku-latest"), "anthropic.claude-haiku-4-5-20251001-v1:0");
/// assert_eq!(map.map("claude-sonnet-4-5"), "anthropic.claude-sonnet-4-5-20250929-v1:0");
/// assert_eq!(ModelMap::parse("a*=x, b=y").unwrap().map("b"), "y");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelMap {
    globs: Vec<(String, String)>,
    pair: Option<(String, String)>,
}

/// A `client-glob=cloud-model,…` text that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("aibridge: invalid model map entry {0:?} (expected client-glob=cloud-model)")]
pub struct ModelMapError(String);

impl ModelMap {
    /// An empty mapping (every model goes as named).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `client-glob=cloud-model,…` (entries trimmed; empty entries skipped).
    ///
    /// # Errors
    ///
    /// [`ModelMapError`] naming the first entry without `=` or with an empty side.
    pub fn parse(text: &str) -> Result<Self, ModelMapError> {
        let mut map = Self::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.split_once('=') {
                Some((g, m)) if !g.trim().is_empty() && !m.trim().is_empty() => {
                    map = map.with_glob(g.trim(), m.trim());
                }
                _ => return Err(ModelMapError(entry.to_owned())),
            }
        }
        Ok(map)
    }

    /// Appends a glob entry (checked in the order added, before the pair).
    #[must_use]
    pub fn with_glob(mut self, client_glob: impl Into<String>, model: impl Into<String>) -> Self {
        self.globs.push((client_glob.into(), model.into()));
        self
    }

    /// Sets the reference's pair: `small_fast` for models containing `haiku`, `main` for
    /// every other model.
    #[must_use]
    pub fn with_pair(mut self, main: impl Into<String>, small_fast: impl Into<String>) -> Self {
        self.pair = Some((main.into(), small_fast.into()));
        self
    }

    /// The cloud model for `client_model`.
    pub fn map(&self, client_model: &str) -> String {
        if let Some((_, m)) = self.globs.iter().find(|(g, _)| glob(g, client_model)) {
            return m.clone();
        }
        match &self.pair {
            Some((_, small)) if client_model.contains("haiku") => small.clone(),
            Some((main, _)) => main.clone(),
            None => client_model.to_owned(),
        }
    }

    /// The cloud models of the mapping, in order, without repeats.
    pub fn models(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let pair = self.pair.iter().flat_map(|(a, b)| [a, b]);
        for m in self.globs.iter().map(|(_, m)| m).chain(pair) {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }
}

/// `*` matches any run of characters, `?` one character; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The Anthropic `/v1/models` list of `models`.
pub(crate) fn list_body(models: &[String]) -> Bytes {
    let data: Vec<serde_json::Value> = models.iter().map(|m| model_object(m)).collect();
    let body = serde_json::json!({
        "data": data,
        "has_more": false,
        "first_id": models.first(),
        "last_id": models.last(),
    });
    Bytes::from(body.to_string())
}

/// One model of the list.
pub(crate) fn model_object(id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "model",
        "id": id,
        "display_name": id,
        "created_at": "1970-01-01T00:00:00Z",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("claude-*", "claude-sonnet"));
        assert!(glob("*haiku*", "claude-3-5-haiku-latest"));
        assert!(glob("c?aude", "claude"));
        assert!(!glob("claude-*", "gpt-4"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("*", ""));
    }

    #[test]
    fn globs_win_over_the_pair_and_unmapped_models_pass() {
        let m = ModelMap::parse("claude-haiku-*=h2, *opus*=o").unwrap();
        assert_eq!(m.map("claude-haiku-4-5"), "h2");
        assert_eq!(m.map("claude-opus-4"), "o");
        assert_eq!(m.map("claude-sonnet"), "claude-sonnet");
        let m = m.with_pair("main", "small");
        assert_eq!(m.map("claude-3-haiku"), "small");
        assert_eq!(m.map("claude-haiku-4-5"), "h2");
        assert_eq!(m.map("anything"), "main");
        assert_eq!(m.models(), ["h2", "o", "main", "small"]);
        assert!(ModelMap::parse("nope").is_err());
        assert!(ModelMap::parse("a=").is_err());
    }

    #[test]
    fn list_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&list_body(&["a".to_owned(), "b".to_owned()])).unwrap();
        assert_eq!(v["data"][1]["id"], "b");
        assert_eq!(v["data"][0]["type"], "model");
        assert_eq!(v["has_more"], false);
        assert_eq!(v["last_id"], "b");
    }
}

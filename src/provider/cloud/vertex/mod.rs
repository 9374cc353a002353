//! The Google Vertex AI provider (cloud-anthropic.md "Google Vertex AI").

mod token;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri, header};

pub use self::token::{AccessToken, TokenError, TokenSource};

use self::token::{Cached, MetadataServer, ServiceAccount};
use super::super::common::{Common, common_setters};
use super::edit::{Members, json_string};
use super::{AuthError, ModelMap, Transport, path_segment};

const VERSION: &str = "vertex-2023-10-16";

/// The metadata server's default address.
const METADATA: &str = "http://metadata.google.internal";

/// Claude through Google Vertex AI: an Anthropic Messages provider (name `vertex`) whose
/// calls go to `rawPredict` / `streamRawPredict` of the Anthropic publisher's models,
/// with a bearer token from a service-account key, the metadata server or a host's
/// [`TokenSource`] (cached until shortly before it expires).
///
/// ```
/// use aibridge::provider::{ModelMap, Provider, Vertex};
/// let p = Vertex::new("my-project", "us-east5")
///     .with_models(ModelMap::parse("claude-sonnet-*=claude-sonnet-4-5@20250929").unwrap());
/// assert_eq!(p.route_prefix(), "/vertex");
/// assert_eq!(p.base_url().to_string(), "https://us-east5-aiplatform.googleapis.com/");
/// let g = Vertex::new("my-project", "global");
/// assert_eq!(g.base_url().to_string(), "https://aiplatform.googleapis.com/");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Vertex {
    common: Common,
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    project: String,
    region: String,
    tokens: Option<Arc<Cached>>,
    kind: &'static str,
    models: ModelMap,
}

fn token_http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

fn region_url(region: &str) -> Uri {
    let host: String = region
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let url = if host == "global" {
        "https://aiplatform.googleapis.com".to_owned()
    } else {
        format!("https://{host}-aiplatform.googleapis.com")
    };
    Uri::try_from(url).unwrap_or_else(|_| Uri::from_static("https://aiplatform.googleapis.com"))
}

impl Vertex {
    /// A provider for `project` in `region` (`global` or a region such as `us-east5`),
    /// without a token source.
    pub fn new(project: impl Into<String>, region: impl Into<String>) -> Self {
        let region = region.into();
        let mut common = Common::new(
            "vertex",
            "https://aiplatform.googleapis.com",
            None,
            super::super::CredentialPolicy::Centralized,
        );
        common.base_url = region_url(&region);
        Self {
            common,
            inner: Arc::new(Inner {
                project: project.into(),
                region,
                tokens: None,
                kind: "",
                models: ModelMap::new(),
            }),
        }
    }

    common_setters!();

    fn with_source(mut self, source: Arc<dyn TokenSource>, kind: &'static str) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.tokens = Some(Arc::new(Cached::new(source)));
        inner.kind = kind;
        self
    }

    /// Tokens from a service-account key (the JSON of a key file; its `token_uri` is
    /// honoured).
    ///
    /// # Errors
    ///
    /// [`TokenError`] when the JSON is not a service-account key with an RSA key.
    pub fn with_service_account_key(self, json: &str) -> Result<Self, TokenError> {
        let sa = ServiceAccount::from_json(json, token_http())?;
        Ok(self.with_source(Arc::new(sa), "google-service-account"))
    }

    /// Tokens from a service-account key file (`GOOGLE_APPLICATION_CREDENTIALS`).
    ///
    /// # Errors
    ///
    /// [`TokenError`] when the file cannot be read or is not a service-account key.
    pub fn with_service_account_file(
        self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, TokenError> {
        let json = std::fs::read_to_string(path.as_ref()).map_err(|e| {
            TokenError::new(format!(
                "cannot read service-account key {}: {}",
                path.as_ref().display(),
                e.kind()
            ))
        })?;
        self.with_service_account_key(&json)
    }

    /// Tokens from the metadata server at `http://metadata.google.internal`.
    pub fn with_metadata_server(self) -> Self {
        self.with_metadata_server_at(METADATA)
    }

    /// Tokens from a metadata server at `base` (an emulator, a test server).
    pub fn with_metadata_server_at(self, base: impl Into<String>) -> Self {
        let source = MetadataServer {
            base: base.into(),
            http: token_http(),
        };
        self.with_source(Arc::new(source), "google-metadata-server")
    }

    /// Tokens from the host's own source.
    pub fn with_token_source(self, source: Arc<dyn TokenSource>) -> Self {
        self.with_source(source, "google-token-source")
    }

    /// The model mapping (client globs to Vertex model names).
    pub fn with_models(mut self, models: ModelMap) -> Self {
        Arc::make_mut(&mut self.inner).models = models;
        self
    }
}

super::impl_cloud_provider!(Vertex);

impl Inner {
    fn model_url(&self, base: &str, model: &str) -> String {
        format!(
            "{base}/v1/projects/{}/locations/{}/publishers/anthropic/models/{}",
            path_segment(&self.project),
            path_segment(&self.region),
            path_segment(model).replace("%40", "@"),
        )
    }
}

#[async_trait::async_trait]
impl Transport for Inner {
    fn map_model(&self, client_model: &str) -> String {
        self.models.map(client_model)
    }

    fn messages_url(&self, base: &str, model: &str, stream: bool) -> String {
        let op = if stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        format!("{}:{op}", self.model_url(base, model))
    }

    fn edit_body(&self, body: &Bytes, _model: &str, _beta: &[String]) -> Bytes {
        versioned_body(body, VERSION, None)
    }

    fn edit_headers(&self, headers: &mut HeaderMap) {
        for name in ["x-api-key", "authorization", "anthropic-version"] {
            headers.remove(name);
        }
    }

    async fn authorize(
        &self,
        _method: &str,
        _url: &str,
        headers: &mut HeaderMap,
        _body: &Bytes,
    ) -> Result<(), AuthError> {
        let Some(tokens) = &self.tokens else {
            return Err(AuthError(
                "aibridge: no Google credentials configured".to_owned(),
            ));
        };
        let token = tokens.token().await.map_err(|e| {
            tracing::warn!(error = %e, "Google access token unavailable");
            AuthError("aibridge: Google access token unavailable".to_owned())
        })?;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| AuthError("aibridge: Google access token unusable".to_owned()))?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
        Ok(())
    }

    fn models(&self) -> Vec<String> {
        self.models.models()
    }

    fn count_tokens(
        &self,
        base: &str,
        body: &Bytes,
        model: &str,
        _beta: &[String],
    ) -> Option<(String, Bytes)> {
        Some((
            format!("{}:rawPredict", self.model_url(base, "count-tokens")),
            versioned_body(body, VERSION, Some(model)),
        ))
    }

    fn hint(&self) -> String {
        self.kind.to_owned()
    }
}

/// The body with `model` removed (or set to `keep_model`) and `anthropic_version` added
/// when absent; every other member's bytes unchanged.
fn versioned_body(body: &Bytes, version: &str, keep_model: Option<&str>) -> Bytes {
    let Some(mut m) = Members::parse(body) else {
        return body.clone();
    };
    match keep_model {
        Some(model) => m.set("model", json_string(model)),
        None => {
            m.remove("model");
        }
    }
    if m.get("anthropic_version").is_none() {
        m.set("anthropic_version", json_string(version));
    }
    m.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_body_keeps_other_bytes() {
        let body = Bytes::from_static(br#"{"model":"m","max_tokens":1.50,"stream":true}"#);
        assert_eq!(
            &versioned_body(&body, "v", None)[..],
            br#"{"max_tokens":1.50,"stream":true,"anthropic_version":"v"}"#
        );
        let body = Bytes::from_static(br#"{"anthropic_version":"x","model":"m"}"#);
        assert_eq!(
            &versioned_body(&body, "v", Some("c@1"))[..],
            br#"{"anthropic_version":"x","model":"c@1"}"#
        );
    }
}

//! Google access tokens for Vertex AI: a service-account key (a JWT assertion signed with
//! its key, exchanged at its `token_uri`), the metadata server, or a host's own source;
//! cached until shortly before they expire.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::provider::Secret;

/// A token is renewed this long before it expires.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The OAuth scope of Vertex AI calls.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// An OAuth access token and when it expires.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// When it stops being valid.
    pub expires_at: SystemTime,
}

impl AccessToken {
    /// A token valid until `expires_at`.
    pub fn new(token: Secret, expires_at: SystemTime) -> Self {
        Self { token, expires_at }
    }
}

/// Why no token could be had. The message names the step, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

impl TokenError {
    /// An error with `message` (shown in logs; must not hold a secret).
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Where Vertex access tokens come from. The bridge caches what it returns until
/// shortly before `expires_at`, so a source may fetch a new token on every call.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A fresh token.
    ///
    /// # Errors
    ///
    /// [`TokenError`] when none can be had.
    async fn token(&self) -> Result<AccessToken, TokenError>;
}

/// A service-account key file's fields the bridge uses.
#[derive(Clone, serde::Deserialize)]
pub(crate) struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".to_owned()
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// A token source from a service-account key: an RS256 JWT assertion exchanged at the
/// key's `token_uri` (grant `jwt-bearer`).
pub(crate) struct ServiceAccount {
    key: ServiceAccountKey,
    signing: jsonwebtoken::EncodingKey,
    http: reqwest::Client,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    pub(crate) fn from_json(json: &str, http: reqwest::Client) -> Result<Self, TokenError> {
        let key: ServiceAccountKey = serde_json::from_str(json)
            .map_err(|e| TokenError::new(format!("invalid service-account key: {e}")))?;
        let signing =
            jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes()).map_err(|_| {
                TokenError::new("invalid service-account key: private_key is not an RSA PEM key")
            })?;
        Ok(Self { key, signing, http })
    }

    fn assertion(&self, now: u64) -> Result<String, TokenError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&self.key.private_key_id);
        let claims = Claims {
            iss: &self.key.client_email,
            scope: SCOPE,
            aud: &self.key.token_uri,
            iat: now,
            exp: now + 3600,
        };
        jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|e| TokenError::new(format!("service-account assertion: {e}")))
    }
}

#[async_trait::async_trait]
impl TokenSource for ServiceAccount {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let assertion = self.assertion(secs)?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let resp = self
            .http
            .post(&self.key.token_uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await;
        token_answer(resp, now, "token endpoint").await
    }
}

/// The metadata server's token of the default service account (GCE, GKE, Cloud Run).
#[derive(Debug)]
pub(crate) struct MetadataServer {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

#[async_trait::async_trait]
impl TokenSource for MetadataServer {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        let now = SystemTime::now();
        let url = format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            self.base.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(url)
            .header("metadata-flavor", "Google")
            .send()
            .await;
        token_answer(resp, now, "metadata server").await
    }
}

/// `{"access_token","expires_in"}` of a token endpoint.
async fn token_answer(
    resp: reqwest::Result<reqwest::Response>,
    asked_at: SystemTime,
    from: &str,
) -> Result<AccessToken, TokenError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let resp = resp.map_err(|_| TokenError::new(format!("{from} unreachable")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(TokenError::new(format!(
            "{from} answered {}",
            status.as_u16()
        )));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|_| TokenError::new(format!("{from}: answer unreadable")))?;
    let a: Answer = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::new(format!("{from}: answer without access_token")))?;
    Ok(AccessToken {
        token: Secret::new(a.access_token),
        expires_at: asked_at + Duration::from_secs(a.expires_in.unwrap_or(3600)),
    })
}

/// A source's tokens, cached until [`REFRESH_MARGIN`] before they expire; one refresh at
/// a time.
#[derive(Debug)]
pub(crate) struct Cached {
    source: Arc<dyn TokenSource>,
    current: tokio::sync::Mutex<Option<AccessToken>>,
}

impl Cached {
    pub(crate) fn new(source: Arc<dyn TokenSource>) -> Self {
        Self {
            source,
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) async fn token(&self) -> Result<Secret, TokenError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.as_ref()
            && SystemTime::now() + REFRESH_MARGIN < t.expires_at
        {
            return Ok(t.token.clone());
        }
        let fresh = self.source.token().await?;
        let token = fresh.token.clone();
        *current = Some(fresh);
        Ok(token)
    }
}

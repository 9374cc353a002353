//! The AWS Bedrock provider (cloud-anthropic.md "AWS Bedrock").

pub(crate) mod eventstream;
mod request;
mod sign;

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri, header};

use super::super::Secret;
use super::super::common::{Common, common_setters};
use super::super::credential::credential_hint;
use super::{AuthError, ModelMap, Transport, path_segment};

/// Claude through AWS Bedrock: an Anthropic Messages provider (name `bedrock`) whose calls
/// go to Bedrock's InvokeModel and InvokeModelWithResponseStream, SigV4-signed.
///
/// The base URL is `https://bedrock-runtime.{region}.amazonaws.com` unless
/// [`with_base_url`](Self::with_base_url) sets another (a proxy, a test server). Credentials
/// are static ([`with_static_credentials`](Self::with_static_credentials)) or any AWS SDK
/// credentials provider ([`with_credentials_provider`](Self::with_credentials_provider),
/// e.g. the default chain of `aws-config`). The [`ModelMap`] turns client models into
/// Bedrock model ids; the mapped id is the interception's model.
///
/// ```
/// use aibridge::provider::{Bedrock, ModelMap, Provider, Secret};
/// let p = Bedrock::new("us-east-1")
///     .with_static_credentials("AKIDEXAMPLE", Secret::new("secret"), None)
///     .with_models(ModelMap::new().with_pair(
///         "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
///         "us.anthropic.claude-haiku-4-5-20251001-v1:0",
///     ));
/// assert_eq!(p.route_prefix(), "/bedrock");
/// assert_eq!(p.base_url().to_string(), "https://bedrock-runtime.us-east-1.amazonaws.com/");
/// assert!(!format!("{p:?}").contains("secret"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Bedrock {
    common: Common,
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    region: String,
    credentials: Option<AwsCredentials>,
    models: ModelMap,
}

/// Where the signing credentials come from. `Debug` shows no secret.
#[derive(Clone)]
enum AwsCredentials {
    Static(Credentials),
    Provider(SharedCredentialsProvider),
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Static(***)"),
            Self::Provider(p) => f.debug_tuple("Provider").field(p).finish(),
        }
    }
}

fn region_url(region: &str) -> Uri {
    let host: String = region
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Uri::try_from(format!("https://bedrock-runtime.{host}.amazonaws.com"))
        .unwrap_or_else(|_| Uri::from_static("https://bedrock-runtime.amazonaws.com"))
}

impl Bedrock {
    /// A provider for `region` (also the signing region), without credentials.
    pub fn new(region: impl Into<String>) -> Self {
        let region = region.into();
        let mut common = Common::new(
            "bedrock",
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            None,
            super::super::CredentialPolicy::Centralized,
        );
        common.base_url = region_url(&region);
        Self {
            common,
            inner: Arc::new(Inner {
                region,
                credentials: None,
                models: ModelMap::new(),
            }),
        }
    }

    common_setters!();

    /// Static credentials: access key id, secret access key, optional session token
    /// (sent as `x-amz-security-token`).
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    ) -> Self {
        let creds = Credentials::new(
            access_key_id.into(),
            secret_access_key.expose().to_owned(),
            session_token.map(|t| t.expose().to_owned()),
            None,
            "aibridge",
        );
        Arc::make_mut(&mut self.inner).credentials = Some(AwsCredentials::Static(creds));
        self
    }

    /// Credentials from an AWS SDK credentials provider, asked before each call (it
    /// caches and refreshes them itself).
    pub fn with_credentials_provider(mut self, provider: SharedCredentialsProvider) -> Self {
        Arc::make_mut(&mut self.inner).credentials = Some(AwsCredentials::Provider(provider));
        self
    }

    /// The model mapping.
    pub fn with_models(mut self, models: ModelMap) -> Self {
        Arc::make_mut(&mut self.inner).models = models;
        self
    }
}

super::impl_cloud_provider!(Bedrock);

impl Inner {
    async fn credentials(&self) -> Result<Credentials, AuthError> {
        match &self.credentials {
            Some(AwsCredentials::Static(c)) => Ok(c.clone()),
            Some(AwsCredentials::Provider(p)) => p.provide_credentials().await.map_err(|e| {
                tracing::warn!(error = %e, "AWS credentials provider failed");
                AuthError("aibridge: AWS credentials unavailable".to_owned())
            }),
            None => Err(AuthError(
                "aibridge: no AWS credentials configured".to_owned(),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Transport for Inner {
    fn map_model(&self, client_model: &str) -> String {
        self.models.map(client_model)
    }

    fn messages_url(&self, base: &str, model: &str, stream: bool) -> String {
        let op = if stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        format!("{base}/model/{}/{op}", path_segment(model))
    }

    fn edit_body(&self, body: &Bytes, model: &str, beta: &[String]) -> Bytes {
        request::bedrock_body(body, model, beta)
    }

    fn edit_headers(&self, headers: &mut HeaderMap) {
        for name in [
            "x-api-key",
            "authorization",
            "anthropic-version",
            "anthropic-beta",
        ] {
            headers.remove(name);
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    }

    async fn authorize(
        &self,
        method: &str,
        url: &str,
        headers: &mut HeaderMap,
        body: &Bytes,
    ) -> Result<(), AuthError> {
        let creds = self.credentials().await?;
        let signed = sign::sign_request(
            &creds,
            &self.region,
            "bedrock",
            SystemTime::now(),
            method,
            url,
            headers,
            body,
        )
        .map_err(|e| {
            tracing::warn!(error = %e, "SigV4 signing failed");
            AuthError("aibridge: could not sign the AWS request".to_owned())
        })?;
        for (name, value) in signed {
            headers.insert(name, value);
        }
        Ok(())
    }

    fn event_stream(&self) -> bool {
        true
    }

    fn models(&self) -> Vec<String> {
        self.models.models()
    }

    fn count_tokens(
        &self,
        base: &str,
        body: &Bytes,
        model: &str,
        beta: &[String],
    ) -> Option<(String, Bytes)> {
        let invoke = request::bedrock_body(body, model, beta);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&invoke);
        let body = serde_json::json!({"input": {"invokeModel": {"body": encoded}}});
        Some((
            format!("{base}/model/{}/count-tokens", path_segment(model)),
            Bytes::from(body.to_string()),
        ))
    }

    fn count_tokens_answer(&self, body: Bytes) -> Bytes {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "inputTokens")]
            input_tokens: u64,
        }
        match serde_json::from_slice::<Answer>(&body) {
            Ok(a) => Bytes::from(format!(r#"{{"input_tokens":{}}}"#, a.input_tokens)),
            Err(_) => body,
        }
    }

    fn hint(&self) -> String {
        match &self.credentials {
            Some(AwsCredentials::Static(c)) => credential_hint(c.access_key_id()),
            Some(AwsCredentials::Provider(_)) => "aws-credentials-provider".to_owned(),
            None => String::new(),
        }
    }
}

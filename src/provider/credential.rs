//! Credentials: secrets, credential policies and the choice of the upstream credential.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::kind::ProviderKind;

/// A secret string. `Debug` and `Display` print `***`; it is never logged, recorded or
/// sent in errors.
///
/// ```
/// use aibridge::provider::Secret;
/// let s = Secret::new("sk-live-123");
/// assert_eq!(format!("{s:?} {s}"), "*** ***");
/// assert_eq!(s.expose(), "sk-live-123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value itself. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the upstream credential is chosen for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CredentialPolicy {
    /// The configured key, always; client credential headers are removed.
    #[default]
    Centralized,
    /// The client's own key if it sent one (BYOK), else the configured key, else 401.
    ClientFirst,
    /// The client's own key is required, else 401 (Copilot's only policy).
    ClientOnly,
}

/// Whose credential was used upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// The configured key.
    Centralized,
    /// The client's own key.
    Byok,
}

impl CredentialKind {
    /// `"centralized"` or `"byok"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Centralized => "centralized",
            Self::Byok => "byok",
        }
    }
}

/// The credential chosen for one request. `Debug` prints the kind and the masked hint only.
#[derive(Clone)]
pub struct Credential {
    kind: CredentialKind,
    header: HeaderName,
    value: HeaderValue,
    hint: String,
}

impl Credential {
    /// Whose credential it is.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }
    /// The masked secret (see the crate docs on credential hints).
    pub fn hint(&self) -> &str {
        &self.hint
    }
    /// The header that carries it upstream.
    pub(crate) fn header(&self) -> (&HeaderName, &HeaderValue) {
        (&self.header, &self.value)
    }

    /// The configured credentials of a cloud provider, which signs or authorizes each call
    /// itself: nothing is sent from here (the placeholder header is removed upstream).
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    pub(crate) fn cloud(hint: String) -> Self {
        Self {
            kind: CredentialKind::Centralized,
            header: HeaderName::from_static("x-api-key"),
            value: HeaderValue::from_static(""),
            hint,
        }
    }

    /// The configured key as this provider kind sends it.
    pub(crate) fn centralized(kind: ProviderKind, key: &Secret) -> Option<Self> {
        let (header, value) = match kind {
            ProviderKind::Anthropic => (
                HeaderName::from_static("x-api-key"),
                key.expose().to_owned(),
            ),
            ProviderKind::OpenAi | ProviderKind::Copilot | ProviderKind::Mcp => {
                (header::AUTHORIZATION, format!("Bearer {}", key.expose()))
            }
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some(Self {
            kind: CredentialKind::Centralized,
            header,
            value,
            hint: credential_hint(key.expose()),
        })
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("hint", &self.hint)
            .finish()
    }
}

/// Why no credential could be chosen. The message is shown in the 401 body.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The policy needs a client credential and none was sent.
    #[error("aibridge: this provider requires {expected}")]
    Missing {
        /// What was expected, e.g. `your own token in the Authorization header (Bearer)`.
        expected: &'static str,
    },
}

const ANTHROPIC_EXPECTED: &str = "your own API key (x-api-key or Authorization: Bearer)";
const BEARER_EXPECTED: &str = "your own token in the Authorization header (Bearer)";

/// The bearer token of an `Authorization` value: trimmed, exactly two whitespace-separated
/// fields, the first `bearer` in any case.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let mut parts = value.split_ascii_whitespace();
    let scheme = parts.next()?;
    let token = parts.next()?;
    if parts.next().is_some() || !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token)
}

/// The masked hint of a secret (routing.md "Credential hint").
pub(crate) fn credential_hint(secret: &str) -> String {
    let n = secret.chars().count();
    let reveal = match n {
        20.. => 4,
        10.. => 2,
        5.. => 1,
        _ => 0,
    };
    if n == 0 {
        return String::new();
    }
    if n <= 2 * reveal || reveal == 0 {
        return "...".to_owned();
    }
    let head: String = secret.chars().take(reveal).collect();
    let tail: String = secret.chars().skip(n - reveal).collect();
    format!("{head}...{tail}")
}

/// The client's own credential, per provider kind.
fn client_credential(kind: ProviderKind, headers: &HeaderMap) -> Option<Credential> {
    if kind == ProviderKind::Anthropic
        && let Some(v) = headers.get("x-api-key")
        && let Ok(s) = v.to_str()
        && !s.is_empty()
    {
        return Some(Credential {
            kind: CredentialKind::Byok,
            header: HeaderName::from_static("x-api-key"),
            value: v.clone(),
            hint: credential_hint(s),
        });
    }
    let v = headers.get(header::AUTHORIZATION)?;
    let token = bearer_token(v.to_str().ok()?)?;
    Some(Credential {
        kind: CredentialKind::Byok,
        header: header::AUTHORIZATION,
        value: v.clone(),
        hint: credential_hint(token),
    })
}

/// Chooses the upstream credential (routing.md "Credentials").
///
/// # Errors
///
/// [`CredentialError::Missing`] when the policy needs a client credential that is absent.
pub(crate) fn select_credential(
    kind: ProviderKind,
    policy: CredentialPolicy,
    key: Option<&Secret>,
    headers: &HeaderMap,
) -> Result<Credential, CredentialError> {
    let expected = match kind {
        ProviderKind::Anthropic => ANTHROPIC_EXPECTED,
        ProviderKind::OpenAi | ProviderKind::Copilot | ProviderKind::Mcp => BEARER_EXPECTED,
    };
    let missing = CredentialError::Missing { expected };
    let configured = || key.and_then(|k| Credential::centralized(kind, k));
    match policy {
        CredentialPolicy::Centralized => configured().ok_or(missing),
        CredentialPolicy::ClientFirst => client_credential(kind, headers)
            .or_else(configured)
            .ok_or(missing),
        CredentialPolicy::ClientOnly => client_credential(kind, headers).ok_or(missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_the_spec_table() {
        for (secret, hint) in [
            ("sk-ant-api03-abcdefgh", "sk-a...efgh"),
            ("user-access-token", "us...en"),
            ("test-key", "t...y"),
            ("short", "s...t"),
            ("abcd", "..."),
            ("hélloworld🌍!", "hé...🌍!"),
            ("", ""),
        ] {
            assert_eq!(credential_hint(secret), hint, "{secret}");
        }
    }

    #[test]
    fn bearer_parsing_is_strict() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("  bearer   abc  "), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        for bad in ["Basic x", "Bearer", "Bearer a b", "token", ""] {
            assert_eq!(bearer_token(bad), None, "{bad}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn anthropic_prefers_x_api_key_over_bearer() {
        let h = headers(&[
            ("x-api-key", "client-key-123456"),
            ("authorization", "Bearer other-token"),
        ]);
        let c = select_credential(
            ProviderKind::Anthropic,
            CredentialPolicy::ClientFirst,
            None,
            &h,
        )
        .unwrap();
        assert_eq!(c.kind(), CredentialKind::Byok);
        assert_eq!(c.header().0, "x-api-key");
        assert_eq!(c.hint(), "cl...56");
    }

    #[test]
    fn openai_ignores_client_x_api_key() {
        let h = headers(&[("x-api-key", "client-key")]);
        let err = select_credential(ProviderKind::OpenAi, CredentialPolicy::ClientOnly, None, &h)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "aibridge: this provider requires your own token in the Authorization header (Bearer)"
        );
    }

    #[test]
    fn policies_choose_per_the_table() {
        let key = Secret::new("sk-central-key-0123456789");
        let with_client = headers(&[("authorization", "Bearer client-token-xyz")]);
        let none = HeaderMap::new();
        let k = ProviderKind::OpenAi;
        let c =
            select_credential(k, CredentialPolicy::Centralized, Some(&key), &with_client).unwrap();
        assert_eq!(c.kind(), CredentialKind::Centralized);
        assert_eq!(c.header().1, "Bearer sk-central-key-0123456789");
        let c =
            select_credential(k, CredentialPolicy::ClientFirst, Some(&key), &with_client).unwrap();
        assert_eq!(c.kind(), CredentialKind::Byok);
        assert_eq!(c.header().1, "Bearer client-token-xyz");
        let c = select_credential(k, CredentialPolicy::ClientFirst, Some(&key), &none).unwrap();
        assert_eq!(c.kind(), CredentialKind::Centralized);
        assert!(select_credential(k, CredentialPolicy::ClientFirst, None, &none).is_err());
        assert!(select_credential(k, CredentialPolicy::ClientOnly, Some(&key), &none).is_err());
        let c = select_credential(
            ProviderKind::Anthropic,
            CredentialPolicy::Centralized,
            Some(&key),
            &none,
        )
        .unwrap();
        assert_eq!(c.header().0, "x-api-key");
        assert_eq!(c.header().1, "sk-central-key-0123456789");
        assert!(!format!("{c:?}").contains("central-key-01"));
    }
}

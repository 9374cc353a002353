//! SigV4 signing of a Bedrock call with `aws-sigv4` (service `bedrock`): over the exact
//! bytes sent, a session token in `x-amz-security-token`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Signs `method url` with `headers` and `body`; returns the headers to add
/// (`authorization`, `x-amz-date`, `x-amz-security-token`), marked sensitive.
#[expect(
    clippy::too_many_arguments,
    reason = "the signer's inputs, each one plain"
)]
pub(crate) fn sign_request(
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    method: &str,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signed: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| signed_header(n))
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let request = SignableRequest::new(method, url, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| format!("signing: {e}"))?;
    // `aws-sigv4` traces the canonical request, whose headers hold the session token, and
    // the signing parameters, which name the access key id: none of it may reach the
    // host's logs, so the signer runs without a subscriber.
    let signed =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::new(), || {
            sign(request, &params)
        });
    let (instructions, _) = signed.map_err(|e| format!("signing: {e}"))?.into_parts();
    let mut out = Vec::new();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let mut value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

/// The headers covered by the signature: the ones AWS needs and that no hop rewrites
/// (`host` is taken from the URL by the signer).
fn signed_header(name: &HeaderName) -> bool {
    matches!(name.as_str(), "content-type" | "accept") || name.as_str().starts_with("x-amz-")
}

#[cfg(test)]
mod tests {
    //! Vectors of the AWS SigV4 test suite (`post-vanilla`, `get-vanilla-with-session-token`,
    //! `post-header-key-sort`): credentials `AKIDEXAMPLE`, 2015-08-30T12:36:00Z,
    //! `us-east-1`, service `service`.
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn authorization(out: &[(HeaderName, HeaderValue)]) -> String {
        out.iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.to_str().unwrap().to_owned())
            .unwrap()
    }

    #[test]
    fn post_vanilla() {
        let creds = Credentials::new("AKIDEXAMPLE", SECRET, None, None, "test");
        let out = sign_request(
            &creds,
            "us-east-1",
            "service",
            time(),
            "POST",
            "https://example.amazonaws.com/",
            &HeaderMap::new(),
            b"",
        )
        .unwrap();
        assert_eq!(
            authorization(&out),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        let date = out.iter().find(|(n, _)| n == "x-amz-date").unwrap();
        assert_eq!(date.1, "20150830T123600Z");
    }

    #[test]
    fn get_vanilla_with_session_token() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let creds = Credentials::new("AKIDEXAMPLE", SECRET, Some(token.to_owned()), None, "t");
        let out = sign_request(
            &creds,
            "us-east-1",
            "service",
            time(),
            "GET",
            "https://example.amazonaws.com/",
            &HeaderMap::new(),
            b"",
        )
        .unwrap();
        assert_eq!(
            authorization(&out),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        );
        let tok = out
            .iter()
            .find(|(n, _)| n == "x-amz-security-token")
            .unwrap();
        assert_eq!(tok.1, token);
        assert!(tok.1.is_sensitive());
    }
}

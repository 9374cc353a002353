//! The cloud providers of the gateway: `bedrock` (when `AIBRIDGE_BEDROCK_REGION` or
//! `AIBRIDGE_BEDROCK_BASE_URL` is set) and `vertex` (when `AIBRIDGE_VERTEX_PROJECT` is
//! set), mounted next to `anthropic` at `/api/v2/aibridge/bedrock` and
//! `/api/v2/aibridge/vertex`. Each needs its cargo feature (`bedrock`, `vertex`).

use std::fmt;

/// The reference's default pair.
const DEFAULT_MODEL: &str = "global.anthropic.claude-sonnet-4-5-20250929-v1:0";
const DEFAULT_SMALL_FAST_MODEL: &str = "global.anthropic.claude-haiku-4-5-20251001-v1:0";

/// `AIBRIDGE_BEDROCK_*` and the standard AWS variables.
#[cfg_attr(
    not(feature = "bedrock"),
    allow(dead_code, reason = "read when the bedrock feature is on")
)]
pub(crate) struct BedrockEnv {
    pub(crate) region: String,
    pub(crate) base_url: Option<http::Uri>,
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
    pub(crate) model: String,
    pub(crate) small_fast_model: String,
    pub(crate) model_map: Option<String>,
}

impl fmt::Debug for BedrockEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockEnv")
            .field("region", &self.region)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("small_fast_model", &self.small_fast_model)
            .field("model_map", &self.model_map)
            .finish_non_exhaustive()
    }
}

/// `AIBRIDGE_VERTEX_*` and `GOOGLE_APPLICATION_CREDENTIALS`.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "vertex"),
    allow(dead_code, reason = "read when the vertex feature is on")
)]
pub(crate) struct VertexEnv {
    pub(crate) project: String,
    pub(crate) region: String,
    pub(crate) base_url: Option<http::Uri>,
    /// A service-account key file; `None`: the metadata server.
    pub(crate) credentials_file: Option<String>,
    pub(crate) model_map: Option<String>,
}

/// The cloud providers' settings, read from `get` (unset or empty = `None`).
pub(crate) fn from_lookup(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<BedrockEnv>, Option<VertexEnv>), String> {
    let uri = |name: &str| -> Result<Option<http::Uri>, String> {
        get(name)
            .map(|v| {
                v.parse()
                    .map_err(|e| format!("{name}: invalid URL {v:?}: {e}"))
            })
            .transpose()
    };
    let bedrock = if get("AIBRIDGE_BEDROCK_REGION").is_some()
        || get("AIBRIDGE_BEDROCK_BASE_URL").is_some()
    {
        let (Some(access_key_id), Some(secret_access_key)) =
            (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(
                "bedrock: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are both required".to_owned(),
            );
        };
        let model_map = get("AIBRIDGE_BEDROCK_MODEL_MAP");
        check_map("AIBRIDGE_BEDROCK_MODEL_MAP", model_map.as_deref())?;
        Some(BedrockEnv {
            region: get("AIBRIDGE_BEDROCK_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
            base_url: uri("AIBRIDGE_BEDROCK_BASE_URL")?,
            access_key_id,
            secret_access_key,
            session_token: get("AWS_SESSION_TOKEN"),
            model: get("AIBRIDGE_BEDROCK_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            small_fast_model: get("AIBRIDGE_BEDROCK_SMALL_FAST_MODEL")
                .unwrap_or_else(|| DEFAULT_SMALL_FAST_MODEL.to_owned()),
            model_map,
        })
    } else {
        None
    };
    let vertex = match get("AIBRIDGE_VERTEX_PROJECT") {
        Some(project) => {
            let model_map = get("AIBRIDGE_VERTEX_MODEL_MAP");
            check_map("AIBRIDGE_VERTEX_MODEL_MAP", model_map.as_deref())?;
            Some(VertexEnv {
                project,
                region: get("AIBRIDGE_VERTEX_REGION").unwrap_or_else(|| "global".to_owned()),
                base_url: uri("AIBRIDGE_VERTEX_BASE_URL")?,
                credentials_file: get("GOOGLE_APPLICATION_CREDENTIALS"),
                model_map,
            })
        }
        None => None,
    };
    Ok((bedrock, vertex))
}

/// `client-glob=cloud-model,…` (checked here so a typo stops the gateway at start).
fn check_map(name: &str, text: Option<&str>) -> Result<(), String> {
    let Some(text) = text else { return Ok(()) };
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((g, m)) if !g.trim().is_empty() && !m.trim().is_empty() => {}
            _ => return Err(format!("{name}: {entry:?} is not client-glob=model")),
        }
    }
    Ok(())
}

/// Adds the configured cloud providers to `builder`.
pub(crate) fn add(
    mut builder: aibridge::bridge::Builder,
    bedrock: Option<&BedrockEnv>,
    vertex: Option<&VertexEnv>,
) -> Result<aibridge::bridge::Builder, String> {
    if let Some(b) = bedrock {
        builder = add_bedrock(builder, b)?;
    }
    if let Some(v) = vertex {
        builder = add_vertex(builder, v)?;
    }
    Ok(builder)
}

#[cfg(feature = "bedrock")]
fn add_bedrock(
    builder: aibridge::bridge::Builder,
    b: &BedrockEnv,
) -> Result<aibridge::bridge::Builder, String> {
    use aibridge::provider::{Bedrock, ModelMap, Secret};
    let mut models = match &b.model_map {
        Some(text) => ModelMap::parse(text).map_err(|e| e.to_string())?,
        None => ModelMap::new(),
    };
    models = models.with_pair(b.model.clone(), b.small_fast_model.clone());
    let mut p = Bedrock::new(b.region.clone())
        .with_static_credentials(
            b.access_key_id.clone(),
            Secret::new(b.secret_access_key.clone()),
            b.session_token.clone().map(Secret::new),
        )
        .with_models(models);
    if let Some(url) = &b.base_url {
        p = p.with_base_url(url.clone());
    }
    tracing::info!(region = %b.region, model = %b.model, small_fast_model = %b.small_fast_model, "bedrock provider");
    Ok(builder.provider(p))
}

#[cfg(not(feature = "bedrock"))]
fn add_bedrock(
    _: aibridge::bridge::Builder,
    _: &BedrockEnv,
) -> Result<aibridge::bridge::Builder, String> {
    Err("AIBRIDGE_BEDROCK_*: the gateway was built without the bedrock feature".to_owned())
}

#[cfg(feature = "vertex")]
fn add_vertex(
    builder: aibridge::bridge::Builder,
    v: &VertexEnv,
) -> Result<aibridge::bridge::Builder, String> {
    use aibridge::provider::{ModelMap, Vertex};
    let models = match &v.model_map {
        Some(text) => ModelMap::parse(text).map_err(|e| e.to_string())?,
        None => ModelMap::new(),
    };
    let mut p = Vertex::new(v.project.clone(), v.region.clone()).with_models(models);
    p = match &v.credentials_file {
        Some(path) => p
            .with_service_account_file(path)
            .map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS: {e}"))?,
        None => p.with_metadata_server(),
    };
    if let Some(url) = &v.base_url {
        p = p.with_base_url(url.clone());
    }
    tracing::info!(project = %v.project, region = %v.region, "vertex provider");
    Ok(builder.provider(p))
}

#[cfg(not(feature = "vertex"))]
fn add_vertex(
    _: aibridge::bridge::Builder,
    _: &VertexEnv,
) -> Result<aibridge::bridge::Builder, String> {
    Err("AIBRIDGE_VERTEX_*: the gateway was built without the vertex feature".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        }
    }

    #[test]
    fn cloud_variables() {
        let (b, v) = from_lookup(&lookup(&[])).unwrap();
        assert!(b.is_none() && v.is_none());
        let (b, v) = from_lookup(&lookup(&[
            ("AIBRIDGE_BEDROCK_BASE_URL", "http://127.0.0.1:1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "gateway-secret-key"),
            ("AWS_SESSION_TOKEN", "tok"),
            (
                "AIBRIDGE_BEDROCK_MODEL_MAP",
                "claude-opus-*=us.anthropic.opus",
            ),
            ("AIBRIDGE_VERTEX_PROJECT", "proj"),
        ]))
        .unwrap();
        let b = b.unwrap();
        assert_eq!(b.region, "us-east-1");
        assert_eq!(b.model, DEFAULT_MODEL);
        assert_eq!(b.session_token.as_deref(), Some("tok"));
        assert!(!format!("{b:?}").contains("gateway-secret-key"));
        let v = v.unwrap();
        assert_eq!(v.region, "global");
        assert!(v.credentials_file.is_none());
        assert!(
            from_lookup(&lookup(&[
                ("AIBRIDGE_BEDROCK_REGION", "us-west-2"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ]))
            .is_err()
        );
        assert!(
            from_lookup(&lookup(&[
                ("AIBRIDGE_VERTEX_PROJECT", "p"),
                ("AIBRIDGE_VERTEX_MODEL_MAP", "oops"),
            ]))
            .is_err()
        );
    }
}

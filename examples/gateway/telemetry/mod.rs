//! Logging and, with feature `otel`, the OpenTelemetry trace export.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`). When
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the
//! library's spans (target `aibridge`, level info and above, whatever `RUST_LOG` says) are
//! exported over OTLP/HTTP (protobuf) by a batch exporter, flushed on graceful shutdown
//! (`export` module); the incoming W3C `traceparent` of each request becomes the parent of
//! its `aibridge.interception` span. Neither set: no exporter and no OpenTelemetry layer.

#[cfg(feature = "otel")]
mod export;

use std::time::Duration;

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The OTLP path the general endpoint gets for traces (OTLP/HTTP specification).
const TRACES_PATH: &str = "/v1/traces";
/// `OTEL_SERVICE_NAME` when unset.
const DEFAULT_SERVICE_NAME: &str = "aibridge";
/// `OTEL_EXPORTER_OTLP_TIMEOUT` when unset (the specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as what the spans are exported: the `OTEL_*` variables, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OtlpTarget {
    /// The full traces URL (`…/v1/traces`).
    pub(crate) endpoint: String,
    /// The `service.name` resource attribute.
    pub(crate) service_name: String,
    /// The bound on one export request, response included.
    pub(crate) timeout: Duration,
}

impl OtlpTarget {
    /// Reads the standard variables through `get` (an empty value counts as unset):
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as is, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` gets `/v1/traces` appended; neither ⇒ `None` (no export).
    pub(crate) fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let (var, endpoint) = if let Some(v) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v.trim().to_owned())
        } else if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let base = v.trim().trim_end_matches('/');
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{base}{TRACES_PATH}"),
            )
        } else {
            return Ok(None);
        };
        match endpoint.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            _ => return Err(format!("{var}: not an http(s) URL: {endpoint}")),
        }
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", v))
            .or_else(|| {
                get("OTEL_EXPORTER_OTLP_TIMEOUT").map(|v| ("OTEL_EXPORTER_OTLP_TIMEOUT", v))
            }) {
            None => DEFAULT_TIMEOUT,
            Some((var, v)) => match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "{var}: a positive number of milliseconds, got {v:?}"
                    ));
                }
            },
        };
        Ok(Some(Self {
            endpoint,
            service_name: get("OTEL_SERVICE_NAME")
                .map_or_else(|| DEFAULT_SERVICE_NAME.to_owned(), |v| v.trim().to_owned()),
            timeout,
        }))
    }
}

impl OtlpTarget {
    /// The endpoint for the log: scheme, host, port and path, without any user
    /// information or query (either may carry a credential).
    fn shown_endpoint(&self) -> String {
        match self.endpoint.parse::<http::Uri>() {
            Ok(u) => format!(
                "{}://{}{}{}",
                u.scheme_str().unwrap_or_default(),
                u.host().unwrap_or_default(),
                u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                u.path()
            ),
            Err(_) => String::new(),
        }
    }
}

/// What [`init`] started: the trace exporter, if any, to flush on shutdown.
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    export: Option<export::Export>,
}

impl Telemetry {
    /// The application with the incoming `traceparent` as the OpenTelemetry parent of each
    /// request's spans, when exporting; unchanged otherwise.
    pub(crate) fn wrap(&self, app: axum::Router) -> axum::Router {
        #[cfg(feature = "otel")]
        if self.export.is_some() {
            return app.layer(axum::middleware::from_fn(export::parent_from_traceparent));
        }
        app
    }

    /// Exports the spans still queued and stops the exporter (bounded by the export
    /// timeout); nothing without an exporter.
    pub(crate) async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(e) = self.export {
            e.shutdown().await;
        }
    }
}

/// Installs the global subscriber: the stderr log (`RUST_LOG`) and, when an OTLP endpoint
/// is configured (and the gateway is built with feature `otel`), the span exporter. Must
/// run inside the Tokio runtime (the exporter sends on it).
pub(crate) fn init(get: &dyn Fn(&str) -> Option<String>) -> Result<Telemetry, String> {
    let filter = get("RUST_LOG")
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let target = OtlpTarget::from_lookup(get)?;
    let registry = tracing_subscriber::registry().with(log);
    #[cfg(feature = "otel")]
    {
        let (layer, export) = match &target {
            None => (None, None),
            Some(t) => {
                let (layer, export) = export::start(t)?;
                (Some(layer), Some(export))
            }
        };
        registry.with(layer).init();
        if let Some(t) = &target {
            tracing::info!(endpoint = %t.shown_endpoint(), service_name = %t.service_name, "exporting traces over OTLP/HTTP");
        }
        Ok(Telemetry { export })
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.init();
        if let Some(t) = &target {
            tracing::warn!(
                endpoint = %t.shown_endpoint(),
                "an OTLP endpoint is set but this gateway is built without feature `otel`: no traces are exported"
            );
        }
        Ok(Telemetry {})
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::OtlpTarget;

    fn target(vars: &[(&str, &str)]) -> Result<Option<OtlpTarget>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpTarget::from_lookup(&|k| vars.get(k).cloned())
    }

    #[test]
    fn no_endpoint_no_export() {
        assert_eq!(target(&[]), Ok(None));
        assert_eq!(
            target(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
                ("OTEL_SERVICE_NAME", "x"),
            ]),
            Ok(None)
        );
    }

    #[test]
    fn the_general_endpoint_gets_the_traces_path() {
        for base in ["http://collector:4318", "http://collector:4318/"] {
            let t = target(&[("OTEL_EXPORTER_OTLP_ENDPOINT", base)])
                .unwrap()
                .unwrap();
            assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
            assert_eq!(t.service_name, "aibridge");
            assert_eq!(t.timeout, Duration::from_secs(10));
        }
        let t = target(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example/otlp")])
            .unwrap()
            .unwrap();
        assert_eq!(t.endpoint, "https://otlp.example/otlp/v1/traces");
    }

    #[test]
    fn the_traces_endpoint_is_used_as_is_and_wins() {
        let t = target(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://tempo:4318/custom",
            ),
            ("OTEL_SERVICE_NAME", "gateway-eu"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(t.endpoint, "http://tempo:4318/custom");
        assert_eq!(t.service_name, "gateway-eu");
        assert_eq!(t.timeout, Duration::from_millis(2500));
        let t = target(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(t.timeout, Duration::from_millis(700));
    }

    #[test]
    fn the_logged_endpoint_has_no_credentials() {
        let t = target(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://user:s3cret@otlp.example:4318/v1/traces?api_key=s3cret",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(t.shown_endpoint(), "https://otlp.example:4318/v1/traces");
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let e = target(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        let e = target(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c/v1/traces")]).unwrap_err();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "{e}");
        let e = target(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ])
        .unwrap_err();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TIMEOUT"), "{e}");
    }
}

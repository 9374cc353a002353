//! The gateway's HTTP surface: the bridge behind the token middleware, `/healthz`,
//! `/metrics` and `/usage`.

use std::collections::HashMap;
use std::sync::Arc;

use aibridge::RequestBridge;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::{actor_for, auth, authenticate, basic_password, has_bearer, unauthorized};
use crate::policy::GatewayPolicy;
use crate::usage;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) tokens: Option<Arc<HashMap<String, String>>>,
    /// The bearer token `/metrics` requires (`None`: open).
    pub(crate) metrics_token: Option<Arc<str>>,
    pub(crate) registry: prometheus::Registry,
    /// The usage report's read-only pool, or why there is none.
    pub(crate) report: Result<Arc<usage::ReportDb>, Arc<str>>,
    /// The policy of `AIBRIDGE_POLICY`, for the budgets on the usage page.
    pub(crate) policy: Option<Arc<GatewayPolicy>>,
}

/// The whole application: the bridge under `/api/v2/aibridge`, its MCP endpoint for
/// editors at `/api/v2/aibridge/mcp` (with MCP servers configured and feature
/// `mcp-server`), both behind the token middleware, and the gateway's own pages.
pub(crate) fn app(bridge: RequestBridge, state: AppState) -> axum::Router {
    let bridged = axum::Router::new();
    #[cfg(feature = "mcp-server")]
    let bridged = match bridge.mcp_endpoint() {
        Some(endpoint) => bridged.route_service("/api/v2/aibridge/mcp", endpoint),
        None => bridged,
    };
    let bridged = bridged
        .nest_service("/api/v2/aibridge", bridge)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/usage", get(usage_page))
        .merge(bridged)
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

/// `GET /metrics`: the registry in the Prometheus text format. With
/// `AIBRIDGE_METRICS_TOKEN` set, only for `Authorization: Bearer <that token>` (the series
/// carry actor ids); 401 otherwise.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token
        && !has_bearer(&headers, token)
    {
        return unauthorized("/metrics");
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&state.registry.gather())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /usage`: the usage report page.
///
/// Local mode: open, like everything else. Token mode: the caller must present a
/// configured gateway token, as `x-api-key`, `Authorization: Bearer`, or, for browsers,
/// HTTP Basic authentication with the token as the password (any user name); a failed
/// check answers 401 with a `Basic` challenge, so a browser asks for it. A token in the
/// URL is deliberately not accepted (it would end up in history, logs and `Referer`).
/// Every valid token sees the whole report (all users), so hand out gateway tokens only
/// to people who may see the team's usage.
async fn usage_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(tokens) = &state.tokens {
        let ok = authenticate(tokens, &headers).is_some()
            || basic_password(&headers).is_some_and(|p| actor_for(tokens, &p).is_some());
        if !ok {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "unauthorized\n",
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="aibridge usage", charset="UTF-8""#),
            );
            return resp;
        }
    }
    let days = match usage::parse_days(query.as_deref()) {
        Ok(d) => d,
        Err(msg) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                msg,
            )
                .into_response();
        }
    };
    let (status, body) = match &state.report {
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            usage::error_page(days, &format!("The usage report is not available: {why}.")),
        ),
        Ok(db) => match usage::Report::load(db, days, std::time::SystemTime::now()).await {
            Ok(report) => (
                StatusCode::OK,
                report
                    .with_budgets(state.policy.as_deref().and_then(GatewayPolicy::budget_rows))
                    .render(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "usage report: query failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    usage::error_page(
                        days,
                        "The usage report could not be loaded from the database; the gateway log has the details.",
                    ),
                )
            }
        },
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found",
    )
}

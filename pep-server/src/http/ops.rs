//! Operations endpoints: health check, metrics, and the API documentation.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::{AppState, OPENAPI_YAML};

/// The documentation page: self-contained (no CDN — the factory LAN has no internet); its script
/// fetches `/docs/openapi.yaml` and renders paths, parameters and responses.
const DOCS_HTML: &str = include_str!("docs.html");

/// `GET /healthz` (no authentication): 200 when the store answers, 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.provisioner.store().stats().await {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "the store does not answer" })),
            )
                .into_response()
        }
    }
}

/// `GET /metrics` (`read` role): Prometheus text exposition, plus gauges of the store's rows.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    match state.provisioner.store().stats().await {
        Ok(stats) => {
            text.push_str(
                "# HELP pep_store_identities Identities in the store by state.\n\
                 # TYPE pep_store_identities gauge\n",
            );
            text.push_str(&format!(
                "pep_store_identities{{state=\"deployed\"}} {}\n\
                 pep_store_identities{{state=\"failed\"}} {}\n\
                 pep_store_identities{{state=\"in_flight\"}} {}\n",
                stats.deployed, stats.failed, stats.in_flight
            ));
        }
        Err(e) => tracing::warn!(error = %e, "metrics: the store does not answer"),
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// `GET /docs/openapi.yaml`: the OpenAPI 3.1 description of every route.
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        )],
        OPENAPI_YAML,
    )
        .into_response()
}

/// `GET /docs/`: the documentation page. Its content security policy allows nothing but its own
/// inline script and style and fetching from this server, so it cannot load anything from outside.
pub async fn docs_page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        DOCS_HTML,
    )
        .into_response()
}

/// `GET /docs` → `/docs/` (relative links on the page need the trailing slash).
pub async fn docs_redirect() -> Redirect {
    Redirect::permanent("/docs/")
}

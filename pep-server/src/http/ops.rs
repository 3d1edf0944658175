//! Operations endpoints: health check, metrics, and the API documentation.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::openapi::{OPENAPI_JSON, OPENAPI_YAML};
use super::read::typed;
use super::{ApiError, AppState};

/// The documentation page: Swagger UI's stylesheet and scripts, served by [`docs_asset`] from the
/// copy compiled into the binary (no CDN — the factory LAN has no internet), reading
/// `openapi.json`. Our own page rather than Swagger UI's `index.html`: our title, and our
/// stylesheet after Swagger UI's.
const DOCS_HTML: &str = include_str!("docs.html");

/// The page's own stylesheet, after Swagger UI's.
const DOCS_CSS: &str = include_str!("docs.css");

/// Swagger UI's settings (written into its `swagger-initializer.js`): the document next to the
/// page, and no online validator (its badge would fetch from validator.swagger.io).
static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        utoipa_swagger_ui::Config::new(["openapi.json"])
            .validator_url("none")
            .display_operation_id(true),
    )
});

/// The content security policy of the documentation: nothing but this server's own scripts,
/// styles, images and document. Swagger UI sets inline styles and draws icons from `data:` URLs.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /healthz` (no authentication): 200 when the store answers, 503 otherwise. `ca` says
/// whether the CA key can sign: a token that is away makes the server `degraded` (still 200:
/// restarting would not bring the token back, and the server resumes by itself when it does).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Health check",
    description = "No authentication. 200 when the database answers; `ca` is `available` or \
        `unavailable` (the CA key's PKCS#11 token is away: provisioning answers 503 until it is \
        back, and `status` is then `degraded`).",
    security(()),
    responses(
        (status = 200, description = "Healthy.", body = inline(Object), content_type = "application/json",
            example = json!({ "status": "ok", "ca": "available" })),
        (status = 503, description = "The database does not answer.", body = inline(Object),
            content_type = "application/json",
            example = json!({ "status": "unavailable", "error": "the store does not answer" })),
    ),
)]
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    match state.provisioner.store().stats().await {
        Ok(_) if state.provisioner.ca_available().await => {
            Json(json!({ "status": "ok", "ca": "available" })).into_response()
        }
        Ok(_) => Json(json!({
            "status": "degraded",
            "ca": "unavailable",
            "error": format!(
                "the CA key is unavailable ({}): provisioning answers 503 until the token is back",
                state.provisioner.ca_key_location()
            ),
        }))
        .into_response(),
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
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Text exposition format 0.0.4: pep_provisions_total{result}, \
        pep_provision_duration_seconds (histogram), pep_fcc_status_total{code,status}, \
        pep_provisions_in_flight, pep_store_identities{state} (deployed, failed, in_flight, \
        in_doubt: identities an operator must resolve, revoked), pep_ca_available (0 while the CA key's \
        token is away), pep_hook_deliveries{state} (the webhook outbox: pending, delivered, \
        failing, dead). Needs the read role (the counts \
        describe production).",
    responses(
        (status = 200, description = "The metrics.", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        super::openapi::AuthErrors,
    ),
)]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&format!(
        "# HELP pep_ca_available 1 when the CA key can sign, 0 while its PKCS#11 token is away.\n\
         # TYPE pep_ca_available gauge\n\
         pep_ca_available {}\n",
        u8::from(state.provisioner.ca_available().await)
    ));
    match state.provisioner.store().stats().await {
        Ok(stats) => {
            text.push_str(
                "# HELP pep_store_identities Identities in the store by state.\n\
                 # TYPE pep_store_identities gauge\n",
            );
            text.push_str(&format!(
                "pep_store_identities{{state=\"deployed\"}} {}\n\
                 pep_store_identities{{state=\"failed\"}} {}\n\
                 pep_store_identities{{state=\"in_flight\"}} {}\n\
                 pep_store_identities{{state=\"in_doubt\"}} {}\n\
                 pep_store_identities{{state=\"revoked\"}} {}\n",
                stats.deployed, stats.failed, stats.in_flight, stats.in_doubt, stats.revoked
            ));
        }
        Err(e) => tracing::warn!(error = %e, "metrics: the store does not answer"),
    }
    match state.provisioner.store().delivery_counts().await {
        Ok(counts) => crate::metrics::render_hook_deliveries(&counts, &mut text),
        Err(e) => tracing::warn!(error = %e, "metrics: the webhook outbox does not answer"),
    }
    match state.provisioner.store().claim_stats().await {
        Ok(stats) => text.push_str(&crate::metrics::render_claims(&stats)),
        Err(e) => tracing::warn!(error = %e, "metrics: the claim outbox does not answer"),
    }
    typed("text/plain; version=0.0.4; charset=utf-8", text)
}

/// `GET /docs/openapi.json`: the OpenAPI 3.1 description of every route.
#[utoipa::path(
    get,
    path = "/docs/openapi.json",
    tag = "operations",
    operation_id = "openapiJson",
    summary = "This document (JSON)",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1, JSON.", body = inline(Object),
        content_type = "application/json")),
)]
pub(super) async fn openapi_json() -> Response {
    typed("application/json", OPENAPI_JSON.as_str())
}

/// `GET /docs/openapi.yaml`: the same document as YAML (the address of the former hand-kept
/// file, which users may have bookmarked).
#[utoipa::path(
    get,
    path = "/docs/openapi.yaml",
    tag = "operations",
    operation_id = "openapi",
    summary = "This document (YAML)",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1, YAML.", body = String,
        content_type = "application/yaml")),
)]
pub(super) async fn openapi_yaml() -> Response {
    typed("application/yaml", OPENAPI_YAML.as_str())
}

/// The headers of every documentation response.
fn docs_headers(content_type: &str) -> [(header::HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ]
}

/// `GET /docs/`: the documentation page. Its content security policy allows nothing but this
/// server's own files, so it cannot load anything from outside.
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "operations",
    operation_id = "docsPage",
    summary = "The API documentation page (Swagger UI compiled into the server, works without internet)",
    security(()),
    responses((status = 200, description = "HTML.", body = String, content_type = "text/html")),
)]
pub(super) async fn docs_page() -> Response {
    (docs_headers("text/html; charset=utf-8"), DOCS_HTML).into_response()
}

/// `GET /docs/{file}`: a file of the Swagger UI distribution compiled into the binary.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "operations",
    operation_id = "docsAsset",
    summary = "The documentation page's scripts, stylesheet and icons (Swagger UI)",
    security(()),
    params(super::openapi::DocsFile),
    responses(
        (status = 200, description = "The file (JavaScript, CSS or PNG).", body = String),
        (status = 404, description = "No such file.", body = super::openapi::ErrorBody),
    ),
)]
pub(super) async fn docs_asset(Path(file): Path<String>) -> Response {
    if file == "docs.css" {
        return (docs_headers("text/css; charset=utf-8"), DOCS_CSS).into_response();
    }
    match utoipa_swagger_ui::serve(&file, SWAGGER_CONFIG.clone()) {
        Ok(Some(asset)) => {
            let headers = docs_headers(&asset.content_type);
            match asset.bytes {
                // The files compiled in are served without a copy.
                std::borrow::Cow::Borrowed(bytes) => (headers, bytes).into_response(),
                std::borrow::Cow::Owned(bytes) => (headers, bytes).into_response(),
            }
        }
        Ok(None) => {
            ApiError::not_found(format!("no such documentation file: {file}")).into_response()
        }
        Err(e) => ApiError::internal("preparing the documentation failed", &e).into_response(),
    }
}

/// `GET /docs` → `/docs/` (relative links on the page need the trailing slash).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    operation_id = "docsRedirect",
    summary = "Redirects to /docs/",
    security(()),
    responses((status = 308, description = "Permanent redirect to /docs/.")),
)]
pub(super) async fn docs_redirect() -> Redirect {
    Redirect::permanent("/docs/")
}

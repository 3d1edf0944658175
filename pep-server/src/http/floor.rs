//! The factory-floor page: what the line's workstations are doing, at a glance.
//!
//! `GET /floor/` renders a complete snapshot on the server (counters, the last hour per minute, the
//! latest attempts, and a serial search given as `?serial=`), so the page works with JavaScript off;
//! its script then follows `GET /v3/events` ([`super::events`]) and updates the page in place. The
//! CSS and the script are embedded in the binary (no CDN: the factory LAN has no internet) and
//! allowed by hash in the Content-Security-Policy, so nothing else can run on the page.
//!
//! Authentication: a `read` bearer token (scripts, tests) or the session cookie set by the login
//! form (`POST /floor/login`, see `super::auth`). Without either the page answers 401 with a login
//! form that carries no data.
//!
//! The jobs are split: [`view`] computes what the page shows (also sent as JSON by the event
//! stream), [`html`] renders it; the search behind the page's search box and the downloads it
//! links to are read endpoints (`super::read`); login and logout are `super::auth`'s.

pub mod html;
pub mod view;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

pub use html::{FLOOR_CSS, FLOOR_JS};
pub use view::{
    AttemptRow, CHART_MINUTES, CloudTile, Counters, Live, MinuteBar, RECENT_ATTEMPTS, Snapshot,
    audit_message, day_start_ms, event_text, live, row_of_audit, row_of_event, snapshot,
    status_name,
};

use super::AppState;
use super::auth::{self, Role};
use super::error::ApiError;
use super::query::QueryParams;
use super::read;

/// The login page (401/403): a form and, maybe, why the last try failed. No data at all. Each
/// rendering carries a fresh one-use CSRF token, also set as the pre-session cookie (`headers`:
/// the request's, for the cookie's Secure flag).
pub(super) fn login_page(
    status: StatusCode,
    problem: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let (csrf, cookie) = auth::new_login_form(headers);
    let mut response = html::html_response(status, html::login(problem, &csrf));
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"pep\""),
        );
    }
    response
}

/// `GET /` and `GET /floor` → `/floor/`.
#[utoipa::path(
    get,
    path = "/floor",
    tag = "floor",
    operation_id = "floorRedirect",
    summary = "Redirects to /floor/",
    security(()),
    responses((status = 307, description = "Temporary redirect to /floor/.")),
)]
pub async fn to_floor() -> Redirect {
    Redirect::temporary("/floor/")
}

/// `GET /floor/?serial=`: the page, rendered from the store; with `serial`, the search result too.
#[utoipa::path(
    get,
    path = "/floor/",
    tag = "floor",
    operation_id = "floorPage",
    summary = "The factory-floor page (HTML, live by Server-Sent Events, a snapshot without JavaScript)",
    description = super::openapi::FLOOR_DESCRIPTION,
    security(("bearer" = []), ("floorSession" = [])),
    params(super::openapi::FloorQuery),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 401, description = "Not logged in; the body is the login form (HTML) and nothing else.", body = String, content_type = "text/html"),
        (status = 403, description = "The token lacks the read role; the login form again (HTML).", body = String, content_type = "text/html"),
    ),
)]
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = auth::authorize_headers(&state.auth, &headers, None, Role::Read) {
        let problem = (e.status() == StatusCode::FORBIDDEN).then(|| e.message().to_owned());
        return login_page(e.status(), problem.as_deref(), &headers);
    }
    let offset = state.provisioner.config().time.utc_offset.minutes();
    let snap = match snapshot(state.provisioner.store(), offset).await {
        Ok(s) => s,
        Err(e) => return ApiError::store_read(&e).into_response(),
    };
    // The search of the no-script form; with the script, the box asks `/v3/audit` instead.
    let query = QueryParams::parse(raw.as_deref()).unwrap_or_default();
    let wanted = query
        .get_non_empty("serial")
        .ok()
        .flatten()
        .map(str::to_owned);
    let search_result = match &wanted {
        None => None,
        Some(serial) => Some(match read::parse_prefix("serial", serial) {
            Ok(prefix) => read::search(&state, &prefix, read::SEARCH_DEFAULT_LIMIT).await,
            Err(e) => Err(e),
        }),
    };
    // An exact serial: its current identity and every earlier one (revoked ones with why).
    let gateway = match &wanted {
        Some(serial) => view::gateway_identity(state.provisioner.store(), serial)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "floor page: reading the identity history failed");
                None
            }),
        None => None,
    };
    let ca_unavailable = (!state.provisioner.ca_available().await).then(|| {
        format!(
            "the CA key ({}) cannot sign: provisioning answers 503 until the token is back",
            state.provisioner.ca_key_location()
        )
    });
    html::html_response(
        StatusCode::OK,
        html::page(
            &snap,
            wanted.as_deref(),
            search_result.as_ref(),
            gateway.as_ref(),
            ca_unavailable.as_deref(),
            auth::logout_csrf(&headers).as_deref(),
        ),
    )
}

//! The factory-floor page: what the line's workstations are doing, at a glance.
//!
//! `GET /floor/` renders a complete snapshot on the server (counters, the last hour per minute, the
//! latest attempts, and a serial search given as `?serial=`), so the page works with JavaScript off;
//! its script then follows `GET /v3/events` ([`super::events`]) and updates the page in place. The
//! CSS and the script are embedded in the binary (no CDN: the factory LAN has no internet) and
//! allowed by hash in the Content-Security-Policy, so nothing else can run on the page.
//!
//! Authentication: a `read` bearer token (scripts, tests) or the session cookie set by the login
//! form (`POST /floor/login`, see [`super::auth`]). Without either the page answers 401 with a login
//! form that carries no data.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::LazyLock;

use axum::Form;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use fcc_proto::FccStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::{Auth, Principal, Role, SESSION_COOKIE, session_cookie};
use super::error::ApiError;
use super::query::QueryParams;
use crate::activity::{AttemptOutcome, ProvisionEvent};
use crate::store::{AuditEntry, Store, StoreError, now_ms};

/// The page's style sheet.
pub const FLOOR_CSS: &str = include_str!("../../assets/floor/floor.css");
/// The page's script.
pub const FLOOR_JS: &str = include_str!("../../assets/floor/floor.js");

/// Attempts shown in the table.
pub const RECENT_ATTEMPTS: u32 = 50;
/// Minutes in the rate chart.
pub const CHART_MINUTES: usize = 60;
/// Audit rows a search returns by default, and at most.
pub const SEARCH_DEFAULT_LIMIT: u32 = 200;
/// The largest `limit` of a search.
pub const SEARCH_MAX_LIMIT: u32 = 1000;
/// Session cookie lifetime (a shift and a half); the server's restart ends it earlier.
const SESSION_MAX_AGE_S: u32 = 12 * 3600;

fn sha256_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Only the embedded style and script may apply; the script may only talk to this server.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        sha256_source(FLOOR_CSS),
        sha256_source(FLOOR_JS)
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

// ---------------------------------------------------------------------------------------------
// The snapshot: what the page shows, from the store.

/// The counters at the top of the page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[derive(utoipa::ToSchema)]
pub struct Counters {
    /// Gateways deployed since midnight (in the configured `time.utc_offset`).
    pub deployed_today: u64,
    /// Gateways deployed, all time.
    pub deployed_total: u64,
    /// Failed attempts since midnight.
    pub failed_today: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Deployments per minute over the last minute.
    pub rate1: f64,
    /// Deployments per minute over the last 5 minutes.
    pub rate5: f64,
    /// Deployments per minute over the last 15 minutes.
    pub rate15: f64,
}

/// One bar of the chart.
#[derive(utoipa::ToSchema)]
#[schema(as = FloorMinute)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MinuteBar {
    /// Deployments in that minute.
    pub deployed: u64,
    /// Failed attempts in that minute.
    pub failed: u64,
}

/// Counters and chart (the `counters` event).
#[derive(utoipa::ToSchema)]
#[schema(as = FloorLive)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Live {
    /// When it was computed, ms since the epoch.
    pub now: i64,
    /// The counters.
    pub counters: Counters,
    /// Start of the first chart minute, ms since the epoch.
    pub chart_start: i64,
    /// The last [`CHART_MINUTES`] minutes, oldest first (the last one is the current minute).
    pub minutes: Vec<MinuteBar>,
}

/// One row of the attempts table (the `attempt` event, and the rows of `snapshot`).
#[derive(utoipa::ToSchema)]
#[schema(as = FloorAttempt)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRow {
    /// When the attempt started (in progress) or ended, ms since the epoch.
    pub at: i64,
    /// The serial.
    pub serial: String,
    /// The gateway's FCC `ip:port`.
    pub gateway: String,
    /// `deployed`, `failed`, `interrupted` or `in_progress`.
    pub result: &'static str,
    /// FCC's ReturnStatus, when FCC answered with one.
    pub fcc_status: Option<u32>,
    /// Its name (`FCC_STATUS_…`).
    pub fcc_status_name: Option<&'static str>,
    /// Why it failed, in FCC's own words when FCC answered (its InfoMessage); empty otherwise.
    pub message: String,
    /// The complete recorded error (shown on hover).
    pub detail: String,
    /// Duration, ms (finished attempts).
    pub duration_ms: Option<i64>,
}

/// Everything the page shows (the `snapshot` event).
#[derive(utoipa::ToSchema)]
#[schema(as = FloorSnapshot)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Counters and chart.
    #[serde(flatten)]
    pub live: Live,
    /// Offset of the factory's clock from UTC, minutes (`time.utc_offset`), for the times shown.
    pub offset_minutes: i32,
    /// The latest attempts, newest first.
    pub attempts: Vec<AttemptRow>,
}

/// `time.utc_offset` (`[+-]HH:MM`, checked at start) in minutes; 0 if unreadable.
pub fn offset_minutes(utc_offset: &str) -> i32 {
    let b = utc_offset.as_bytes();
    let sign = match b.first() {
        Some(b'-') => -1,
        _ => 1,
    };
    let num = |s: Option<&str>| s.and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    sign * (num(utc_offset.get(1..3)) * 60 + num(utc_offset.get(4..6)))
}

/// Midnight (ms since the epoch) of the day holding `now_ms`, in a clock `offset_min` from UTC.
pub fn day_start_ms(now_ms: i64, offset_min: i32) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let offset_ms = i64::from(offset_min) * 60_000;
    (now_ms + offset_ms).div_euclid(DAY_MS) * DAY_MS - offset_ms
}

fn rate(count: u64, minutes: u32) -> f64 {
    // Counts are far below 2^53: the conversion is exact.
    count as f64 / f64::from(minutes)
}

/// Computes the counters and the chart from the store.
pub async fn live(store: &Store, offset_min: i32) -> Result<Live, StoreError> {
    let now = now_ms();
    let stats = store.stats().await?;
    let today = store.outcome_counts(day_start_ms(now, offset_min)).await?;
    let last1 = store.outcome_counts(now - 60_000).await?;
    let last5 = store.outcome_counts(now - 5 * 60_000).await?;
    let last15 = store.outcome_counts(now - 15 * 60_000).await?;
    let current_minute = now.div_euclid(60_000);
    let first_minute = current_minute - (CHART_MINUTES as i64 - 1);
    let mut minutes = vec![MinuteBar::default(); CHART_MINUTES];
    for m in store.outcomes_per_minute(first_minute * 60_000).await? {
        if let Some(bar) = usize::try_from(m.minute - first_minute)
            .ok()
            .and_then(|i| minutes.get_mut(i))
        {
            *bar = MinuteBar {
                deployed: m.counts.deployed,
                failed: m.counts.failed,
            };
        }
    }
    Ok(Live {
        now,
        counters: Counters {
            deployed_today: today.deployed,
            deployed_total: stats.deployed,
            failed_today: today.failed,
            in_flight: stats.in_flight,
            rate1: rate(last1.deployed, 1),
            rate5: rate(last5.deployed, 5),
            rate15: rate(last15.deployed, 15),
        },
        chart_start: first_minute * 60_000,
        minutes,
    })
}

/// The full snapshot: [`live`] plus the latest attempts.
pub async fn snapshot(store: &Store, offset_min: i32) -> Result<Snapshot, StoreError> {
    let live = live(store, offset_min).await?;
    let attempts = store
        .recent_outcomes(RECENT_ATTEMPTS)
        .await?
        .iter()
        .map(row_of_audit)
        .collect();
    Ok(Snapshot {
        live,
        offset_minutes: offset_min,
        attempts,
    })
}

fn status_name(status: Option<u32>) -> Option<&'static str> {
    status.map(|s| FccStatus::from_u32(s).name())
}

/// What to show of a recorded failure: when FCC answered, its InfoMessage (the recorded error ends
/// with `…(FCC_STATUS_NAME): <InfoMessage>`); otherwise the whole error.
pub fn fcc_words(detail: &str, fcc_status: Option<u32>) -> String {
    if let Some(name) = status_name(fcc_status) {
        let marker = format!("({name}): ");
        if let Some(at) = detail.find(&marker) {
            return detail[at + marker.len()..].to_owned();
        }
    }
    detail.to_owned()
}

fn result_of_event(event: &str) -> &'static str {
    match event {
        "deployed" => "deployed",
        "failed" => "failed",
        "interrupted" => "interrupted",
        "attempt" => "in_progress",
        "conflict" => "conflict",
        _ => "other",
    }
}

/// A table row from an outcome row of the audit trail.
pub fn row_of_audit(e: &AuditEntry) -> AttemptRow {
    let result = result_of_event(e.event.as_str());
    let detail = e.detail.clone().unwrap_or_default();
    let message = if result == "deployed" {
        String::new()
    } else {
        fcc_words(&detail, e.fcc_status)
    };
    AttemptRow {
        at: e.at_ms,
        serial: e.serial.clone(),
        gateway: e.gateway.clone(),
        result,
        fcc_status: e.fcc_status,
        fcc_status_name: status_name(e.fcc_status),
        message,
        detail: if result == "deployed" {
            String::new()
        } else {
            detail
        },
        duration_ms: e.duration_ms,
    }
}

/// A table row from a live event.
pub fn row_of_event(event: &ProvisionEvent) -> AttemptRow {
    match event {
        ProvisionEvent::Started(s) => AttemptRow {
            at: s.at_ms,
            serial: s.serial.clone(),
            gateway: s.gateway.to_string(),
            result: "in_progress",
            fcc_status: None,
            fcc_status_name: None,
            message: String::new(),
            detail: String::new(),
            duration_ms: None,
        },
        ProvisionEvent::Finished(f) => {
            let (result, fcc_status, message, detail) = match &f.outcome {
                AttemptOutcome::Deployed { .. } => {
                    ("deployed", Some(0), String::new(), String::new())
                }
                AttemptOutcome::Failed {
                    fcc_status,
                    message,
                } => {
                    let status = fcc_status.map(FccStatus::as_u32);
                    (
                        "failed",
                        status,
                        fcc_words(message, status),
                        message.clone(),
                    )
                }
            };
            AttemptRow {
                at: f.at_ms,
                serial: f.serial.clone(),
                gateway: f.gateway.to_string(),
                result,
                fcc_status,
                fcc_status_name: status_name(fcc_status),
                message,
                detail,
                duration_ms: Some(f.duration_ms),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Search.

/// One audit row as the search answers it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[derive(utoipa::ToSchema)]
pub struct AuditRow {
    /// Audit row id (append order).
    pub id: i64,
    /// ms since the epoch.
    pub at: i64,
    /// Serial.
    pub serial: String,
    /// FCC `ip:port`.
    pub gateway: String,
    /// Who asked (token name and address).
    pub requester: String,
    /// `attempt`, `deployed`, `failed`, `conflict` or `interrupted`.
    pub event: String,
    /// FCC's ReturnStatus when FCC answered.
    pub fcc_status: Option<u32>,
    /// Its name.
    pub fcc_status_name: Option<&'static str>,
    /// Error text, enrollment ID or other detail.
    pub detail: Option<String>,
    /// What to show of the detail: FCC's InfoMessage when FCC answered, else the detail.
    pub message: Option<String>,
    /// Duration of the attempt, ms (outcome rows).
    pub duration_ms: Option<i64>,
}

impl From<AuditEntry> for AuditRow {
    fn from(e: AuditEntry) -> Self {
        AuditRow {
            id: e.id,
            at: e.at_ms,
            message: e.detail.as_deref().map(|d| fcc_words(d, e.fcc_status)),
            fcc_status_name: status_name(e.fcc_status),
            serial: e.serial,
            gateway: e.gateway,
            requester: e.requester,
            event: e.event.to_string(),
            fcc_status: e.fcc_status,
            detail: e.detail,
            duration_ms: e.duration_ms,
        }
    }
}

/// A validated serial prefix: a non-empty prefix of a valid serial is itself a valid serial.
fn parse_prefix(name: &str, value: &str) -> Result<String, ApiError> {
    pep_ca::EndpointName::from_str(value)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| ApiError::bad_param(name, e))
}

async fn search(state: &AppState, prefix: &str, limit: u32) -> Result<Vec<AuditRow>, ApiError> {
    let rows = state
        .provisioner
        .store()
        .audit_by_prefix(prefix, limit)
        .await
        .map_err(|e| ApiError::internal("searching the audit trail failed", &e))?;
    Ok(rows.into_iter().map(AuditRow::from).collect())
}

/// `GET /v3/audit?serialPrefix=&limit=` (`read` role): the audit rows of every serial starting with
/// the prefix, newest first.
#[utoipa::path(
    get,
    path = "/v3/audit",
    tag = "floor",
    operation_id = "auditBySerialPrefix",
    summary = "Audit trail of the gateways whose serial starts with a prefix, newest first",
    description = "Every attempt, outcome (deployed, failed with FCC's status and words, interrupted) and conflict recorded for the matching serials; an exact serial is its own prefix. Needs the read role (bearer token or floor session cookie).",
    security(("bearer" = []), ("floorSession" = [])),
    params(super::openapi::AuditQuery),
    responses(
        (status = 200, description = "The rows.", body = super::openapi::AuditPage),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
    ),
)]
pub async fn audit(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    let prefix = params
        .get_non_empty("serialPrefix")?
        .ok_or_else(|| ApiError::missing_param("serialPrefix"))?;
    let prefix = parse_prefix("serialPrefix", prefix)?;
    let limit = match params.get_non_empty("limit")? {
        None => SEARCH_DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=SEARCH_MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_param(
                    "limit",
                    format!("must be a whole number in 1..={SEARCH_MAX_LIMIT}"),
                )
            })?,
    };
    // One more than asked tells whether the answer is complete.
    let mut entries = search(&state, &prefix, limit + 1).await?;
    let truncated = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let body = serde_json::json!({
        "serialPrefix": prefix,
        "limit": limit,
        "truncated": truncated,
        "entries": entries,
    });
    Ok(axum::Json(body).into_response())
}

// ---------------------------------------------------------------------------------------------
// The JSON inventory download.

/// Records per store page of the inventory stream.
const INVENTORY_PAGE: u32 = 1000;

/// Where the inventory stream is.
enum InventoryCursor {
    Start,
    After(i64),
    Done,
}

/// `GET /v3/inventory.json` (`read` role): every deployed gateway, oldest first, as one JSON array
/// of the entries of `/v3/enrollment-ids`. Streamed page by page (keyset paging), never held in
/// memory as a whole.
#[utoipa::path(
    get,
    path = "/v3/inventory.json",
    tag = "floor",
    operation_id = "inventoryJson",
    summary = "Every deployed gateway as one JSON array (the floor page's inventory download)",
    description = "Oldest first; each element is an entry of /v3/enrollment-ids (EnrollmentEntry). Streamed; sent as an attachment named inventory.json. Needs the read role (bearer token or floor session cookie).",
    security(("bearer" = []), ("floorSession" = [])),
    responses(
        (status = 200, description = "The inventory.", body = Vec<super::openapi::EnrollmentEntry>),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
    ),
)]
pub async fn inventory(State(state): State<AppState>) -> Response {
    let provisioner = state.provisioner.clone();
    let stream = futures_util::stream::unfold(InventoryCursor::Start, move |cursor| {
        let provisioner = provisioner.clone();
        async move {
            let after = match cursor {
                InventoryCursor::Done => return None,
                InventoryCursor::Start => None,
                InventoryCursor::After(id) => Some(id),
            };
            let page = provisioner
                .store()
                .list_deployed(INVENTORY_PAGE, crate::store::SortOrder::Asc, after)
                .await;
            match page {
                Ok(records) => {
                    let mut chunk = String::with_capacity(records.len() * 400 + 4);
                    if after.is_none() {
                        chunk.push('[');
                    }
                    for (i, r) in records.iter().enumerate() {
                        if after.is_some() || i > 0 {
                            chunk.push(',');
                        }
                        chunk.push('\n');
                        chunk.push_str(&super::read::record_json(r).to_string());
                    }
                    let next = match records.last() {
                        Some(last) if records.len() == INVENTORY_PAGE as usize => {
                            InventoryCursor::After(last.id)
                        }
                        _ => {
                            chunk.push_str("\n]\n");
                            InventoryCursor::Done
                        }
                    };
                    Some((Ok(bytes::Bytes::from(chunk)), next))
                }
                Err(e) => {
                    // The head is sent: abort the body so the download is visibly incomplete.
                    tracing::error!(error = %e, "inventory: reading the store failed");
                    Some((
                        Err(std::io::Error::other("reading the store failed")),
                        InventoryCursor::Done,
                    ))
                }
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"inventory.json\""),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Authentication of the page.

/// `read` by bearer header, else by session cookie, else (auth enabled) an error.
fn authorize_page(auth: &Auth, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match (header, session_cookie(headers)) {
        (None, Some(session)) => auth.authorize_session(session, Role::Read),
        _ => auth.authorize(header, Role::Read),
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The login page (401/403): a form and, maybe, why the last try failed. No data at all.
fn login_page(status: StatusCode, problem: Option<&str>) -> Response {
    let mut html = String::with_capacity(4096);
    html.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>pep · factory floor · log in</title><style>",
    );
    html.push_str(FLOOR_CSS);
    html.push_str(
        "</style></head><body class=\"login\"><main><h1>pep <span>factory floor</span></h1>\
         <form method=\"post\" action=\"/floor/login\">\
         <label for=\"token\">Access token (read role)</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Log in</button></form>",
    );
    if let Some(problem) = problem {
        let _ = write!(
            html,
            "<p class=\"problem\" role=\"alert\"><span aria-hidden=\"true\">✖ </span>{}</p>",
            esc(problem)
        );
    }
    html.push_str(
        "<p class=\"hint\">Ask the pep administrator for a token with the read role. \
         Scripts send <code>Authorization: Bearer &lt;token&gt;</code> instead.</p></main></body></html>\n",
    );
    let mut response = html_response(status, html);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pep\""),
        );
    }
    response
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /floor/login`: a valid `read` token sets the session cookie and goes to the page; anything
/// else shows the form again with the reason.
#[utoipa::path(
    post,
    path = "/floor/login",
    tag = "floor",
    operation_id = "floorLogin",
    summary = "Logs the floor page in with a read token and sets the session cookie",
    description = super::openapi::LOGIN_DESCRIPTION,
    security(()),
    request_body(content = super::openapi::LoginFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged in; go to /floor/."),
        (status = 401, description = "The token is not valid (login form, HTML)."),
        (status = 403, description = "The token lacks the read role (login form, HTML)."),
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = zeroize::Zeroizing::new(form.token);
    match state.auth.login(token.as_bytes(), Role::Read) {
        Ok((principal, session)) => {
            tracing::info!(token = %principal.0, "floor page: logged in");
            let mut response = Redirect::to("/floor/").into_response();
            if let Some(session) = session {
                // Secure only behind a TLS proxy: over plain HTTP the browser would drop the cookie.
                let secure = headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
                let cookie = format!(
                    "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE_S}{}",
                    if secure { "; Secure" } else { "" }
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
            }
            response
        }
        Err(e) => {
            tracing::info!(status = e.status().as_u16(), "floor page: login refused");
            login_page(e.status(), Some(e.message()))
        }
    }
}

/// `POST /floor/logout`: clears the session cookie.
#[utoipa::path(
    post,
    path = "/floor/logout",
    tag = "floor",
    operation_id = "floorLogout",
    summary = "Clears the floor page's session cookie",
    security(()),
    responses((status = 303, description = "Logged out; go to /floor/.")),
)]
pub async fn logout() -> Response {
    let mut response = Redirect::to("/floor/").into_response();
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
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

// ---------------------------------------------------------------------------------------------
// The page.

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
    if let Err(e) = authorize_page(&state.auth, &headers) {
        let problem = (e.status() == StatusCode::FORBIDDEN).then(|| e.message().to_owned());
        return login_page(e.status(), problem.as_deref());
    }
    let offset = state.provisioner.config().time.utc_offset.minutes();
    let snap = match snapshot(state.provisioner.store(), offset).await {
        Ok(s) => s,
        Err(e) => return ApiError::internal("reading the store failed", &e).into_response(),
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
        Some(serial) => Some(match parse_prefix("serial", serial) {
            Ok(prefix) => search(&state, &prefix, SEARCH_DEFAULT_LIMIT).await,
            Err(e) => Err(e),
        }),
    };
    html_response(
        StatusCode::OK,
        render_page(&snap, wanted.as_deref(), search_result.as_ref()),
    )
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `HH:MM:SS` of `ms` in a clock `offset_min` from UTC.
pub fn clock(ms: i64, offset_min: i32) -> String {
    let local_s = (ms + i64::from(offset_min) * 60_000).div_euclid(1000);
    let day_s = local_s.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        day_s / 3600,
        day_s / 60 % 60,
        day_s % 60
    )
}

/// `850 ms`, `1.2 s`, `1 min 05 s`.
pub fn duration_text(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60)
    }
}

/// Badge text of a result: a symbol and a word, so status never relies on colour alone.
pub fn result_label(result: &str) -> &'static str {
    match result {
        "deployed" => "✔ Deployed",
        "failed" => "✖ Failed",
        "interrupted" => "✖ Interrupted",
        "in_progress" => "⟳ In progress",
        "attempt" => "→ Attempt",
        "conflict" => "⚠ Conflict",
        _ => "• Other",
    }
}

fn status_text(status: Option<u32>, name: Option<&str>) -> String {
    match (status, name) {
        (Some(s), Some(n)) => format!("{s} {}", n.trim_start_matches("FCC_STATUS_")),
        (Some(s), None) => s.to_string(),
        _ => "—".to_owned(),
    }
}

fn render_row(html: &mut String, r: &AttemptRow, offset: i32) {
    let _ = write!(
        html,
        "<tr class=\"r-{res}\" data-serial=\"{serial}\" data-result=\"{res}\">\
         <td class=\"t\">{time}</td><td class=\"serial\">{serial}</td><td class=\"gw\">{gw}</td>\
         <td><span class=\"badge {res}\">{label}</span></td>\
         <td class=\"fcc\" title=\"{detail}\"><span class=\"st\">{status}</span><span class=\"msg\">{msg}</span></td>\
         <td class=\"dur\">{dur}</td></tr>",
        res = r.result,
        serial = esc(&r.serial),
        time = clock(r.at, offset),
        gw = esc(&r.gateway),
        label = result_label(r.result),
        status = esc(&status_text(r.fcc_status, r.fcc_status_name)),
        detail = esc(&r.detail),
        msg = esc(&r.message),
        dur = r.duration_ms.map(duration_text).unwrap_or_default(),
    );
}

fn render_chart(html: &mut String, live: &Live, offset: i32) {
    // viewBox units: one bar slot is 10 wide; the tallest bar is 100 high.
    let peak = live
        .minutes
        .iter()
        .map(|m| m.deployed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let deployed: u64 = live.minutes.iter().map(|m| m.deployed).sum();
    let failed: u64 = live.minutes.iter().map(|m| m.failed).sum();
    let _ = write!(
        html,
        "<svg id=\"chart\" viewBox=\"0 0 {w} 100\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-labelledby=\"chart-text\">",
        w = CHART_MINUTES * 10
    );
    for (i, m) in live.minutes.iter().enumerate() {
        let x = i * 10 + 1;
        let ok_h = m.deployed * 100 / peak;
        let bad_h = m.failed * 100 / peak;
        let minute_at = live.chart_start + i as i64 * 60_000;
        let _ = write!(
            html,
            "<g><title>{} — {} deployed, {} failed</title>",
            &clock(minute_at, offset)[..5],
            m.deployed,
            m.failed
        );
        if ok_h > 0 {
            let _ = write!(
                html,
                "<rect class=\"ok\" x=\"{x}\" y=\"{}\" width=\"8\" height=\"{ok_h}\"/>",
                100 - ok_h
            );
        }
        if bad_h > 0 {
            let _ = write!(
                html,
                "<rect class=\"bad\" x=\"{x}\" y=\"{}\" width=\"8\" height=\"{bad_h}\"/>",
                100 - ok_h - bad_h
            );
        }
        html.push_str("</g>");
    }
    let _ = write!(
        html,
        "</svg><p class=\"sub\" id=\"chart-text\">Last hour: {deployed} deployed, {failed} failed; \
         peak {peak}/min</p>"
    );
}

fn render_history(html: &mut String, rows: &[AuditRow], offset: i32) {
    if rows.is_empty() {
        html.push_str("<p class=\"empty\">No attempt recorded for this serial.</p>");
        return;
    }
    // Two columns only: the panel is narrow, so each row stacks event, serial, status and detail.
    html.push_str(
        "<table class=\"history\"><thead><tr><th scope=\"col\">Time</th>\
         <th scope=\"col\">Event</th></tr></thead><tbody>",
    );
    for r in rows {
        let kind = match result_of_event(&r.event) {
            "in_progress" => "attempt",
            other => other,
        };
        let _ = write!(
            html,
            "<tr class=\"r-{kind}\" data-serial=\"{serial}\"><td class=\"t\">{time}</td>\
             <td><span class=\"badge {kind}\">{label}</span> <span class=\"serial\">{serial}</span>\
             <span class=\"st\">{status}</span><span class=\"msg\" title=\"{detail}\">{message}</span></td></tr>",
            serial = esc(&r.serial),
            time = clock(r.at, offset),
            label = result_label(kind),
            status = match r.fcc_status {
                Some(_) => esc(&status_text(r.fcc_status, r.fcc_status_name)),
                None => String::new(),
            },
            detail = esc(r.detail.as_deref().unwrap_or("")),
            message = esc(r.message.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</tbody></table>");
}

/// The whole page for `snap`, with the search box holding `wanted` and its result.
pub fn render_page(
    snap: &Snapshot,
    wanted: Option<&str>,
    search_result: Option<&Result<Vec<AuditRow>, ApiError>>,
) -> String {
    let live = &snap.live;
    let c = &live.counters;
    let offset = snap.offset_minutes;
    let mut html = String::with_capacity(32 * 1024);
    html.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>pep · factory floor</title>\
         <noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript><style>",
    );
    html.push_str(FLOOR_CSS);
    let _ = write!(
        html,
        "</style></head><body data-offset-minutes=\"{offset}\" data-now=\"{now}\">\
         <header class=\"bar\"><h1>pep <span>factory floor</span></h1>\
         <p id=\"live\" class=\"live snapshot\" role=\"status\"><span class=\"dot\" aria-hidden=\"true\"></span>\
         <span id=\"live-text\">Snapshot of {time} (refreshes every 30 s)</span></p>\
         <nav><a class=\"btn\" href=\"/v3/enrollment-ids.csv\" download>⬇ Enrollment IDs (CSV)</a>\
         <a class=\"btn\" href=\"/v3/inventory.json\" download>⬇ Inventory (JSON)</a>\
         <form method=\"post\" action=\"/floor/logout\"><button type=\"submit\" class=\"btn quiet\">Log out</button></form></nav>\
         </header><main>",
        now = live.now,
        time = clock(live.now, offset),
    );
    let _ = write!(
        html,
        "<section class=\"counters\" aria-label=\"Counters\">\
         <div class=\"tile good\"><h2>Deployed today</h2><p class=\"big\" id=\"c-deployed-today\">{}</p>\
         <p class=\"sub\">total <span id=\"c-deployed-total\">{}</span></p></div>\
         <div class=\"tile bad\"><h2>Failed today</h2><p class=\"big\" id=\"c-failed-today\">{}</p>\
         <p class=\"sub\">attempts, retryable</p></div>\
         <div class=\"tile busy\"><h2>In flight</h2><p class=\"big\" id=\"c-in-flight\">{}</p>\
         <p class=\"sub\">injecting now</p></div>\
         <div class=\"tile\"><h2>Per minute</h2><p class=\"big\" id=\"c-rate1\">{:.1}</p>\
         <p class=\"sub\">5 min <span id=\"c-rate5\">{:.1}</span> · 15 min <span id=\"c-rate15\">{:.1}</span></p></div>\
         <div class=\"tile chart\"><h2>Last hour, per minute</h2>",
        c.deployed_today, c.deployed_total, c.failed_today, c.in_flight, c.rate1, c.rate5, c.rate15
    );
    render_chart(&mut html, live, offset);
    html.push_str(
        "</div></section><div class=\"cols\"><section class=\"attempts\" aria-labelledby=\"attempts-h\">\
         <h2 id=\"attempts-h\">Latest attempts <span class=\"sub\">newest first</span></h2>\
         <div class=\"scroll\"><table id=\"attempts\"><thead><tr><th scope=\"col\">Time</th>\
         <th scope=\"col\">Serial</th><th scope=\"col\">Gateway</th><th scope=\"col\">Result</th>\
         <th scope=\"col\">FCC status and message</th><th scope=\"col\">Took</th>\
         </tr></thead><tbody>",
    );
    for r in &snap.attempts {
        render_row(&mut html, r, offset);
    }
    html.push_str("</tbody></table>");
    if snap.attempts.is_empty() {
        html.push_str("<p class=\"empty\" id=\"no-attempts\">No attempt yet.</p>");
    }
    let _ = write!(
        html,
        "</div></section><section class=\"search\" aria-labelledby=\"search-h\">\
         <h2 id=\"search-h\">Find a gateway</h2>\
         <form id=\"search\" method=\"get\" action=\"/floor/\" role=\"search\">\
         <label for=\"serial\">Serial number or its beginning</label><div class=\"row\">\
         <input id=\"serial\" name=\"serial\" value=\"{}\" autocomplete=\"off\" spellcheck=\"false\">\
         <button type=\"submit\" class=\"btn\">Search</button></div></form><div id=\"history\" aria-live=\"polite\">",
        esc(wanted.unwrap_or(""))
    );
    match search_result {
        None => html.push_str(
            "<p class=\"hint\">Shows every attempt of the matching gateways from the audit trail.</p>",
        ),
        Some(Err(e)) => {
            let _ = write!(html, "<p class=\"problem\">{}</p>", esc(e.message()));
        }
        Some(Ok(rows)) => render_history(&mut html, rows, offset),
    }
    html.push_str("</div></section></div></main><script>");
    html.push_str(FLOOR_JS);
    html.push_str("</script></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_midnight() {
        assert_eq!(offset_minutes("+00:00"), 0);
        assert_eq!(offset_minutes("+05:30"), 330);
        assert_eq!(offset_minutes("-14:00"), -840);
        // 2026-11-28T18:00:00Z
        let t = 1_795_888_800_000;
        assert_eq!(day_start_ms(t, 0), 1_795_824_000_000);
        // At +08:00 it is already 02:00 on the 29th.
        assert_eq!(
            day_start_ms(t, 480),
            1_795_824_000_000 + 86_400_000 - 480 * 60_000
        );
        assert_eq!(clock(t, 0), "18:00:00");
        assert_eq!(clock(t, 330), "23:30:00");
        assert_eq!(clock(t, -840), "04:00:00");
    }

    #[test]
    fn fcc_words_are_the_info_message() {
        let detail = "FCC at 127.0.0.1:4000 rejected the identity with status 13 \
                      (FCC_STATUS_EXPIRED_CERTIFICATE): Certificate expired:mbed.BootstrapDeviceCert";
        assert_eq!(
            fcc_words(detail, Some(13)),
            "Certificate expired:mbed.BootstrapDeviceCert"
        );
        assert_eq!(
            fcc_words("closed without reply", None),
            "closed without reply"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(duration_text(850), "850 ms");
        assert_eq!(duration_text(1250), "1.2 s");
        assert_eq!(duration_text(65_000), "1 min 05 s");
    }
}

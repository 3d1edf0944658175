//! Read endpoints: one gateway's enrollment ID or verification key, the paginated HAL listing, the
//! two streamed downloads of every deployed gateway (the CSV for the cloud's bulk first-to-claim
//! upload, and the JSON inventory), and the audit-trail search of the factory-floor page.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use pep_ca::enrollment_csv::{self, Column};
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::floor;
use super::query::QueryParams;
use crate::store::{AuditEntry, IdentityRecord, SortOrder, StoreError};

/// Page size of the listing when `limit` is absent (as the old server).
pub(super) const DEFAULT_LIMIT: u32 = 50;
/// Largest page of the listing.
pub(super) const MAX_LIMIT: u32 = 1000;
/// Rows fetched from the store per step of the streamed downloads.
const DOWNLOAD_PAGE: u32 = 1000;
/// Audit rows a search returns by default, and at most.
pub(super) const SEARCH_DEFAULT_LIMIT: u32 = 200;
/// The largest `limit` of a search.
pub(super) const SEARCH_MAX_LIMIT: u32 = 1000;

/// The `serialNumber` parameter of the lookups: required, and a valid endpoint name (anything else
/// cannot exist, and saying so is more useful than a 404).
fn serial_param(params: &QueryParams) -> Result<String, ApiError> {
    let serial = params
        .get("serialNumber")?
        .ok_or_else(|| ApiError::missing_param("serialNumber"))?;
    if serial.is_empty() {
        return Err(ApiError::bad_param("serialNumber", "must not be empty"));
    }
    pep_ca::EndpointName::from_str(serial).map_err(|e| {
        ApiError::bad_param("serialNumber", format!("is not a valid endpoint name: {e}"))
    })?;
    Ok(serial.to_owned())
}

/// `body` answered with `content_type`.
pub(super) fn typed(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// A download: `body` as the attachment `disposition` names, of `content_type`.
fn attachment(content_type: &'static str, disposition: &'static str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static(disposition),
            ),
        ],
        body,
    )
        .into_response()
}

fn text_plain(body: String) -> Response {
    typed("text/plain; charset=utf-8", body)
}

/// The text answer of a lookup by serial: the value found, else 404 saying `missing(serial)`.
fn lookup_answer<T: std::fmt::Display>(
    found: Result<Option<T>, StoreError>,
    serial: String,
    missing: impl FnOnce(&str) -> String,
) -> Result<Response, ApiError> {
    match found {
        Ok(Some(value)) => Ok(text_plain(value.to_string())),
        Ok(None) => Err(ApiError::not_found(missing(&serial)).with("serialNumber", serial)),
        Err(e) => Err(ApiError::store_read(&e)),
    }
}

/// `GET /v3/enrollment-id?serialNumber=S`: the enrollment ID of a deployed gateway, as text.
#[utoipa::path(
    get,
    path = "/v3/enrollment-id",
    tag = "read",
    operation_id = "getEnrollmentId",
    summary = "The enrollment ID of a deployed gateway",
    description = "Needs the read role.",
    params(super::openapi::SerialQuery),
    responses(
        (status = 200, description = "The enrollment ID: A- followed by the SHA-256 of the device certificate as 32 upper-case colon-separated hex pairs.", body = inline(super::openapi::EnrollmentIdText), content_type = "text/plain"),
        super::openapi::CallerErrors,
        (status = 404, response = super::openapi::NotFound),
    ),
)]
pub(super) async fn enrollment_id(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let serial = serial_param(&QueryParams::parse(raw.as_deref())?)?;
    let found = state.provisioner.store().enrollment_id(&serial).await;
    lookup_answer(found, serial, |serial| {
        format!("no deployed gateway has serial number `{serial}`")
    })
}

/// `GET /v3/verification-key?serialNumber=S`: the stored FSS verification key, as text.
#[utoipa::path(
    get,
    path = "/v3/verification-key",
    tag = "read",
    operation_id = "getVerificationKey",
    summary = "The journald FSS verification key stored for a deployed gateway",
    description = "Needs the read role.",
    params(super::openapi::SerialQuery),
    responses(
        (status = 200, description = "The verification key.", body = String, content_type = "text/plain"),
        super::openapi::CallerErrors,
        (status = 404, response = super::openapi::NotFound),
    ),
)]
pub(super) async fn verification_key(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let serial = serial_param(&QueryParams::parse(raw.as_deref())?)?;
    let found = state.provisioner.store().verification_key(&serial).await;
    lookup_answer(found, serial, |serial| {
        format!("no deployed gateway with serial number `{serial}` has a verification key")
    })
}

/// The listing's paging parameters.
pub(super) struct Page {
    pub(super) limit: u32,
    pub(super) order: SortOrder,
    pub(super) last: Option<i64>,
}

fn page_params(params: &QueryParams) -> Result<Page, ApiError> {
    let limit = match params.get_non_empty("limit")? {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("must be a whole number in 1..={MAX_LIMIT}"),
                ));
            }
        },
    };
    let order = match params.get_non_empty("order")? {
        None => SortOrder::Desc,
        Some(text) if text.eq_ignore_ascii_case("asc") => SortOrder::Asc,
        Some(text) if text.eq_ignore_ascii_case("desc") => SortOrder::Desc,
        Some(_) => return Err(ApiError::bad_param("order", "must be ASC or DESC")),
    };
    let last = match params.get_non_empty("last")? {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(ApiError::bad_param(
                    "last",
                    "must be the `_id` of an entry of the previous page",
                ));
            }
        },
    };
    Ok(Page { limit, order, last })
}

fn order_name(order: SortOrder) -> &'static str {
    match order {
        SortOrder::Asc => "ASC",
        _ => "DESC",
    }
}

/// A row of a keyset-paged listing ([`ListingQuery::page`]).
pub(super) trait ListingRow {
    /// The row's `_id`: the `last` of the next page when it ends a page.
    fn id(&self) -> i64;
    /// The row as an entry of the page's `results`.
    fn entry(&self) -> Value;
}

impl ListingRow for IdentityRecord {
    fn id(&self) -> i64 {
        self.id
    }

    fn entry(&self) -> Value {
        let mut entry = json!({
            "_id": self.id.to_string(),
            "serialNumber": self.serial_number,
            "deviceID": self.device_id,
            "deployed": self.deployed,
            "hardwareVersion": self.hardware_version,
            "radioConfig": self.radio_config,
            "ledConfig": self.led_config,
            "category": self.category,
            "cloudAddress": self.cloud_address,
            "apiAddress": self.api_address,
            "gatewayServicesAddress": self.gateway_services_address,
            "enrollmentID": self.enrollment_id,
            "createdAt": self.created_at_ms,
        });
        // Only with a queued cloud claim: the old tool's entries stay exactly as they were.
        if let (Some(state), Value::Object(map)) = (self.claim_state, &mut entry) {
            map.insert("claimState".into(), state.as_str().into());
        }
        entry
    }
}

/// The request of a keyset-paged listing: its URI (the path goes into the page's links) and its
/// query, parsed when the request is extracted (a malformed query is a 400 before the handler).
pub(super) struct ListingQuery {
    uri: Uri,
    params: QueryParams,
}

impl<S: Send + Sync> FromRequestParts<S> for ListingQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let params = QueryParams::parse(parts.uri.query())?;
        Ok(ListingQuery {
            uri: parts.uri.clone(),
            params,
        })
    }
}

impl ListingQuery {
    /// The optional `state` filter: absent or empty lists every row, else one of the names
    /// `states` lists ([`state_filter`]).
    pub(super) fn state<S: FromStr>(&self, states: &str) -> Result<Option<S>, ApiError> {
        self.params
            .get_non_empty("state")?
            .map(|text| state_filter(text, states))
            .transpose()
    }

    /// The required `state` parameter ([`state_filter`]).
    pub(super) fn required_state<S: FromStr>(&self, states: &str) -> Result<S, ApiError> {
        let text = self
            .params
            .get("state")?
            .ok_or_else(|| ApiError::missing_param("state"))?;
        state_filter(text, states)
    }

    /// One page of the listing: reads the paging parameters, the rows from `fetch`, and answers
    /// them as [`hal_page`]. `state` is the filter the rows were read with (when there is one):
    /// it stays in the links and is named in the body.
    pub(super) async fn page<R: ListingRow, F>(
        &self,
        state: Option<&'static str>,
        fetch: impl FnOnce(&Page) -> F,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<Vec<R>, StoreError>>,
    {
        let page = page_params(&self.params)?;
        let rows = fetch(&page).await.map_err(|e| ApiError::store_read(&e))?;
        let filter = state.map_or_else(String::new, |s| format!("state={s}&"));
        Ok(hal_page(
            self.uri.path(),
            &filter,
            &page,
            rows.last().map(R::id),
            rows.iter().map(R::entry).collect(),
            state.map(|s| ("state", s.into())),
        ))
    }
}

/// `GET /v3/enrollment-ids?limit=&order=&last=`: one page of deployed gateways as HAL JSON.
#[utoipa::path(
    get,
    path = "/v3/enrollment-ids",
    tag = "read",
    operation_id = "listEnrollmentIds",
    summary = "Deployed gateways, one page (HAL JSON)",
    description = "Keyset paging; follow _links.next until a page is empty. Needs the read role.",
    params(super::openapi::PageQuery),
    responses(
        (status = 200, description = "One page.", body = super::openapi::EnrollmentPage, content_type = "application/hal+json"),
        super::openapi::CallerErrors,
    ),
)]
pub(super) async fn enrollment_ids(
    State(state): State<AppState>,
    query: ListingQuery,
) -> Result<Response, ApiError> {
    let store = state.provisioner.store();
    query
        .page(None, |page| {
            store.list_deployed(page.limit, page.order, page.last)
        })
        .await
}

/// The `state` filter of a listing: one of the names `states` lists, else 400 saying them.
fn state_filter<S: FromStr>(text: &str, states: &str) -> Result<S, ApiError> {
    S::from_str(text).map_err(|_| ApiError::bad_param("state", format!("must be {states}")))
}

/// One page of a keyset-paged listing as HAL JSON: `_links.self`, `_links.next` (from the last
/// entry's `_id`, when the page is not empty), the paging parameters, the `extra` field if any and
/// the entries. `filter` is the listing's own query before the paging (`state=in_doubt&`).
fn hal_page(
    path: &str,
    filter: &str,
    page: &Page,
    last_id: Option<i64>,
    results: Vec<Value>,
    extra: Option<(&str, Value)>,
) -> Response {
    let order = order_name(page.order);
    let href = |last: Option<i64>| {
        let mut h = format!("{path}?{filter}limit={}&order={order}", page.limit);
        if let Some(last) = last {
            let _ = write!(h, "&last={last}");
        }
        h
    };
    let mut links = serde_json::Map::new();
    links.insert("self".into(), json!({ "href": href(page.last) }));
    if let Some(last) = last_id {
        links.insert("next".into(), json!({ "href": href(Some(last)) }));
    }
    let mut body = serde_json::Map::new();
    body.insert("_links".into(), links.into());
    body.insert("total_count".into(), results.len().into());
    body.insert("limit".into(), page.limit.into());
    body.insert("order".into(), order.into());
    body.insert("results".into(), results.into());
    if let Some((name, value)) = extra {
        body.insert(name.into(), value);
    }
    typed("application/hal+json", Value::Object(body).to_string())
}

// ---------------------------------------------------------------------------------------------
// The streamed downloads of every deployed gateway.

/// Why a download stopped short (logged; the client sees a truncated transfer).
#[derive(Debug, thiserror::Error)]
enum DownloadError {
    #[error("reading the store failed")]
    Store(#[from] StoreError),
    #[error("writing the CSV failed")]
    Csv(#[from] enrollment_csv::Error),
}

/// How one download renders the gateways: the bytes of each store page (`first` for the first
/// page, which is rendered even when empty), and those after the last one.
struct Format {
    /// Names the download in logs.
    what: &'static str,
    page: fn(&[IdentityRecord], bool) -> Result<Vec<u8>, DownloadError>,
    tail: &'static str,
    content_type: &'static str,
    disposition: &'static str,
}

/// Streams a download page by page, never held in memory as a whole: `page(after)` reads and
/// renders the page after the key `after` (`None`: the first page) and gives the key of the next
/// one (`None`: it was the last). A failure ends the body short, logged naming the download `what`.
fn paged_download<K, F, Fut>(
    what: &'static str,
    content_type: &'static str,
    disposition: &'static str,
    page: F,
) -> Response
where
    K: Send + 'static,
    F: Fn(Option<K>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Bytes, Option<K>), DownloadError>> + Send + 'static,
{
    // The cursor: `Some(after)` while a page is to come, `None` once the last one was sent.
    let stream = futures_util::stream::unfold(Some(None), move |cursor: Option<Option<K>>| {
        let next_page = cursor.map(&page);
        async move {
            match next_page?.await {
                Ok((chunk, next)) => Some((Ok(chunk), next.map(Some))),
                Err(e) => {
                    // The head is already sent: abort the body so the client sees a truncated
                    // transfer instead of a silently short file.
                    tracing::error!(error = %e, download = what, "download failed");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    attachment(content_type, disposition, Body::from_stream(stream))
}

/// Streams every deployed gateway, oldest first, in `format` (keyset paging on the id).
fn download(state: &AppState, format: &'static Format) -> Response {
    let provisioner = state.provisioner.clone();
    paged_download(
        format.what,
        format.content_type,
        format.disposition,
        move |after: Option<i64>| {
            let provisioner = provisioner.clone();
            async move {
                let records = provisioner
                    .store()
                    .list_deployed(DOWNLOAD_PAGE, SortOrder::Asc, after)
                    .await?;
                let mut chunk = (format.page)(&records, after.is_none())?;
                let next = match records.last() {
                    Some(last) if records.len() == DOWNLOAD_PAGE as usize => Some(last.id),
                    _ => {
                        chunk.extend_from_slice(format.tail.as_bytes());
                        None
                    }
                };
                Ok((Bytes::from(chunk), next))
            }
        },
    )
}

/// A gateway's cell in the enrollment-ID CSV.
fn csv_cell(r: &IdentityRecord, col: Column) -> Cow<'_, str> {
    match col {
        Column::EnrollmentId => Cow::Borrowed(&r.enrollment_id),
        Column::SerialNumber => Cow::Borrowed(&r.serial_number),
        Column::GatewayServicesAddress => Cow::Borrowed(&r.gateway_services_address),
        Column::ApiAddress => Cow::Borrowed(&r.api_address),
        Column::HardwareVersion => Cow::Borrowed(&r.hardware_version),
        Column::RadioConfig => Cow::Borrowed(&r.radio_config),
        Column::LedConfig => Cow::Borrowed(&r.led_config),
        Column::Category => Cow::Borrowed(&r.category),
        Column::Deployed => Cow::Borrowed(if r.deployed { "true" } else { "false" }),
        Column::CreatedAt => Cow::Owned(r.created_at_ms.to_string()),
    }
}

/// The enrollment-ID CSV ([`pep_ca::enrollment_csv`]): the header, then one line per gateway.
static CSV: Format = Format {
    what: "CSV export",
    page: |records, first| {
        let mut out = enrollment_csv::Writer::new(Vec::with_capacity(records.len() * 256 + 256));
        if first {
            out.header()?;
        }
        for r in records {
            out.row(Column::ALL.map(|col| csv_cell(r, col)))?;
        }
        Ok(out.into_inner()?)
    },
    tail: "",
    content_type: "text/csv; charset=utf-8; header=present",
    disposition: "attachment; filename=\"enrollment_ids.csv\"",
};

/// The JSON inventory: one array of the entries of `/v3/enrollment-ids`, one per line.
static INVENTORY: Format = Format {
    what: "inventory",
    page: |records, first| {
        let mut chunk = String::with_capacity(records.len() * 400 + 4);
        if first {
            chunk.push('[');
        }
        for (i, r) in records.iter().enumerate() {
            if !first || i > 0 {
                chunk.push(',');
            }
            chunk.push('\n');
            chunk.push_str(&r.entry().to_string());
        }
        Ok(chunk.into_bytes())
    },
    tail: "\n]\n",
    content_type: "application/json",
    disposition: "attachment; filename=\"inventory.json\"",
};

/// `GET /v3/enrollment-ids.csv[?state=deployed|revoked]`: every deployed gateway, oldest first,
/// as the bulk-upload CSV; or every revoked identity as the bulk-delete CSV (same format).
#[utoipa::path(
    get,
    path = "/v3/enrollment-ids.csv",
    tag = "read",
    operation_id = "exportEnrollmentIdsCsv",
    summary = "Every deployed gateway as the bulk-upload CSV (state=revoked: the bulk-delete CSV)",
    description = super::openapi::CSV_DESCRIPTION,
    params(super::openapi::CsvStateQuery),
    responses(
        (status = 200, description = "The CSV file.", body = String, content_type = "text/csv"),
        super::openapi::CallerErrors,
    ),
)]
pub(super) async fn enrollment_ids_csv(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    match params.get("state")? {
        None | Some("deployed") => Ok(download(&state, &CSV)),
        Some("revoked") => Ok(download_revoked(&state)),
        Some(_) => Err(ApiError::bad_param("state", "must be deployed or revoked")),
    }
}

/// Streams every revoked identity (current and past), in revocation order, as the enrollment-ID
/// CSV (`deployed` false): the file of the cloud's bulk delete, which frees their claims.
fn download_revoked(state: &AppState) -> Response {
    let provisioner = state.provisioner.clone();
    paged_download(
        "revoked CSV export",
        CSV.content_type,
        "attachment; filename=\"revoked_enrollment_ids.csv\"",
        move |after: Option<(i64, String)>| {
            let provisioner = provisioner.clone();
            async move {
                let rows = provisioner
                    .store()
                    .list_revoked(DOWNLOAD_PAGE, after.as_ref().map(|(t, s)| (*t, s.as_str())))
                    .await?;
                let records: Vec<IdentityRecord> = rows.iter().map(|r| r.record.clone()).collect();
                let chunk = (CSV.page)(&records, after.is_none())?;
                let next = match rows.last() {
                    Some(last) if rows.len() == DOWNLOAD_PAGE as usize => {
                        Some((last.revoked_at, last.cert_serial.clone()))
                    }
                    _ => None,
                };
                Ok((Bytes::from(chunk), next))
            }
        },
    )
}

/// `GET /v3/inventory.json` (`read` role): every deployed gateway, oldest first, as one JSON array
/// of the entries of `/v3/enrollment-ids`.
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
        super::openapi::AuthErrors,
    ),
)]
pub(super) async fn inventory(State(state): State<AppState>) -> Response {
    download(&state, &INVENTORY)
}

// ---------------------------------------------------------------------------------------------
// The audit-trail search.

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
    /// `attempt`, `deployed`, `failed`, `conflict`, `interrupted`, `in_doubt`, `replay`,
    /// `resolved` or `refused` (a gateway address the network policy refused).
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
            event: floor::event_text(&e).to_owned(),
            message: floor::audit_message(&e),
            fcc_status_name: floor::status_name(e.fcc.status),
            serial: e.serial,
            gateway: e.gateway,
            requester: e.requester,
            fcc_status: e.fcc.status,
            detail: e.detail,
            duration_ms: e.duration_ms,
        }
    }
}

/// A validated serial prefix: a non-empty prefix of a valid serial is itself a valid serial.
pub(super) fn parse_prefix(name: &str, value: &str) -> Result<String, ApiError> {
    pep_ca::EndpointName::from_str(value)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| ApiError::bad_param(name, e))
}

/// The audit rows of every serial starting with `prefix`, newest first, at most `limit`.
pub(super) async fn search(
    state: &AppState,
    prefix: &str,
    limit: u32,
) -> Result<Vec<AuditRow>, ApiError> {
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
        super::openapi::CallerErrors,
    ),
)]
pub(super) async fn audit(
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

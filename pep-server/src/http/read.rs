//! Read endpoints: one gateway's enrollment ID or verification key, the paginated HAL listing, and
//! the streamed CSV export for the cloud's bulk first-to-claim upload.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::query::QueryParams;
use crate::provision::Provisioner;
use crate::store::{IdentityRecord, SortOrder};

/// Page size of the listing when `limit` is absent (as the old server).
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page of the listing.
pub const MAX_LIMIT: u32 = 1000;
/// Rows fetched from the store per step of the CSV export.
const CSV_PAGE: u32 = 1000;

/// The CSV header, as the old CLI wrote it (the cloud ignores the first line).
pub const CSV_HEADER: &str = "\"enrollmentID\",\"serialNumber\",\"gatewayServicesAddress\",\"apiAddress\",\"hardwareVersion\",\"radioConfig\",\"ledConfig\",\"category\",\"deployed\",\"createdAt\"";
/// Line ending of the CSV export: CRLF, as RFC 4180 specifies.
pub const CSV_EOL: &str = "\r\n";

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

fn text_plain(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
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
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
    ),
)]
pub async fn enrollment_id(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    let serial = serial_param(&params)?;
    match state.provisioner.store().enrollment_id(&serial).await {
        Ok(Some(id)) => Ok(text_plain(id.to_string())),
        Ok(None) => Err(ApiError::not_found(format!(
            "no deployed gateway has serial number `{serial}`"
        ))
        .with("serialNumber", serial)),
        Err(e) => Err(ApiError::internal("reading the store failed", &e)),
    }
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
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
    ),
)]
pub async fn verification_key(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    let serial = serial_param(&params)?;
    match state.provisioner.store().verification_key(&serial).await {
        Ok(Some(key)) => Ok(text_plain(key)),
        Ok(None) => Err(ApiError::not_found(format!(
            "no deployed gateway with serial number `{serial}` has a verification key"
        ))
        .with("serialNumber", serial)),
        Err(e) => Err(ApiError::internal("reading the store failed", &e)),
    }
}

/// The listing's paging parameters.
struct Page {
    limit: u32,
    order: SortOrder,
    last: Option<i64>,
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

pub(super) fn record_json(r: &IdentityRecord) -> Value {
    json!({
        "_id": r.id.to_string(),
        "serialNumber": r.serial_number,
        "deviceID": r.device_id,
        "deployed": r.deployed,
        "hardwareVersion": r.hardware_version,
        "radioConfig": r.radio_config,
        "ledConfig": r.led_config,
        "category": r.category,
        "cloudAddress": r.cloud_address,
        "apiAddress": r.api_address,
        "gatewayServicesAddress": r.gateway_services_address,
        "enrollmentID": r.enrollment_id,
        "createdAt": r.created_at_ms,
    })
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
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
    ),
)]
pub async fn enrollment_ids(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    let page = page_params(&params)?;
    let records = state
        .provisioner
        .store()
        .list_deployed(page.limit, page.order, page.last)
        .await
        .map_err(|e| ApiError::internal("reading the store failed", &e))?;
    let order = order_name(page.order);
    let href = |last: Option<i64>| {
        let mut h = format!("{}?limit={}&order={order}", uri.path(), page.limit);
        if let Some(last) = last {
            let _ = write!(h, "&last={last}");
        }
        h
    };
    let mut links = serde_json::Map::new();
    links.insert("self".into(), json!({ "href": href(page.last) }));
    if let Some(last) = records.last() {
        links.insert("next".into(), json!({ "href": href(Some(last.id)) }));
    }
    let body = json!({
        "_links": links,
        "total_count": records.len(),
        "limit": page.limit,
        "order": order,
        "results": records.iter().map(record_json).collect::<Vec<_>>(),
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/hal+json"),
        )],
        body.to_string(),
    )
        .into_response())
}

/// One CSV field, always quoted, `"` doubled (RFC 4180).
fn csv_field(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// One CSV row (with its line ending) for `r`.
pub fn csv_row(r: &IdentityRecord) -> String {
    let mut line = String::with_capacity(256);
    let created = r.created_at_ms.to_string();
    let fields: [&str; 10] = [
        r.enrollment_id.as_str(),
        r.serial_number.as_str(),
        r.gateway_services_address.as_str(),
        r.api_address.as_str(),
        r.hardware_version.as_str(),
        r.radio_config.as_str(),
        r.led_config.as_str(),
        r.category.as_str(),
        if r.deployed { "true" } else { "false" },
        created.as_str(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push_str(CSV_EOL);
    line
}

/// Where the CSV stream is.
enum CsvCursor {
    Header,
    After(Option<i64>),
    Done,
}

/// `GET /v3/enrollment-ids.csv`: every deployed gateway, oldest first, as the bulk-upload CSV.
/// Streamed page by page (keyset paging on the id), never held in memory as a whole.
#[utoipa::path(
    get,
    path = "/v3/enrollment-ids.csv",
    tag = "read",
    operation_id = "exportEnrollmentIdsCsv",
    summary = "Every deployed gateway as the bulk-upload CSV",
    description = super::openapi::CSV_DESCRIPTION,
    responses(
        (status = 200, description = "The CSV file.", body = String, content_type = "text/csv"),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
    ),
)]
pub async fn enrollment_ids_csv(State(state): State<AppState>) -> Response {
    let provisioner: Arc<Provisioner> = state.provisioner.clone();
    let stream = futures_util::stream::unfold(CsvCursor::Header, move |cursor| {
        let provisioner = provisioner.clone();
        async move {
            match cursor {
                CsvCursor::Header => {
                    let chunk = Bytes::from(format!("{CSV_HEADER}{CSV_EOL}"));
                    Some((Ok(chunk), CsvCursor::After(None)))
                }
                CsvCursor::After(after) => {
                    let page = provisioner
                        .store()
                        .list_deployed(CSV_PAGE, SortOrder::Asc, after)
                        .await;
                    match page {
                        Ok(records) if records.is_empty() => None,
                        Ok(records) => {
                            let next = records.last().map(|r| r.id);
                            let mut chunk = String::with_capacity(records.len() * 256);
                            for r in &records {
                                chunk.push_str(&csv_row(r));
                            }
                            let cursor = if records.len() < CSV_PAGE as usize {
                                CsvCursor::Done
                            } else {
                                CsvCursor::After(next)
                            };
                            Some((Ok(Bytes::from(chunk)), cursor))
                        }
                        Err(e) => {
                            // The head is already sent: abort the body so the client sees a
                            // truncated transfer instead of a silently short file.
                            tracing::error!(error = %e, "CSV export: reading the store failed");
                            Some((
                                Err(std::io::Error::other("reading the store failed")),
                                CsvCursor::Done,
                            ))
                        }
                    }
                }
                CsvCursor::Done => None,
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"enrollment_ids.csv\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

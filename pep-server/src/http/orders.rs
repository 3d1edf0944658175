//! Work orders (issue #17): `POST /v3/orders` (JSON), `POST /v3/orders/{orderId}/serials`
//! (`text/csv`, streamed into the store), `GET /v3/orders`, `GET /v3/orders/{orderId}` and
//! `POST /v3/orders/{orderId}/close`. Writing needs the `plan` role, reading the `read` role.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Serialize;

use super::error::ApiError;
use super::{AppState, Principal};
use crate::orders::{
    MAX_CSV_LINE, MAX_CSV_SERIALS, NewOrder, OrderId, OrderRequest, OrderState, SerialRange,
    csv_serial,
};
use crate::store::Store;
use crate::store::orders::{CloseOutcome, OrderError, OrderSummary, SERIAL_BATCH, UploadId};

/// Largest JSON body of `POST /v3/orders` (up to [`crate::orders::MAX_JSON_SERIALS`] serials).
pub const MAX_ORDER_BODY_BYTES: usize = 1024 * 1024;

/// An order as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// The order's ID.
    order_id: String,
    /// `open` or `closed`.
    state: OrderState,
    /// The identity defaults of its serials (the fields it sets).
    #[schema(value_type = Object)]
    product: crate::orders::Product,
    /// Its ranges.
    ranges: Vec<SerialRange>,
    /// Serials expected: explicit (uploads included) and in ranges.
    expected: u64,
    /// Of its serials: deployed.
    deployed: u64,
    /// Whose latest attempt failed (retryable).
    failed: u64,
    /// Being provisioned now.
    in_progress: u64,
    /// In doubt (an operator resolves them).
    in_doubt: u64,
    /// Revoked (may be provisioned again).
    revoked: u64,
    /// Who created it.
    created_by: String,
    /// ms since the epoch.
    created_at: i64,
    /// ms since the epoch, once closed.
    closed_at: Option<i64>,
}

impl From<OrderSummary> for OrderView {
    fn from(o: OrderSummary) -> Self {
        OrderView {
            order_id: o.order_id.to_string(),
            state: o.state,
            product: o.product,
            ranges: o.ranges,
            expected: o.expected,
            deployed: o.deployed,
            failed: o.failed,
            in_progress: o.in_progress,
            in_doubt: o.in_doubt,
            revoked: o.revoked,
            created_by: o.created_by,
            created_at: o.created_at_ms,
            closed_at: o.closed_at_ms,
        }
    }
}

/// `GET /v3/orders`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderList {
    /// The newest orders first (at most 1000).
    orders: Vec<OrderView>,
}

/// An [`OrderError`] as an answer; `csv` when the serials came from a CSV upload (a held serial
/// is then a bad line: 400).
fn order_error(e: OrderError, csv: bool) -> ApiError {
    let message = e.to_string();
    match e {
        OrderError::Exists(id) | OrderError::Closed(id) => {
            ApiError::new(StatusCode::CONFLICT, message).with("orderId", id.to_string())
        }
        OrderError::Unknown(id) => ApiError::not_found(message).with("orderId", id.to_string()),
        OrderError::SerialTaken {
            at, line, serial, ..
        } => {
            let e = if csv {
                ApiError::bad_request(format!("{message}; nothing of the upload was stored"))
                    .with("line", line)
            } else {
                ApiError::new(StatusCode::CONFLICT, message)
            };
            e.with("at", at).with("serialNumber", serial)
        }
        OrderError::RangeOverlap { index, .. } => {
            ApiError::new(StatusCode::CONFLICT, message).with("at", format!("ranges[{index}]"))
        }
        OrderError::Store(e) => ApiError::internal("writing the work order failed", &e),
    }
}

fn order_id(text: String) -> Result<OrderId, ApiError> {
    OrderId::new(text).map_err(|e| ApiError::bad_param("orderId", e.reason))
}

fn who(principal: Option<axum::Extension<Principal>>) -> String {
    principal.map_or_else(|| "anonymous".to_owned(), |p| p.0.0.clone())
}

async fn summary(store: &Store, id: &OrderId) -> Result<OrderView, ApiError> {
    store
        .order(id)
        .await
        .map_err(|e| ApiError::internal("reading the work order failed", &e))?
        .map(OrderView::from)
        .ok_or_else(|| {
            ApiError::not_found(format!("no work order {id}")).with("orderId", id.to_string())
        })
}

/// `POST /v3/orders`: a new work order.
#[utoipa::path(
    post,
    path = "/v3/orders",
    tag = "orders",
    operation_id = "createOrder",
    summary = "Create a work order of expected serials",
    description = "The body: {\"orderId\": \"WO-2612-01\", \"product\": {\"hardwareVersion\", \"radioConfig\", \"ledConfig\", \"category\", \"apiAddress\", \"gatewayServicesAddress\"}, \"serials\": [...], \"ranges\": [{\"prefix\": \"GW-2612-\", \"from\": 1, \"to\": 50000, \"width\": 6}]}. The product fields are the identity defaults of the order's serials (a request's own fields win; [defaults] fills the rest). Every serial, range and field is checked (400 naming it); all of the order is stored, or nothing. At most 10,000 serials in JSON: upload more as text/csv to POST /v3/orders/{orderId}/serials. Needs the plan role.",
    request_body = OrderRequest,
    responses(
        (status = 201, description = "Created; the order with its counts.", body = OrderView),
        super::openapi::CallerErrors,
        (status = 409, description = "The order ID exists, a serial is expected by another order, or a range overlaps an open order's range.", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than 1 MiB.", body = super::openapi::ErrorBody),
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let request: OrderRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid order: {e}")))?;
    let order =
        NewOrder::from_request(request).map_err(|e| ApiError::bad_param(&e.field, e.reason))?;
    let store = state.provisioner.store();
    store
        .create_order(&order, &who(principal))
        .await
        .map_err(|e| order_error(e, false))?;
    state.provisioner.orders_changed();
    tracing::info!(order = %order.order_id, serials = order.serials.len(),
        ranges = order.ranges.len(), "work order created");
    let view = summary(store, &order.order_id).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `POST /v3/orders/{orderId}/serials`: a CSV upload of explicit serials.
#[utoipa::path(
    post,
    path = "/v3/orders/{orderId}/serials",
    tag = "orders",
    operation_id = "uploadOrderSerials",
    summary = "Upload the serials of a work order (text/csv, up to 1,000,000)",
    description = "One serial per line in the first column (more columns are ignored; an optional first line `serial` or `serialNumber` is a header; empty lines are skipped; CRLF or LF). The body is streamed into the store in batches, never held whole. All or nothing: a bad line is a 400 naming its line number, and none of the upload counts. Several uploads to one open order add up. Needs the plan role.",
    params(("orderId" = String, Path, description = "The work order.")),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, description = "Stored; the order with its counts and `uploaded`, the serials of this upload.", body = OrderView),
        (status = 400, description = "A bad line (named by number), or no serial at all.", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
        (status = 404, response = super::openapi::NotFound),
        (status = 409, description = "The order is closed.", body = super::openapi::ErrorBody),
        (status = 413, description = "More than 1,000,000 serials.", body = super::openapi::ErrorBody),
        (status = 415, description = "The body is not text/csv.", body = super::openapi::ErrorBody),
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(super) async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim().to_owned();
    if essence != "text/csv" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body must be text/csv, not `{essence}`"),
        ));
    }
    let order = order_id(id)?;
    let store = state.provisioner.store().clone();
    // An upload its server abandoned (stopped mid-way) is older than two request deadlines.
    let deadline_ms = i64::try_from(state.limits.request_deadline.as_millis()).unwrap_or(i64::MAX);
    let stale_before = crate::store::now_ms().saturating_sub(deadline_ms.saturating_mul(2));
    let upload = store
        .begin_upload(&order, stale_before)
        .await
        .map_err(|e| order_error(e, true))?;
    // Its own task: if the request is dropped (deadline, disconnect), the upload still ends
    // either stored whole or deleted.
    let task = {
        let (store, order) = (store.clone(), order.clone());
        tokio::spawn(async move {
            let result = load(&store, &order, upload, body).await;
            match result {
                Ok(n) => Ok(n),
                Err(e) => {
                    if let Err(abort) = store.abort_upload(upload).await {
                        tracing::error!(error = %abort, order = %order, "deleting a failed upload failed");
                    }
                    Err(e)
                }
            }
        })
    };
    let uploaded = task
        .await
        .map_err(|e| ApiError::internal("the upload task failed", &e))??;
    tracing::info!(order = %order, serials = uploaded, "work order serials uploaded");
    let view = summary(&store, &order).await?;
    let mut json = serde_json::to_value(view)
        .map_err(|e| ApiError::internal("encoding the work order failed", &e))?;
    if let Some(map) = json.as_object_mut() {
        map.insert("uploaded".to_owned(), uploaded.into());
    }
    Ok(Json(json).into_response())
}

/// The lines of one upload read so far, and the batch being filled.
struct Lines {
    /// Lines read.
    line: u64,
    /// Serials read.
    count: u64,
    /// `(line, serial)` not yet written.
    batch: Vec<(i64, pep_ca::EndpointName)>,
}

impl Lines {
    /// Takes one line (without its `\n`).
    fn add(&mut self, text: &[u8]) -> Result<(), ApiError> {
        self.line += 1;
        let line = self.line;
        let Some(serial) =
            csv_serial(text, line).map_err(|e| bad_line(&e.field, &e.reason, line))?
        else {
            return Ok(());
        };
        self.count += 1;
        if self.count > MAX_CSV_SERIALS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "line {line}: an upload holds at most {MAX_CSV_SERIALS} serials; nothing of \
                     the upload was stored"
                ),
            )
            .with("line", line));
        }
        self.batch
            .push((i64::try_from(line).unwrap_or(i64::MAX), serial));
        Ok(())
    }
}

/// Reads the CSV body line by line into batches of the store; the upload's serial count.
async fn load(
    store: &Store,
    order: &OrderId,
    upload: UploadId,
    body: Body,
) -> Result<u64, ApiError> {
    let mut stream = body.into_data_stream();
    // The part of a line that the next chunk continues (bounded by MAX_CSV_LINE).
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_CSV_LINE);
    let mut lines = Lines {
        line: 0,
        count: 0,
        batch: Vec::with_capacity(SERIAL_BATCH),
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!(
                "cannot read the request body: {e}; nothing of the upload was stored"
            ))
        })?;
        let mut rest: &[u8] = &chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if pending.is_empty() {
                lines.add(&rest[..end])?;
            } else {
                pending.extend_from_slice(&rest[..end]);
                let text = std::mem::take(&mut pending);
                lines.add(&text)?;
            }
            rest = &rest[end + 1..];
            if lines.batch.len() == SERIAL_BATCH {
                store
                    .upload_batch(order, upload, &lines.batch)
                    .await
                    .map_err(|e| order_error(e, true))?;
                lines.batch.clear();
            }
        }
        pending.extend_from_slice(rest);
        if pending.len() > MAX_CSV_LINE {
            let line = lines.line + 1;
            return Err(bad_line(
                &format!("line {line}"),
                &format!("is longer than {MAX_CSV_LINE} bytes"),
                line,
            ));
        }
    }
    if !pending.is_empty() {
        lines.add(&pending)?;
    }
    if !lines.batch.is_empty() {
        store
            .upload_batch(order, upload, &lines.batch)
            .await
            .map_err(|e| order_error(e, true))?;
    }
    if lines.count == 0 {
        return Err(ApiError::bad_request("the upload holds no serial"));
    }
    store
        .finish_upload(order, upload, lines.count)
        .await
        .map_err(|e| order_error(e, true))?;
    Ok(lines.count)
}

fn bad_line(at: &str, reason: &str, line: u64) -> ApiError {
    ApiError::bad_request(format!("{at} {reason}; nothing of the upload was stored"))
        .with("line", line)
}

/// `GET /v3/orders`: every order (newest first) with its counts.
#[utoipa::path(
    get,
    path = "/v3/orders",
    tag = "orders",
    operation_id = "listOrders",
    summary = "The work orders with their progress",
    description = "The newest 1000 orders, each with expected / deployed / failed / in-progress / in-doubt counts. Needs the read role.",
    responses(
        (status = 200, description = "The orders.", body = OrderList),
        super::openapi::AuthErrors,
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(super) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let orders = state
        .provisioner
        .store()
        .orders()
        .await
        .map_err(|e| ApiError::internal("reading the work orders failed", &e))?;
    Ok(Json(OrderList {
        orders: orders.into_iter().map(OrderView::from).collect(),
    })
    .into_response())
}

/// `GET /v3/orders/{orderId}`: one order with its counts.
#[utoipa::path(
    get,
    path = "/v3/orders/{orderId}",
    tag = "orders",
    operation_id = "getOrder",
    summary = "One work order with its progress",
    description = "Expected serials (explicit and in ranges) and how many of them are deployed, failed, in progress or in doubt. Needs the read role.",
    params(("orderId" = String, Path, description = "The work order.")),
    responses(
        (status = 200, description = "The order.", body = OrderView),
        super::openapi::CallerErrors,
        (status = 404, response = super::openapi::NotFound),
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = order_id(id)?;
    Ok(Json(summary(state.provisioner.store(), &id).await?).into_response())
}

/// `POST /v3/orders/{orderId}/close`: its serials are refused from now on.
#[utoipa::path(
    post,
    path = "/v3/orders/{orderId}/close",
    tag = "orders",
    operation_id = "closeOrder",
    summary = "Close a work order",
    description = "From now on its serials are refused (403), whatever [orders] required says; identities already deployed stay. Closing a closed order changes nothing (200). Needs the plan role.",
    params(("orderId" = String, Path, description = "The work order.")),
    responses(
        (status = 200, description = "Closed; the order.", body = OrderView),
        super::openapi::CallerErrors,
        (status = 404, response = super::openapi::NotFound),
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(super) async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Option<axum::Extension<Principal>>,
) -> Result<Response, ApiError> {
    let id = order_id(id)?;
    let store = state.provisioner.store();
    match store
        .close_order(&id)
        .await
        .map_err(|e| ApiError::internal("closing the work order failed", &e))?
    {
        CloseOutcome::Unknown => {
            return Err(
                ApiError::not_found(format!("no work order {id}")).with("orderId", id.to_string())
            );
        }
        CloseOutcome::Closed => {
            tracing::info!(target: "pep::audit", order = %id, by = %who(principal), "work order closed");
        }
        CloseOutcome::AlreadyClosed => {}
    }
    Ok(Json(summary(store, &id).await?).into_response())
}

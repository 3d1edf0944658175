//! `GET /v3/hooks/deliveries?state=`: the webhook outbox, one page of deliveries in one state
//! (issue #17). What a receiver got, is being retried, or was given up.

use axum::extract::{RawQuery, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::query::QueryParams;
use super::read::{page_params, required_state, rows_page};
use crate::store::{Delivery, DeliveryState};

/// The states the listing takes.
const STATES: &str = "pending, delivered, failing or dead";

fn delivery_json(d: &Delivery) -> Value {
    // The payload is the JSON the receiver gets (no secret in it); shown as the object it is.
    let payload: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    json!({
        "_id": d.id.to_string(),
        "eventId": d.event_id,
        "receiver": d.receiver,
        "serialNumber": d.serial,
        "event": d.event.as_str(),
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "nextAttemptAt": d.next_attempt_at,
        "lastError": d.last_error,
        "createdAt": d.created_at,
        "updatedAt": d.updated_at,
        "deliveredAt": d.delivered_at,
        "payload": payload,
    })
}

/// `GET /v3/hooks/deliveries?state=failing&limit=&order=&last=`.
#[utoipa::path(
    get,
    path = "/v3/hooks/deliveries",
    tag = "read",
    operation_id = "listHookDeliveries",
    summary = "Webhook deliveries in one state, one page (HAL JSON)",
    description = "The outbox of the event webhooks ([[hooks.events]]): one entry per event and receiver. state=pending (not tried yet), delivered (the receiver answered 2xx), failing (being retried with backoff; lastError says why) or dead (not delivered within the receiver's max_age_s; given up). Each entry carries the payload the receiver gets (never a secret). Keyset paging as /v3/enrollment-ids. Needs the read role.",
    params(super::openapi::DeliveryStateQuery, super::openapi::PageQuery),
    responses(
        (status = 200, description = "One page.", body = super::openapi::DeliveryPage, content_type = "application/hal+json"),
        super::openapi::CallerErrors,
    ),
)]
pub(super) async fn deliveries(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(raw.as_deref())?;
    let wanted: DeliveryState = required_state(&params, STATES)?;
    let page = page_params(&params)?;
    let rows = state
        .provisioner
        .store()
        .list_deliveries(wanted, page.limit, page.order, page.last)
        .await
        .map_err(|e| ApiError::store_read(&e))?;
    Ok(rows_page(
        &uri,
        Some(wanted.as_str()),
        &page,
        &rows,
        |r| r.id,
        delivery_json,
    ))
}

//! `GET /v3/hooks/deliveries?state=`: the webhook outbox, one page of deliveries in one state
//! (issue #17). What a receiver got, is being retried, or was given up.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::read::{ListingQuery, ListingRow};
use crate::store::{Delivery, DeliveryState};

/// The states the listing takes.
const STATES: &str = "pending, delivered, failing or dead";

impl ListingRow for Delivery {
    fn id(&self) -> i64 {
        self.id
    }

    fn entry(&self) -> Value {
        // The payload is the JSON the receiver gets (no secret in it); shown as the object it is.
        let payload: Value = serde_json::from_str(&self.payload).unwrap_or(Value::Null);
        json!({
            "_id": self.id.to_string(),
            "eventId": self.event_id,
            "receiver": self.receiver,
            "serialNumber": self.serial,
            "event": self.event.as_str(),
            "state": self.state.as_str(),
            "attempts": self.attempts,
            "nextAttemptAt": self.next_attempt_at,
            "lastError": self.last_error,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "deliveredAt": self.delivered_at,
            "payload": payload,
        })
    }
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
    query: ListingQuery,
) -> Result<Response, ApiError> {
    let wanted: DeliveryState = query.required_state(STATES)?;
    let store = state.provisioner.store();
    query
        .page(Some(wanted.as_str()), |page| {
            store.list_deliveries(wanted, page.limit, page.order, page.last)
        })
        .await
}

//! `GET /v3/claims?state=`: the cloud claim outbox (issue #18), one page at a time.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::read::{ListingQuery, ListingRow};
use crate::store::{ClaimRow, ClaimState};

/// The states `GET /v3/claims` lists.
const STATES: &str = "pending, retrying, claimed, already_claimed, rejected or deleted";

impl ListingRow for ClaimRow {
    fn id(&self) -> i64 {
        self.id
    }

    fn entry(&self) -> Value {
        json!({
            "_id": self.id.to_string(),
            "enrollmentID": self.enrollment_id,
            "serialNumber": self.serial,
            "action": self.action.as_str(),
            "state": self.state.as_str(),
            "attempts": self.attempts,
            "nextAttemptAt": self.next_attempt_at,
            "lastError": self.last_error,
            "claimedBy": self.claimed_by,
            "bulkTask": self.bulk_task,
            "cloudId": self.cloud_id,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

/// `GET /v3/claims?state=&limit=&order=&last=`: one page of the claim outbox.
#[utoipa::path(
    get,
    path = "/v3/claims",
    tag = "read",
    operation_id = "listClaims",
    summary = "Cloud claims of deployed gateways, one page (HAL JSON)",
    description = "The outbox of enrollment-ID claims (and claim deletions) in the device-management cloud ([cloud] mode each or bulk). state filters: pending, retrying, claimed, already_claimed (the cloud answered 409), rejected (400/401/403; re-queue with `pep-server cloud retry --state rejected`) or deleted; without it every row is listed. Keyset paging as /v3/enrollment-ids. Needs the read role.",
    params(super::openapi::ClaimStateQuery, super::openapi::PageQuery),
    responses(
        (status = 200, description = "One page.", body = super::openapi::ClaimPage, content_type = "application/hal+json"),
        super::openapi::CallerErrors,
    ),
)]
pub(super) async fn claims(
    State(state): State<AppState>,
    query: ListingQuery,
) -> Result<Response, ApiError> {
    let wanted: Option<ClaimState> = query.state(STATES)?;
    let store = state.provisioner.store();
    query
        .page(wanted.map(ClaimState::as_str), |page| {
            store.list_claims(wanted, page.limit, page.order, page.last)
        })
        .await
}
